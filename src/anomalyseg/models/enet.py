"""ENet (Paszke, Chaurasia, Kim, Culurciello, "ENet: A Deep Neural Network Architecture for Real-Time
Semantic Segmentation", arXiv:1606.02147, 2016), written here on top of :class:`SegmentationModel`.

Written here (no maintained library ships ENet): module names follow the widely used PyTorch-ENet codebase
(github.com/davidtvs/PyTorch-ENet, ``models/enet.py``: ``initial_block.main_branch``, ``downsample1_0``,
``regular1_1``, ``dilated2_2``, ``asymmetric2_3``, ``upsample4_0``, ``regular5_1``, ``transposed_conv``; PReLU
in the encoder, ReLU in the decoder) so that its checkpoints, and those of the many course projects built
on it, load strictly once the DataParallel ``module.`` prefix is stripped (see
:mod:`anomalyseg.checkpoints.foreign`).

Features: ``stage1`` (64 ch, stride 4), ``stage2`` (128, 8), ``encoder`` (128, 8: the end of stage 3, the
default) and ``decoder`` (16, 2: the input of the final transposed convolution).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from anomalyseg.constants import IMAGENET_MEAN, IMAGENET_STD
from anomalyseg.models.ported import PortedModel


def _act(prelu: bool) -> nn.Module:
    return nn.PReLU() if prelu else nn.ReLU()


def _conv_bn(cin: int, cout: int, kernel: Any, prelu: bool | None, **kw: Any) -> nn.Sequential:
    """Conv (no bias) + BatchNorm (+ activation unless ``prelu is None``): one ``nn.Sequential`` as upstream."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, bias=False, **kw), nn.BatchNorm2d(cout)]
    if prelu is not None:
        layers.append(_act(prelu))
    return nn.Sequential(*layers)


class InitialBlock(nn.Module):
    """3x3 stride-2 convolution (13 maps) beside a 3x3 max pool (the 3 input channels), concatenated."""

    def __init__(self, out_channels: int = 16, prelu: bool = True) -> None:
        super().__init__()
        self.main_branch = nn.Conv2d(3, out_channels - 3, 3, stride=2, padding=1, bias=False)
        self.ext_branch = nn.MaxPool2d(3, stride=2, padding=1)
        self.batch_norm = nn.BatchNorm2d(out_channels)
        self.out_activation = _act(prelu)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_activation(self.batch_norm(torch.cat([self.main_branch(x), self.ext_branch(x)], 1)))


class RegularBottleneck(nn.Module):
    """Residual bottleneck: 1x1 projection, 3x3 regular / dilated or 5x1+1x5 asymmetric conv, 1x1 expansion."""

    def __init__(self, channels: int, dilation: int = 1, asymmetric: bool = False, dropout: float = 0.0,
                 prelu: bool = True, ratio: int = 4) -> None:
        super().__init__()
        inner = channels // ratio
        self.ext_conv1 = _conv_bn(channels, inner, 1, prelu)
        if asymmetric:
            self.ext_conv2 = nn.Sequential(
                *_conv_bn(inner, inner, (5, 1), prelu, padding=(2, 0)),
                *_conv_bn(inner, inner, (1, 5), prelu, padding=(0, 2)),
            )
        else:
            self.ext_conv2 = _conv_bn(inner, inner, 3, prelu, padding=dilation, dilation=dilation)
        self.ext_conv3 = _conv_bn(inner, channels, 1, prelu)
        self.ext_regul = nn.Dropout2d(dropout)
        self.out_activation = _act(prelu)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ext = self.ext_regul(self.ext_conv3(self.ext_conv2(self.ext_conv1(x))))
        return self.out_activation(x + ext)


class DownsamplingBottleneck(nn.Module):
    """Stride-2 bottleneck; the main branch is a 2x2 max pool (indices kept for unpooling) padded with zero
    channels up to ``out_channels``."""

    def __init__(self, cin: int, cout: int, dropout: float = 0.0, prelu: bool = True, ratio: int = 4) -> None:
        super().__init__()
        inner = cin // ratio
        self.main_max1 = nn.MaxPool2d(2, stride=2, return_indices=True)
        self.ext_conv1 = _conv_bn(cin, inner, 2, prelu, stride=2)
        self.ext_conv2 = _conv_bn(inner, inner, 3, prelu, padding=1)
        self.ext_conv3 = _conv_bn(inner, cout, 1, prelu)
        self.ext_regul = nn.Dropout2d(dropout)
        self.out_activation = _act(prelu)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        main, indices = self.main_max1(x)
        ext = self.ext_regul(self.ext_conv3(self.ext_conv2(self.ext_conv1(x))))
        pad = ext.new_zeros(ext.shape[0], ext.shape[1] - main.shape[1], *ext.shape[2:])
        return self.out_activation(torch.cat([main, pad], 1) + ext), indices


class UpsamplingBottleneck(nn.Module):
    """Stride-2 upsampling: 1x1 conv + max-unpool (the encoder's indices) beside a 2x2 transposed conv."""

    def __init__(self, cin: int, cout: int, dropout: float = 0.0, prelu: bool = False, ratio: int = 4) -> None:
        super().__init__()
        inner = cin // ratio
        self.main_conv1 = _conv_bn(cin, cout, 1, None)
        self.main_unpool1 = nn.MaxUnpool2d(2)
        self.ext_conv1 = _conv_bn(cin, inner, 1, prelu)
        self.ext_tconv1 = nn.ConvTranspose2d(inner, inner, 2, stride=2, bias=False)
        self.ext_tconv1_bnorm = nn.BatchNorm2d(inner)
        self.ext_tconv1_activation = _act(prelu)
        self.ext_conv2 = _conv_bn(inner, cout, 1, None)
        self.ext_regul = nn.Dropout2d(dropout)
        self.out_activation = _act(prelu)

    def forward(self, x: torch.Tensor, indices: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
        main = self.main_unpool1(self.main_conv1(x), indices, output_size=list(size))
        ext = self.ext_tconv1_activation(self.ext_tconv1_bnorm(self.ext_tconv1(self.ext_conv1(x),
                                                                                output_size=list(size))))
        ext = self.ext_regul(self.ext_conv2(ext))
        return self.out_activation(main + ext)


#: Stages 2 and 3 (after stage 2's downsampling): (attribute name, dilation, asymmetric), as in the paper.
_STAGE2 = [("regular2_1", 1, False), ("dilated2_2", 2, False), ("asymmetric2_3", 1, True), ("dilated2_4", 4, False),
           ("regular2_5", 1, False), ("dilated2_6", 8, False), ("asymmetric2_7", 1, True), ("dilated2_8", 16, False)]
_STAGE3 = [("regular3_0", 1, False), ("dilated3_1", 2, False), ("asymmetric3_2", 1, True), ("dilated3_3", 4, False),
           ("regular3_4", 1, False), ("dilated3_5", 8, False), ("asymmetric3_6", 1, True), ("dilated3_7", 16, False)]


class ENet(PortedModel):
    """ENet with PyTorch-ENet's module names; ``input_mean`` / ``input_std`` are what the weights expect
    (``(0, 0, 0)`` / ``(1, 1, 1)`` = RGB in [0, 1]): callers still feed ImageNet-normalised images and the
    model converts them, like every other model of the project."""

    FEATURES: ClassVar[dict[str, tuple[int, int]]] = {
        "stage1": (4, 64), "stage2": (8, 128), "encoder": (8, 128), "decoder": (2, 16)}

    def __init__(self, name: str, num_classes: int, aux: bool, features: Sequence[str] | None,
                 input_mean: Sequence[float] = IMAGENET_MEAN, input_std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__(name, num_classes, aux, features, input_mean, input_std)
        self.initial_block = InitialBlock(16, prelu=True)
        self.downsample1_0 = DownsamplingBottleneck(16, 64, dropout=0.01)
        for i in range(1, 5):
            setattr(self, f"regular1_{i}", RegularBottleneck(64, dropout=0.01))
        self.downsample2_0 = DownsamplingBottleneck(64, 128, dropout=0.1)
        for attr, dilation, asym in _STAGE2 + _STAGE3:
            setattr(self, attr, RegularBottleneck(128, dilation=dilation, asymmetric=asym, dropout=0.1))
        self.upsample4_0 = UpsamplingBottleneck(128, 64, dropout=0.1)
        self.regular4_1 = RegularBottleneck(64, dropout=0.1, prelu=False)
        self.regular4_2 = RegularBottleneck(64, dropout=0.1, prelu=False)
        self.upsample5_0 = UpsamplingBottleneck(64, 16, dropout=0.1)
        self.regular5_1 = RegularBottleneck(16, dropout=0.1, prelu=False)
        self.transposed_conv = nn.ConvTranspose2d(16, num_classes, 3, stride=2, padding=1, bias=False)

    def _forward_net(
        self, x: torch.Tensor, want: frozenset[str]
    ) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]:
        feats: dict[str, torch.Tensor] = {}
        size0 = x.shape[-2:]
        x = self.initial_block(x)
        size1 = x.shape[-2:]
        x, idx1 = self.downsample1_0(x)
        for i in range(1, 5):
            x = getattr(self, f"regular1_{i}")(x)
        feats["stage1"] = x
        size2 = x.shape[-2:]
        x, idx2 = self.downsample2_0(x)
        for attr, _, _ in _STAGE2:
            x = getattr(self, attr)(x)
        feats["stage2"] = x
        for attr, _, _ in _STAGE3:
            x = getattr(self, attr)(x)
        feats["encoder"] = x
        x = self.regular4_2(self.regular4_1(self.upsample4_0(x, idx2, size2)))
        x = self.regular5_1(self.upsample5_0(x, idx1, size1))
        feats["decoder"] = x
        logits = self.transposed_conv(x, output_size=list(size0))
        return logits, None, {k: feats[k] for k in want}


#: The registry's factory (``models.registry``: ``enet``).
build_enet = ENet.build
