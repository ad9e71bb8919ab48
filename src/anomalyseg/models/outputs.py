"""The one record every model returns; scorers and metrics read it and never call the model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F


@dataclass
class SegOutput:
    """Output of one forward pass.

    Attributes:
        logits: ``(B, C, H, W)`` class logits at the input resolution (true logits, not probabilities).
        aux_logits: ``(B, C, H, W)`` logits of the auxiliary head, present in training mode only.
        features: named intermediate maps ``(B, D, h, w)`` (e.g. ``"layer3"``), present when requested.
        cache: quantities derived from the logits that several scorers share (softmax statistics), filled
            by the scorers of one pass (:func:`anomalyseg.scoring.softmax.softmax_stats`); a resized copy
            starts empty.
    """

    logits: torch.Tensor
    aux_logits: torch.Tensor | None = None
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    cache: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    def resized(self, size: tuple[int, int], mode: str = "bilinear") -> SegOutput:
        """Return a copy whose logits (and aux logits) are resampled to ``size`` = (H, W).

        Features keep their own resolution: feature-based scorers upsample their own maps.
        """
        if tuple(self.logits.shape[-2:]) == tuple(size):
            return self
        kw = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
        aux = None if self.aux_logits is None else F.interpolate(self.aux_logits, size=size, mode=mode, **kw)
        return SegOutput(F.interpolate(self.logits, size=size, mode=mode, **kw), aux, dict(self.features))
