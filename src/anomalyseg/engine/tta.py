"""Test-time augmentation for evaluation: multi-scale and horizontal-flip views whose logits are averaged.

The official StreetHazards baseline averaged 5 scales; ``TTA.parse("scales=0.5,0.75,1.0,1.25,1.5,flip")``
gives that plus flips. :func:`forward` is the one place the evaluation and fitting loops call the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from anomalyseg.errors import UserError
from anomalyseg.metrics.anomaly import check_finite
from anomalyseg.models.outputs import SegOutput


@dataclass(frozen=True)
class TTA:
    """Multi-scale / flip test-time augmentation: the logits of every (scale, flip) view are resized to the
    output size and AVERAGED (logits, not probabilities, so max-logit style scores keep their meaning).
    Features, when a scorer needs them, come from the unflipped scale-1.0 view."""

    scales: tuple[float, ...] = (1.0,)
    flip: bool = False

    def __post_init__(self) -> None:
        if not self.scales or any(not s > 0 for s in self.scales):
            raise UserError(f"TTA scales must be positive numbers, got {list(self.scales)}")
        if len(set(self.scales)) != len(self.scales):
            raise UserError(f"TTA scales repeat a value: {list(self.scales)}")

    @classmethod
    def parse(cls, text: str | None) -> TTA | None:
        """``"scales=0.5,0.75,1.0,1.25,1.5,flip"``, ``"flip"``, ``"scales=1.0"``; empty/``none`` -> None."""
        if text is None or text.strip().lower() in ("", "none", "off"):
            return None
        scales: list[float] = []
        flip, in_scales = False, False
        for raw in text.split(","):
            token = raw.strip().lower()
            if not token:
                continue
            if token == "flip":
                flip = True
                continue
            if token.startswith("scales="):
                token, in_scales = token[len("scales="):], True
            try:
                value = float(token)
            except ValueError:
                value = None
            if value is None or not in_scales:
                raise UserError(f"--tta: cannot read {raw.strip()!r}; "
                                "expected e.g. 'scales=0.5,0.75,1.0,1.25,1.5,flip'")
            scales.append(value)
        return cls(tuple(scales) or (1.0,), flip)

    @property
    def num_views(self) -> int:
        return len(self.scales) * (2 if self.flip else 1)

    def describe(self) -> dict[str, Any]:
        return {"scales": list(self.scales), "flip": self.flip, "views": self.num_views, "average": "logits"}


def check_logits(logits: torch.Tensor) -> None:
    """One line naming the model, not a scorer, when its output holds NaN or inf (broken weights or input):
    every command's forward pass (evaluate, fit-scorers, visualize) goes through :func:`forward`."""
    try:
        check_finite(logits, "the model's logits", "the checkpoint's weights or the input are broken (no scorer "
                     "or metric can use them)")
    except ValueError as exc:
        raise UserError(str(exc)) from None


def forward(
    model: nn.Module,
    images: torch.Tensor,
    out_size: tuple[int, int] | None = None,
    *,
    tta: TTA | None = None,
    return_features: bool = False,
    window: Any = None,
) -> SegOutput:
    """Model output with logits (float32) at ``out_size`` (default: the input size), TTA-averaged if given;
    with a :class:`~anomalyseg.engine.slide.Window`, every view is run in overlapping tiles, blended."""
    size = tuple(out_size) if out_size is not None else tuple(images.shape[-2:])
    if window is not None:
        if return_features:
            raise UserError("feature-based scorers (sml, heat, mahalanobis, ...) read whole-image features: use "
                            "--inference whole or resize with them, not slide")
        model = _Sliding(model, window)
    if tta is None or (tta.scales == (1.0,) and not tta.flip):
        out = model(images, return_features=return_features)
        check_logits(out.logits)
        return SegOutput(out.logits.float(), None, dict(out.features)).resized(size)
    if return_features and 1.0 not in tta.scales:
        raise UserError("TTA scales must include 1.0 when a scorer reads features (they come from that view)")
    H, W = images.shape[-2:]
    total: torch.Tensor | None = None
    features: dict[str, torch.Tensor] = {}
    for scale in tta.scales:
        x = images if scale == 1.0 else F.interpolate(
            images, size=(max(1, round(H * scale)), max(1, round(W * scale))), mode="bilinear", align_corners=False)
        views = [(x, False), (x.flip(-1), True)] if tta.flip else [(x, False)]
        for view, flipped in views:
            want = return_features and scale == 1.0 and not flipped
            out = model(view, return_features=want)
            if want:
                features = dict(out.features)
            logits = out.logits.float()
            check_logits(logits)
            if flipped:
                logits = logits.flip(-1)
            logits = SegOutput(logits).resized(size).logits
            total = logits if total is None else total.add_(logits)
    assert total is not None
    return SegOutput(total.div_(tta.num_views), None, features)




class _Sliding:
    """``model`` called tile by tile (:func:`anomalyseg.engine.slide.slide_logits`); logits only."""

    def __init__(self, model: nn.Module, window: Any) -> None:
        self.model, self.window = model, window

    def __call__(self, images: torch.Tensor, return_features: bool = False) -> SegOutput:
        from anomalyseg.engine.slide import slide_logits

        return SegOutput(slide_logits(self.model, images, self.window))
