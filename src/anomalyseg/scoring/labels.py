"""Fitting labels: the leakage guard every fit passes through and nearest resampling to feature maps.

Kept apart from :mod:`anomalyseg.scoring.base` so that code which only handles labels (the evaluation
loop, tests) need not pull in the scorer lifecycle.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from anomalyseg.constants import IGNORE_INDEX
from anomalyseg.errors import UserError


def check_fit_label(label: torch.Tensor, logits: torch.Tensor, scorer: str) -> int:
    """Validate a fitting label against the logits; return the number of classes C.

    Leakage guard: an id ``>= C`` that is not 255 (e.g. StreetHazards' anomaly id 13) means the labels come
    from a split with anomalies, which must never reach a scorer's fit.
    """
    if label.dim() != 3 or tuple(label.shape) != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(
            f"scorer '{scorer}': label must be (B, H, W) = {(logits.shape[0], *logits.shape[2:])} at logits "
            f"resolution, got {tuple(label.shape)}"
        )
    if label.is_floating_point():
        raise ValueError(f"scorer '{scorer}': label must hold integer class ids, got {label.dtype}")
    num_classes = int(logits.shape[1])
    bad = ((label < 0) | (label >= num_classes)) & (label != IGNORE_INDEX)
    if bool(bad.any()):
        ids = sorted(set(label[bad].unique().tolist()))
        raise UserError(
            f"scorer '{scorer}': fitting labels hold ids {ids} outside the {num_classes} known classes "
            f"and not {IGNORE_INDEX}: scorers fit on in-distribution data only (the validation split), "
            "never on anomaly labels (test split)"
        )
    return num_classes


def labels_at(label: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Labels resampled (nearest) to ``size`` = (h, w), e.g. a feature map's resolution."""
    if tuple(label.shape[-2:]) == tuple(size):
        return label
    return F.interpolate(label[:, None].float(), size=size, mode="nearest")[:, 0].long()
