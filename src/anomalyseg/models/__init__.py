"""Segmentation models behind one factory; every model returns a :class:`SegOutput`.

>>> model = build_model("deeplabv3plus_resnet18", num_classes=13)
>>> out = model(images, return_features=True)   # out.logits (B,13,H,W), out.features["layer3"]

Model names form a closed registry: the built-in models, those registered with
``register_model("my_net", factory)`` in your own code, and those an installed distribution declares under
the ``anomalyseg.models`` entry-point group. A config or checkpoint never names code to import.

The names below are imported on first use (:mod:`anomalyseg.lazy`): the models import torch, which
``anomalyseg models --help`` and the other commands' helps must not pay for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from anomalyseg.lazy import lazy_exports

if TYPE_CHECKING:
    from anomalyseg.constants import IMAGENET_MEAN, IMAGENET_STD
    from anomalyseg.models.base import SegmentationModel
    from anomalyseg.models.outputs import SegOutput
    from anomalyseg.models.registry import (
        ENTRY_POINT_GROUP,
        MODELS,
        ModelSpec,
        available_models,
        build_model,
        count_parameters,
        entry_point_models,
        model_spec,
        parameter_count,
        register_model,
        weights_offline,
    )
    from anomalyseg.models.state import LoadReport, load_model_state

_EXPORTS = {
    "IMAGENET_MEAN": "anomalyseg.constants",
    "IMAGENET_STD": "anomalyseg.constants",
    "SegmentationModel": ".base",
    "SegOutput": ".outputs",
    "ENTRY_POINT_GROUP": ".registry",
    "MODELS": ".registry",
    "ModelSpec": ".registry",
    "available_models": ".registry",
    "build_model": ".registry",
    "count_parameters": ".registry",
    "entry_point_models": ".registry",
    "model_spec": ".registry",
    "parameter_count": ".registry",
    "register_model": ".registry",
    "weights_offline": ".registry",
    "LoadReport": ".state",
    "load_model_state": ".state",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "ENTRY_POINT_GROUP",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MODELS",
    "LoadReport",
    "ModelSpec",
    "SegOutput",
    "SegmentationModel",
    "available_models",
    "build_model",
    "count_parameters",
    "entry_point_models",
    "load_model_state",
    "model_spec",
    "parameter_count",
    "register_model",
    "weights_offline",
]
