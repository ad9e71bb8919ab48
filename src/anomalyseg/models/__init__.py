"""Segmentation models behind one factory; every model returns a :class:`SegOutput`.

>>> model = build_model("deeplabv3plus_resnet18", num_classes=13)
>>> out = model(images, return_features=True)   # out.logits (B,13,H,W), out.features["layer3"]
"""

from anomalyseg.models.base import IMAGENET_MEAN, IMAGENET_STD, SegmentationModel
from anomalyseg.models.checkpoints import (
    InputContract,
    contract_from_checkpoint,
    import_checkpoint,
    parse_contract,
    resolve_contract,
)
from anomalyseg.models.outputs import SegOutput
from anomalyseg.models.registry import (
    MODELS,
    ModelSpec,
    available_models,
    build_model,
    count_parameters,
    model_spec,
    parameter_count,
    weights_offline,
)
from anomalyseg.models.state import LoadReport, load_model_state

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MODELS",
    "InputContract",
    "LoadReport",
    "ModelSpec",
    "SegOutput",
    "SegmentationModel",
    "available_models",
    "build_model",
    "contract_from_checkpoint",
    "count_parameters",
    "import_checkpoint",
    "load_model_state",
    "model_spec",
    "parameter_count",
    "parse_contract",
    "resolve_contract",
    "weights_offline",
]
