"""ERFNet (Romera, Alvarez, Bergasa, Arroyo, "ERFNet: Efficient Residual Factorized ConvNet for Real-Time
Semantic Segmentation", IEEE T-ITS 2017), written here on top of :class:`SegmentationModel`.

Written here (no maintained library ships ERFNet): module names follow the authors' code
(github.com/Eromera/erfnet_pytorch, ``train/erfnet.py``: ``encoder.initial_block``, ``encoder.layers.N``,
``encoder.output_conv``, ``decoder.layers.N``, ``decoder.output_conv``; BatchNorm eps 1e-3) so that its
checkpoints load strictly once the DataParallel ``module.`` prefix is stripped.

``encoder.output_conv`` is the 1x1 classifier of the authors' encoder-only training stage; it is part of
every upstream checkpoint. Here it doubles as the built-in auxiliary head (``aux=True``: stride-8 logits
from the encoder, upsampled), which is exactly how the authors trained the encoder.

Features: ``stage1`` (64 ch, stride 4), ``encoder`` (128, 8; the default) and ``decoder`` (16, 2: the input
of the final transposed convolution).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from anomalyseg.constants import IMAGENET_MEAN, IMAGENET_STD
from anomalyseg.models.ported import PortedModel

_EPS = 1e-3


class DownsamplerBlock(nn.Module):
    """3x3 stride-2 conv (``cout - cin`` maps) beside a 2x2 max pool, concatenated, BatchNorm, ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout - cin, 3, stride=2, padding=1, bias=True)
        self.pool = nn.MaxPool2d(2, stride=2)
        self.bn = nn.BatchNorm2d(cout, eps=_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(torch.cat([self.conv(x), self.pool(x)], 1)))


class NonBottleneck1D(nn.Module):
    """Residual block of two factorised 3x1 + 1x3 convolution pairs (the second pair dilated)."""

    def __init__(self, channels: int, dropout: float, dilation: int) -> None:
        super().__init__()
        d = dilation
        self.conv3x1_1 = nn.Conv2d(channels, channels, (3, 1), padding=(1, 0), bias=True)
        self.conv1x3_1 = nn.Conv2d(channels, channels, (1, 3), padding=(0, 1), bias=True)
        self.bn1 = nn.BatchNorm2d(channels, eps=_EPS)
        self.conv3x1_2 = nn.Conv2d(channels, channels, (3, 1), padding=(d, 0), dilation=(d, 1), bias=True)
        self.conv1x3_2 = nn.Conv2d(channels, channels, (1, 3), padding=(0, d), dilation=(1, d), bias=True)
        self.bn2 = nn.BatchNorm2d(channels, eps=_EPS)
        self.dropout = nn.Dropout2d(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1x3_1(F.relu(self.conv3x1_1(x)))))
        out = self.bn2(self.conv1x3_2(F.relu(self.conv3x1_2(out))))
        if self.dropout.p:
            out = self.dropout(out)
        return F.relu(out + x)


class UpsamplerBlock(nn.Module):
    """3x3 stride-2 transposed conv, BatchNorm, ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1, bias=True)
        self.bn = nn.BatchNorm2d(cout, eps=_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class Encoder(nn.Module):
    """Downsampler 16, downsampler 64 + 5 blocks, downsampler 128 + 2 x (dilations 2, 4, 8, 16)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.initial_block = DownsamplerBlock(3, 16)
        layers: list[nn.Module] = [DownsamplerBlock(16, 64)]
        layers += [NonBottleneck1D(64, 0.03, 1) for _ in range(5)]
        layers.append(DownsamplerBlock(64, 128))
        for _ in range(2):
            layers += [NonBottleneck1D(128, 0.3, d) for d in (2, 4, 8, 16)]
        self.layers = nn.ModuleList(layers)
        self.output_conv = nn.Conv2d(128, num_classes, 1, bias=True)

    #: index in ``layers`` after which the stride-4, 64-channel stage ends
    STAGE1_END = 5


class Decoder(nn.Module):
    """Upsampler 64 + 2 blocks, upsampler 16 + 2 blocks, 2x2 stride-2 transposed conv to the classes."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([
            UpsamplerBlock(128, 64), NonBottleneck1D(64, 0.0, 1), NonBottleneck1D(64, 0.0, 1),
            UpsamplerBlock(64, 16), NonBottleneck1D(16, 0.0, 1), NonBottleneck1D(16, 0.0, 1),
        ])
        self.output_conv = nn.ConvTranspose2d(16, num_classes, 2, stride=2, padding=0, output_padding=0, bias=True)


class ERFNet(PortedModel):
    """ERFNet with the authors' module names. ``input_mean`` / ``input_std``: what the weights expect (the
    authors train on RGB in [0, 1]: mean 0, std 1); callers feed ImageNet-normalised images as always."""

    builtin_aux = True
    FEATURES: ClassVar[dict[str, tuple[int, int]]] = {"stage1": (4, 64), "encoder": (8, 128), "decoder": (2, 16)}

    def __init__(self, name: str, num_classes: int, aux: bool, features: Sequence[str] | None,
                 input_mean: Sequence[float] = IMAGENET_MEAN, input_std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__(name, num_classes, aux, features, input_mean, input_std)
        self.encoder = Encoder(num_classes)
        self.decoder = Decoder(num_classes)
        self._encoder_aux = bool(aux)

    @property
    def has_aux(self) -> bool:
        return self._encoder_aux

    def _forward_net(
        self, x: torch.Tensor, want: frozenset[str]
    ) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]:
        feats: dict[str, torch.Tensor] = {}
        x = self.encoder.initial_block(x)
        for i, layer in enumerate(self.encoder.layers):
            x = layer(x)
            if i == Encoder.STAGE1_END:
                feats["stage1"] = x
        feats["encoder"] = x
        aux = self.encoder.output_conv(x) if (self.training and self._encoder_aux) else None
        for layer in self.decoder.layers:
            x = layer(x)
        feats["decoder"] = x
        return self.decoder.output_conv(x), aux, {k: feats[k] for k in want}


#: The registry's factory (``models.registry``: ``erfnet``).
build_erfnet = ERFNet.build
