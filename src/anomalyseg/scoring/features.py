"""Scorers that read an intermediate feature map (``mahalanobis``, HEAT's feature term) and their helpers.

:class:`FeatureScorer` picks the feature map by name (default: the model's first), records which one it
fitted on so that a saved state scores the same map, and the helpers flatten feature pixels and bring a
low-resolution score map back to logits resolution.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from anomalyseg.errors import UserError
from anomalyseg.scoring.base import Scorer

if TYPE_CHECKING:
    from anomalyseg.models.outputs import SegOutput


def pick_feature(output: SegOutput, feature: str | None, scorer: str) -> tuple[str, torch.Tensor]:
    """The named feature map ``(B, D, h, w)`` of ``output`` (default: the first one)."""
    if not output.features:
        raise UserError(f"scorer '{scorer}' needs intermediate features: run the model with return_features=True")
    key = next(iter(output.features)) if feature is None else feature
    if key not in output.features:
        raise UserError(f"scorer '{scorer}': feature {key!r} not in the model output (has {sorted(output.features)})")
    value = output.features[key]
    if value.dim() != 4 or value.shape[0] != output.logits.shape[0]:
        raise ValueError(f"scorer '{scorer}': feature {key!r} must be (B, D, h, w), got {tuple(value.shape)}")
    return key, value


def flat_pixels(feature: torch.Tensor) -> torch.Tensor:
    """``(B, D, h, w)`` -> ``(B*h*w, D)`` rows in (b, y, x) order."""
    return feature.permute(0, 2, 3, 1).reshape(-1, feature.shape[1])


def upsample(score: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``(B, h, w)`` map resized bilinearly to ``size``."""
    if tuple(score.shape[-2:]) == tuple(size):
        return score
    return F.interpolate(score[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


class FeatureScorer(Scorer):
    """A scorer that reads one intermediate feature map and remembers which one it fitted on."""

    feature_used: str | None = None

    def _feature(self, output: SegOutput) -> torch.Tensor:
        """The requested feature (or the one fitted on, or the output's default), its name recorded on first use."""
        key, feat = pick_feature(output, self.params["feature"] or self.feature_used, self.name)
        if self.feature_used is None:
            self.feature_used = key
        return feat

    def _extra_state(self) -> dict[str, Any]:
        return {"feature_used": self.feature_used}

    def _load_extra(self, extra: dict[str, Any]) -> None:
        self.feature_used = extra.get("feature_used")

    def _merge_extra(self, other: Scorer) -> None:
        self.feature_used = self.feature_used or getattr(other, "feature_used", None)
