"""A tiny segmentation net returning SegOutput, registered as the model ``tiny`` through the
``anomalyseg.models`` entry point of the fake distribution in tests/plugins (tests/conftest.py puts it on the path).

Conv + BatchNorm + Dropout (so RNG and running stats matter for exact resume) and an auxiliary head.
``delay`` seconds of sleep per training forward make a subprocess run slow enough to be killed mid-epoch.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from anomalyseg.models.outputs import SegOutput


class TinySeg(nn.Module):
    def __init__(self, num_classes: int, aux: bool = True, width: int = 8, delay: float = 0.0, bn: bool = True,
                 dropout: float = 0.2) -> None:
        super().__init__()
        self.name = "tiny"
        self.num_classes = num_classes
        self.delay = delay
        norm = nn.BatchNorm2d if bn else nn.Identity
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), norm(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), norm(width), nn.ReLU(), nn.Dropout2d(dropout),
        )
        self.classifier = nn.Conv2d(width, num_classes, 1)
        self.aux_head = nn.Conv2d(width, num_classes, 1) if aux else None
        self.feature_names = ("body",)
        self.default_feature = "body"

    @property
    def has_aux(self) -> bool:
        return self.aux_head is not None

    def forward(self, images: torch.Tensor, return_features: bool = False) -> SegOutput:
        if self.delay and self.training:
            time.sleep(self.delay)
        feat = self.body(images)
        aux = self.aux_head(feat) if (self.training and self.aux_head is not None) else None
        return SegOutput(self.classifier(feat), aux, {"body": feat} if return_features else {})


def build(num_classes: int, pretrained: bool = False, aux: bool | None = None, width: int = 8,
          delay: float = 0.0, bn: bool = True, dropout: float = 0.2) -> TinySeg:
    return TinySeg(num_classes, aux=True if aux is None else aux, width=width, delay=delay, bn=bn, dropout=dropout)
