"""torchvision models: DeepLabV3 on ResNet-50/101 (with the FCN auxiliary head) and LR-ASPP MobileNetV3.

Module names and structure are exactly torchvision's (``backbone``, ``classifier``, ``aux_classifier``), so
state dicts of ``torchvision.models.segmentation.deeplabv3_resnet50(num_classes=...)`` load unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchvision.models import (
    MobileNet_V3_Large_Weights,
    ResNet50_Weights,
    ResNet101_Weights,
    resnet50,
    resnet101,
)
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation import lraspp_mobilenet_v3_large
from torchvision.models.segmentation.deeplabv3 import DeepLabHead
from torchvision.models.segmentation.fcn import FCNHead

from anomalyseg.models.base import SegmentationModel, check_options, check_output_stride
from anomalyseg.models.pretrained import torchvision_weights_error

_RESNETS = {
    "resnet50": (resnet50, ResNet50_Weights.IMAGENET1K_V1),
    "resnet101": (resnet101, ResNet101_Weights.IMAGENET1K_V1),
}
_LAYERS = ("layer1", "layer2", "layer3", "layer4")


class TorchvisionDeepLabV3(SegmentationModel):
    """DeepLabV3 (ASPP head) on a dilated ResNet, built as torchvision's ``deeplabv3_resnet*`` builders do.

    Output stride 8 (torchvision's and the seed's setting) or 16 (cheaper; same parameters).
    Features: ``layer1``..``layer4`` and ``decoder`` (the 256-channel map before the last 1x1 conv).
    """

    builtin_aux = True

    def __init__(
        self, name: str, backbone_name: str, num_classes: int, pretrained: bool, aux: bool,
        output_stride: int, features: tuple[str, ...] | None,
    ) -> None:
        make, weights = _RESNETS[backbone_name]
        try:
            resnet = make(
                weights=weights if pretrained else None,
                replace_stride_with_dilation=[False, output_stride == 8, True],
            )
        except Exception as exc:  # download / cache failures: one line for the user
            raise torchvision_weights_error(name, weights, exc) from exc
        strides = {"layer1": 4, "layer2": 8, "layer3": min(16, output_stride), "layer4": output_stride}
        channels = {"layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048, "decoder": 256}
        super().__init__(
            name=name, num_classes=num_classes, feature_strides={**strides, "decoder": output_stride},
            feature_channels=channels, default_feature="layer3", features=features, aux=aux,
        )
        self.backbone = IntermediateLayerGetter(resnet, return_layers={k: k for k in _LAYERS})
        self.classifier = DeepLabHead(2048, num_classes)
        self.aux_classifier = FCNHead(1024, num_classes) if aux else None

    def _forward_net(
        self, x: torch.Tensor, want: frozenset[str]
    ) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]:
        feats = dict(self.backbone(x))
        h = feats["layer4"]
        for module in list(self.classifier)[:-1]:
            h = module(h)
        feats["decoder"] = h
        logits = self.classifier[-1](h)
        aux = None
        if self.training and self.aux_classifier is not None:
            aux = self.aux_classifier(feats["layer3"])
        return logits, aux, {k: feats[k] for k in want}


class TorchvisionLRASPP(SegmentationModel):
    """LR-ASPP on MobileNetV3-Large (torchvision): small and fast, logits at stride 8.

    Features: ``low`` (stride 8, 40 ch) and ``high`` (stride 16, 960 ch, the default).
    """

    def __init__(
        self, name: str, num_classes: int, pretrained: bool, aux: bool, features: tuple[str, ...] | None
    ) -> None:
        weights = MobileNet_V3_Large_Weights.IMAGENET1K_V1
        try:
            net = lraspp_mobilenet_v3_large(
                weights=None, weights_backbone=weights if pretrained else None, num_classes=num_classes
            )
        except Exception as exc:
            raise torchvision_weights_error(name, weights, exc) from exc
        super().__init__(
            name=name, num_classes=num_classes, feature_strides={"low": 8, "high": 16},
            feature_channels={"low": 40, "high": 960}, default_feature="high", features=features, aux=aux,
        )
        self.backbone: nn.Module = net.backbone
        self.classifier: nn.Module = net.classifier

    def _forward_net(
        self, x: torch.Tensor, want: frozenset[str]
    ) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]:
        feats = self.backbone(x)
        return self.classifier(feats), None, {k: feats[k] for k in want}


def build_deeplabv3(backbone_name: str):
    """Factory for ``deeplabv3_<backbone_name>``; aux head on by default (loss weight 0.4 in the engine)."""

    def factory(
        name: str, num_classes: int, pretrained: bool, aux: bool | None, **options: Any
    ) -> SegmentationModel:
        check_options(name, options, ("output_stride", "features"))
        stride = check_output_stride(name, options.get("output_stride"), (8, 16), 8)
        return TorchvisionDeepLabV3(
            name, backbone_name, num_classes, pretrained, True if aux is None else bool(aux), stride,
            options.get("features"),
        )

    return factory


def build_lraspp(
    name: str, num_classes: int, pretrained: bool, aux: bool | None, **options: Any
) -> SegmentationModel:
    """Factory for ``lraspp_mobilenet_v3_large`` (output stride fixed at 16; aux head only on request)."""
    check_options(name, options, ("output_stride", "features"))
    check_output_stride(name, options.get("output_stride"), (16,), 16)
    return TorchvisionLRASPP(name, num_classes, pretrained, bool(aux), options.get("features"))
