"""Standardized Max Logits (Jung et al., ICCV 2021), with the paper's optional post-processing.

Fit (in-distribution data, e.g. the validation split): for every class c, the mean and standard deviation of
the max logit over the pixels *predicted* as c (as the official ``calculate_statistics.py``; pixels labelled
255 are skipped), from running float64 sums (count, sum, sum of squares per class) that merge by addition.
The standard deviation is the unbiased one (``torch.var``, as the official code).

Score: ``-(max_c z_c - mean_k) / std_k`` with k = argmax_c z_c, then optionally SML's iterative boundary
suppression (paper: width 4, 4 iterations) and dilated Gaussian smoothing (paper: 7x7, sigma 1,
dilation 6) on the map; see :mod:`anomalyseg.scoring.spatial`. Both filters are averages, so applying them
to the negated map equals negating the paper's filtered in-distribution map.

``sml`` is the plain variant (the seed's); ``sml_full`` in the registry switches both filters on.
A class never predicted (or predicted once) during fitting falls back to the statistics over all pixels.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from anomalyseg.constants import IGNORE_INDEX
from anomalyseg.scoring.base import Scorer, known_classes_setting, mean_std, require
from anomalyseg.scoring.spatial import boundary_suppression, dilated_smoothing

if TYPE_CHECKING:
    from anomalyseg.models.outputs import SegOutput

log = logging.getLogger(__name__)

STD_FLOOR = 1e-6


class SML(Scorer):
    """Standardized max logit; higher = more anomalous."""

    kind = "sml"
    requires_fit = True
    abbreviations: ClassVar[dict[str, str]] = {
        "boundary_suppression": "bs",
        "boundary_width": "bw",
        "boundary_iterations": "bi",
        "dilated_smoothing": "ds",
        "smoothing_kernel": "dk",
        "smoothing_dilation": "dd",
        "smoothing_sigma": "dsig",
        "known_classes": "K",
    }

    def __init__(
        self,
        boundary_suppression: bool = False,
        boundary_width: int = 4,
        boundary_iterations: int = 4,
        dilated_smoothing: bool = False,
        smoothing_kernel: int = 7,
        smoothing_dilation: int = 6,
        smoothing_sigma: float = 1.0,
        known_classes: int | slice | Sequence[int] | None = None,
        name: str | None = None,
    ) -> None:
        require(boundary_width >= 0 and boundary_iterations >= 0, "sml: boundary width/iterations must be >= 0")
        require(
            boundary_iterations == 0 or boundary_width % boundary_iterations == 0,
            f"sml: boundary_width ({boundary_width}) must be a multiple of boundary_iterations ({boundary_iterations})",
        )
        require(smoothing_kernel % 2 == 1, f"sml: smoothing_kernel must be odd, got {smoothing_kernel}")
        require(smoothing_dilation >= 1 and smoothing_sigma > 0, "sml: smoothing dilation >= 1 and sigma > 0")
        super().__init__(
            name=name,
            boundary_suppression=bool(boundary_suppression),
            boundary_width=int(boundary_width),
            boundary_iterations=int(boundary_iterations),
            dilated_smoothing=bool(dilated_smoothing),
            smoothing_kernel=int(smoothing_kernel),
            smoothing_dilation=int(smoothing_dilation),
            smoothing_sigma=float(smoothing_sigma),
            known_classes=known_classes_setting(known_classes, self.kind),
        )
        self.means: torch.Tensor | None = None  #: per-class mean of the max logit (C,), float32
        self.stds: torch.Tensor | None = None  #: per-class standard deviation (C,), float32

    def fit_config(self) -> dict[str, Any]:
        # the statistics do not depend on the post-processing settings, only on the channels scored
        known = self.params["known_classes"]
        return {} if known is None else {"known_classes": known}

    def _fit_batch(self, output: SegOutput, label: torch.Tensor, pass_index: int) -> None:
        logits = self._logits(output)
        max_logit, pred = logits.float().max(1)
        valid = label != IGNORE_INDEX
        m = max_logit[valid].to(torch.float64)
        k = pred[valid]
        C = logits.shape[1]
        zeros = torch.zeros(C, dtype=torch.float64, device=m.device)
        self._accumulate("count", torch.bincount(k, minlength=C).to(torch.float64))
        self._accumulate("sum", zeros.scatter_add(0, k, m))
        self._accumulate("sumsq", zeros.scatter_add(0, k, m * m))

    def _finish_pass(self, pass_index: int) -> None:
        s = self._pass_state(0)
        count, total, total_sq = s["count"], s["sum"], s["sumsq"]
        if float(count.sum()) == 0:
            self._no_pixels()
        mean, std = mean_std(count, total, total_sq, unbiased=True)
        g_mean, g_std = mean_std(count.sum(), total.sum(), total_sq.sum(), unbiased=True)
        missing = count < 2
        if bool(missing.any()):
            log.warning(
                "sml '%s': classes %s were predicted on fewer than 2 fitting pixels; they use the global "
                "max-logit statistics",
                self.name,
                missing.nonzero().flatten().tolist(),
            )
        mean = torch.where(missing, g_mean, mean)
        std = torch.where(missing, g_std, std).clamp_min(STD_FLOOR)
        self.means, self.stds = mean.float(), std.float()

    def _score(self, output: SegOutput) -> torch.Tensor:
        assert self.means is not None and self.stds is not None
        max_logit, pred = self._logits(output).float().max(1)
        if self.means.device != max_logit.device:  # moved once, not per batch
            self.means, self.stds = self.means.to(max_logit.device), self.stds.to(max_logit.device)
        score = -(max_logit - self.means[pred]) / self.stds[pred]
        p = self.params
        if p["boundary_suppression"]:
            score = boundary_suppression(score, pred, p["boundary_width"], p["boundary_iterations"])
        if p["dilated_smoothing"]:
            score = dilated_smoothing(score, p["smoothing_kernel"], p["smoothing_dilation"], p["smoothing_sigma"])
        return score
