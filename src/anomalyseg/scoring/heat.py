"""HEAT, the seed's "Hybrid Energy-Adaptive Thresholding", defined precisely and with every part switchable.

For logits z ``(B, C, H, W)`` and an intermediate feature map f ``(B, D, h, w)``
(``output.features[feature]``, default the first one, e.g. ``layer3``):

(a) energy term      ``e = -T * logsumexp(z / T)``                                      (temperature T = 1)
(b) normalisation    ``e~ = (e - mu_e) / sigma_e`` with mu_e, sigma_e the mean / std of e over the labelled
                     pixels of the in-distribution fitting data (``use_energy_norm``; off: ``e~ = e``).
(c) feature term     ``d = 1 - max_c <f^(x), p_c>``: cosine distance of the L2-normalised feature
                     f^ = f / ||f|| to the nearest class prototype p_c = normalise(mean of f^ over the fitting
                     pixels labelled c, labels resampled nearest to (h, w)); standardised
                     ``d~ = (d - mu_d) / sigma_d`` over the fitting pixels, then upsampled bilinearly to
                     (H, W) (``use_feature``).
(d) combination      ``s = (1 - w) * e~ + w * d~`` with ``w = feature_weight`` (0.5); ``s = e~`` without (c).
(e) smoothing        k x k mean filter of s (``smoothing`` = 3 as the seed; 0 or 1 = off; borders average
                     over the pixels inside the image).

Statistics (``norm_stats``):
- ``"exact"`` (default): running count / sum / sum of squares in float64: the exact mean and (population)
  std over all fitting pixels, independent of batch order and batch size, and merged exactly across
  shards and ranks by addition.
- ``"ema"``: the seed's exponential moving average over fitting batches, ``m <- a*m + (1-a)*m_batch``
  (same for the variance; the first batch initialises; ``ema_alpha`` a = 0.9). It weights the last ~10
  batches most and depends on their order; merging averages the shards' values weighted by their batch
  counts (an approximation). Kept to reproduce the seed, not the default for these reasons.

Fitting takes two passes when the feature term is on (prototypes first, then the statistics of d, which
need the final prototypes); one pass otherwise. With neither (b) nor (c) HEAT needs no fitting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F

from anomalyseg.constants import IGNORE_INDEX
from anomalyseg.scoring.base import mean_std, require
from anomalyseg.scoring.features import FeatureScorer, flat_pixels, upsample
from anomalyseg.scoring.labels import labels_at
from anomalyseg.scoring.posthoc import energy
from anomalyseg.scoring.spatial import box_smooth

if TYPE_CHECKING:
    from anomalyseg.models.outputs import SegOutput

STD_FLOOR = 1e-6


class HEAT(FeatureScorer):
    """Standardised energy + standardised prototype distance, box-smoothed; see the module docstring."""

    kind = "heat"
    abbreviations: ClassVar[dict[str, str]] = {
        "temperature": "T",
        "use_energy_norm": "enorm",
        "norm_stats": "",
        "ema_alpha": "a",
        "use_feature": "feat",
        "feature": "",
        "feature_weight": "w",
        "smoothing": "k",
    }

    def __init__(
        self,
        temperature: float = 1.0,
        use_energy_norm: bool = True,
        norm_stats: str = "exact",
        ema_alpha: float = 0.9,
        use_feature: bool = True,
        feature: str | None = None,
        feature_weight: float = 0.5,
        smoothing: int = 3,
        name: str | None = None,
    ) -> None:
        require(temperature > 0, f"heat: temperature must be > 0, got {temperature}")
        require(norm_stats in ("exact", "ema"), f"heat: norm_stats must be 'exact' or 'ema', got {norm_stats!r}")
        require(0 <= ema_alpha < 1, f"heat: ema_alpha must be in [0, 1), got {ema_alpha}")
        require(0 <= feature_weight <= 1, f"heat: feature_weight must be in [0, 1], got {feature_weight}")
        require(
            smoothing in (0, 1) or (smoothing > 1 and smoothing % 2 == 1),
            f"heat: smoothing must be 0/1 (off) or an odd kernel size, got {smoothing}",
        )
        super().__init__(
            name=name,
            temperature=float(temperature),
            use_energy_norm=bool(use_energy_norm),
            norm_stats=norm_stats,
            ema_alpha=float(ema_alpha),
            use_feature=bool(use_feature),
            feature=feature,
            feature_weight=float(feature_weight),
            smoothing=int(smoothing),
        )
        self.requires_fit = bool(use_energy_norm or use_feature)
        self.fit_passes = 2 if use_feature else 1
        self.needs_features = bool(use_feature)
        self.feature_used: str | None = None
        self.energy_stats: tuple[float, float] | None = None  #: (mu_e, sigma_e)
        self.distance_stats: tuple[float, float] | None = None  #: (mu_d, sigma_d)
        self.prototypes: torch.Tensor | None = None  #: unit class prototypes of the seen classes (C', D)

    def fit_config(self) -> dict[str, Any]:
        keys = ["temperature", "use_energy_norm", "norm_stats", "use_feature", "feature"]
        if self.params["norm_stats"] == "ema":
            keys.append("ema_alpha")
        return {k: self.params[k] for k in keys}

    # ---- terms ------------------------------------------------------------------------------------
    def _unit_features(self, output: SegOutput) -> torch.Tensor:
        feat = self._feature(output)
        return F.normalize(feat.float(), dim=1)

    def _distance(self, unit: torch.Tensor) -> torch.Tensor:
        """``1 - max_c cos(f, p_c)`` at feature resolution, ``(B, h, w)``."""
        assert self.prototypes is not None
        if self.prototypes.device != unit.device:  # moved once, not per batch
            self.prototypes = self.prototypes.to(unit.device)
        cos = torch.einsum("bdhw,cd->bchw", unit, self.prototypes)
        return 1 - cos.amax(1)

    # ---- fitting ----------------------------------------------------------------------------------
    def _update_stats(self, prefix: str, values: torch.Tensor) -> None:
        v = values.to(torch.float64)
        if v.numel() == 0:
            return
        if self.params["norm_stats"] == "exact":
            self._accumulate(f"{prefix}_count", torch.tensor(float(v.numel()), dtype=torch.float64, device=v.device))
            self._accumulate(f"{prefix}_sum", v.sum())
            self._accumulate(f"{prefix}_sumsq", (v * v).sum())
            return
        # EMA stored as batch-count-weighted values so that shards merge by addition
        states, a = self._current_states(), self.params["ema_alpha"]
        batch_mean, batch_var = v.mean(), v.var(unbiased=False)
        if f"{prefix}_batches" not in states:
            n = torch.zeros((), dtype=torch.float64, device=v.device)
            mean, var = batch_mean, batch_var
        else:
            n = states[f"{prefix}_batches"]
            mean = a * states[f"{prefix}_wmean"] / n + (1 - a) * batch_mean
            var = a * states[f"{prefix}_wvar"] / n + (1 - a) * batch_var
        states[f"{prefix}_batches"] = n + 1
        states[f"{prefix}_wmean"] = mean * (n + 1)
        states[f"{prefix}_wvar"] = var * (n + 1)

    def _read_stats(self, states: dict[str, torch.Tensor], prefix: str) -> tuple[float, float]:
        if f"{prefix}_count" not in states and f"{prefix}_batches" not in states:
            self._no_pixels()
        if self.params["norm_stats"] == "exact":
            mean, std = mean_std(states[f"{prefix}_count"], states[f"{prefix}_sum"], states[f"{prefix}_sumsq"])
        else:
            n = states[f"{prefix}_batches"]
            mean, std = states[f"{prefix}_wmean"] / n, (states[f"{prefix}_wvar"] / n).clamp_min(0).sqrt()
        return float(mean), max(float(std), STD_FLOOR)

    def _fit_batch(self, output: SegOutput, label: torch.Tensor, pass_index: int) -> None:
        if pass_index == 0:
            if self.params["use_energy_norm"]:
                e = energy(output.logits, self.params["temperature"])
                self._update_stats("energy", e[label != IGNORE_INDEX])
            if self.params["use_feature"]:
                unit = self._unit_features(output)
                y = labels_at(label, tuple(unit.shape[-2:])).reshape(-1)
                valid = y != IGNORE_INDEX
                f, y = flat_pixels(unit)[valid].to(torch.float64), y[valid]
                C = output.logits.shape[1]
                self._accumulate("proto_count", torch.bincount(y, minlength=C).to(torch.float64))
                sums = torch.zeros(C, f.shape[1], dtype=torch.float64, device=f.device)
                self._accumulate("proto_sum", sums.index_add_(0, y, f))
        else:
            unit = self._unit_features(output)
            y = labels_at(label, tuple(unit.shape[-2:]))
            self._update_stats("distance", self._distance(unit)[y != IGNORE_INDEX])

    def _finish_pass(self, pass_index: int) -> None:
        states = self._pass_state(pass_index)
        if pass_index == 0:
            if self.params["use_energy_norm"]:
                self.energy_stats = self._read_stats(states, "energy")
            if self.params["use_feature"]:
                seen = states["proto_count"] > 0
                if not bool(seen.any()):
                    self._no_pixels()
                self.prototypes = F.normalize(states["proto_sum"][seen], dim=1).float()
        else:
            self.distance_stats = self._read_stats(states, "distance")

    # ---- scoring ----------------------------------------------------------------------------------
    def _score(self, output: SegOutput) -> torch.Tensor:
        p = self.params
        score = energy(output.logits, p["temperature"])
        if p["use_energy_norm"]:
            assert self.energy_stats is not None
            mean, std = self.energy_stats
            score = (score - mean) / std
        if p["use_feature"]:
            assert self.distance_stats is not None
            mean, std = self.distance_stats
            d = (self._distance(self._unit_features(output)) - mean) / std
            w = p["feature_weight"]
            score = (1 - w) * score + w * upsample(d, tuple(score.shape[-2:]))
        return box_smooth(score, p["smoothing"])
