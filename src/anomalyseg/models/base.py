"""The one model interface every architecture implements: ``model(images) -> SegOutput``.

:class:`SegmentationModel` owns what is common to all families (input checks, padding to the size the
architecture needs, logits back at input resolution, the optional auxiliary head, feature selection);
a family subclass only implements :meth:`SegmentationModel._forward_net`. Subclasses keep the upstream
library's module names as attributes (``backbone``/``classifier`` for torchvision, ``encoder``/``decoder``/
``segmentation_head`` for smp, ``segformer``/``decode_head`` for transformers), so their state dicts are
the upstream state dicts: a checkpoint of a plain torchvision or smp model loads unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.segmentation.fcn import FCNHead

from anomalyseg.constants import IMAGENET_MEAN, IMAGENET_STD
from anomalyseg.errors import UserError
from anomalyseg.models.outputs import SegOutput

#: What callers must feed every model: RGB in [0, 1], normalised with these (the data presets' default).

#: State-dict prefixes of auxiliary heads (torchvision's own and the generic one added here).
AUX_PREFIXES: tuple[str, ...] = ("aux_classifier.", "aux_head.")


class SegmentationModel(nn.Module):
    """Base wrapper: ``forward(images, return_features=False) -> SegOutput``.

    Attributes:
        name: registry name (``"deeplabv3_resnet50"``).
        num_classes: number of output channels of ``logits``.
        has_aux: whether ``aux_logits`` is produced (training mode only).
        available_features: every feature name this architecture can return (option ``features``).
        feature_names: the names returned when ``return_features=True``, ``default_feature`` first
            (set with the ``features`` option; the default feature is always included).
        feature_strides / feature_channels: stride w.r.t. the input and channel count of each feature.
        default_feature: the mid-level map feature-based anomaly scorers use ("layer3" for ResNets).
        input_contract: how inputs must be prepared (mean/std, size handling); see :meth:`_make_contract`.
    """

    #: Set by subclasses with a built-in aux head (torchvision's ``aux_classifier``).
    builtin_aux: bool = False

    def __init__(
        self,
        *,
        name: str,
        num_classes: int,
        feature_strides: Mapping[str, int],
        feature_channels: Mapping[str, int],
        default_feature: str,
        features: Iterable[str] | None = None,
        size_divisor: int = 1,
        aux: bool = False,
        backbone_mean: tuple[float, ...] = IMAGENET_MEAN,
        backbone_std: tuple[float, ...] = IMAGENET_STD,
        pretrained_input_size: tuple[int, int] | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.num_classes = int(num_classes)
        self.feature_strides = dict(feature_strides)
        self.feature_channels = dict(feature_channels)
        self.available_features = tuple(self.feature_strides)
        self.default_feature = default_feature
        wanted = [default_feature, *(features or ())]
        unknown = [f for f in wanted if f not in self.feature_strides]
        if unknown:
            raise UserError(
                f"model {name!r} has no feature(s) {', '.join(map(repr, unknown))}; "
                f"available: {', '.join(self.available_features)}"
            )
        self.feature_names = tuple(dict.fromkeys(wanted))
        self.size_divisor = int(size_divisor)
        # A generic FCN head on the default feature when the architecture has no aux head of its own.
        self.aux_head: nn.Module | None = None
        if aux and not self.builtin_aux:
            self.aux_head = FCNHead(self.feature_channels[default_feature], self.num_classes)
        # Backbones pretrained with another normalisation get the ImageNet-normalised input converted here,
        # so every model takes the same input (one data pipeline for all).
        self._renorm = tuple(backbone_mean) != IMAGENET_MEAN or tuple(backbone_std) != IMAGENET_STD
        scale = torch.tensor(IMAGENET_STD) / torch.tensor(backbone_std)
        shift = (torch.tensor(IMAGENET_MEAN) - torch.tensor(backbone_mean)) / torch.tensor(backbone_std)
        self.register_buffer("_in_scale", scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_in_shift", shift.view(1, 3, 1, 1), persistent=False)
        self.input_contract: dict[str, Any] = {
            "color": "RGB",
            "value_range": [0.0, 1.0],
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            "backbone_mean": list(backbone_mean),
            "backbone_std": list(backbone_std),
            "renormalised_inside": self._renorm,
            "size_divisor": self.size_divisor,
            "any_size": True,
            "pretrained_input_size": list(pretrained_input_size) if pretrained_input_size else None,
        }

    @property
    def has_aux(self) -> bool:
        """Whether the model produces ``aux_logits`` in training mode."""
        return self.aux_head is not None or (self.builtin_aux and getattr(self, "aux_classifier", None) is not None)

    def _forward_net(
        self, x: torch.Tensor, want: frozenset[str]
    ) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]:
        """Family-specific forward on a padded input: (logits at any stride, built-in aux logits or None,
        the features named in ``want``)."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor, return_features: bool = False) -> SegOutput:
        """Segment ``images`` (B,3,H,W), ImageNet-normalised; logits come back at (H, W) for any H, W."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        height, width = images.shape[-2:]
        x = images
        if self._renorm:
            x = x * self._in_scale.to(x.dtype) + self._in_shift.to(x.dtype)
        pad_h = (-height) % self.size_divisor
        pad_w = (-width) % self.size_divisor
        if pad_h or pad_w:  # zeros after renormalisation = the backbone's mean colour
            x = F.pad(x, (0, pad_w, 0, pad_h))
        padded = x.shape[-2:]
        want_aux = self.training and self.aux_head is not None
        want = set(self.feature_names) if return_features else set()
        if want_aux:
            want.add(self.default_feature)
        logits, aux, feats = self._forward_net(x, frozenset(want))
        if want_aux:
            aux = self.aux_head(feats[self.default_feature])
        if not self.training:
            aux = None
        logits = _to_input_size(logits, padded, (height, width))
        aux = None if aux is None else _to_input_size(aux, padded, (height, width))
        out_feats: dict[str, torch.Tensor] = {}
        if return_features:
            for key in self.feature_names:
                out_feats[key] = _crop_feature(feats[key], padded, (height, width))
        return SegOutput(logits=logits, aux_logits=aux, features=out_feats)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, num_classes={self.num_classes}, has_aux={self.has_aux}"


def _to_input_size(logits: torch.Tensor, padded: torch.Size, size: tuple[int, int]) -> torch.Tensor:
    """Upsample logits to the padded input size if needed, then crop the padding away."""
    if tuple(logits.shape[-2:]) != tuple(padded):
        logits = F.interpolate(logits, size=padded, mode="bilinear", align_corners=False)
    return logits[..., : size[0], : size[1]]


def _crop_feature(feat: torch.Tensor, padded: torch.Size, size: tuple[int, int]) -> torch.Tensor:
    """Drop the feature cells that only see padding (the map keeps its own stride)."""
    h = math.ceil(size[0] * feat.shape[-2] / padded[0])
    w = math.ceil(size[1] * feat.shape[-1] / padded[1])
    return feat[..., :h, :w]


def check_options(name: str, options: Mapping[str, Any], allowed: Iterable[str]) -> None:
    """Reject options a model does not take, naming the ones it does."""
    allowed = tuple(allowed)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        hint = f"; it takes: {', '.join(allowed)}" if allowed else "; it takes none"
        raise UserError(f"model {name!r} does not take option(s) {', '.join(unknown)}{hint}")


def check_output_stride(name: str, output_stride: int | None, allowed: tuple[int, ...], default: int) -> int:
    """The output stride to build with, or a one-line error naming the supported ones."""
    if output_stride is None:
        return default
    if output_stride not in allowed:
        raise UserError(
            f"model {name!r} supports output_stride {' or '.join(map(str, allowed))}, got {output_stride!r}"
        )
    return int(output_stride)
