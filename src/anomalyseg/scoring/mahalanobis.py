"""Class-conditional Gaussians with a shared covariance on intermediate features (Lee et al., NeurIPS 2018).

Fit (in-distribution data): features f ``(B, D, h, w)`` from ``output.features[feature]`` (optionally
L2-normalised over D), labels resampled nearest to (h, w), pixels labelled 255 skipped. Running float64
sums: per-class count n_c and feature sum s_c, and the sum of outer products S = sum f f^T, so that

    mu_c = s_c / n_c,   Sigma = (S - sum_c s_c s_c^T / n_c) / N      (pooled within-class covariance)

merge exactly by addition. Sigma is shrunk towards a scaled identity,
``(1 - eps) Sigma + eps * tr(Sigma) / D * I`` (eps = 0.01), before it is inverted via Cholesky.

Score: ``min_c sqrt((f - mu_c)^T Sigma^-1 (f - mu_c))`` at feature resolution, over classes seen in fitting,
upsampled bilinearly to the logits' size. Higher = farther from every class = more anomalous.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F

from anomalyseg.constants import IGNORE_INDEX
from anomalyseg.scoring.base import require
from anomalyseg.scoring.features import FeatureScorer, flat_pixels, upsample
from anomalyseg.scoring.labels import labels_at

if TYPE_CHECKING:
    from anomalyseg.models.outputs import SegOutput

log = logging.getLogger(__name__)


class Mahalanobis(FeatureScorer):
    """Minimum Mahalanobis distance to the class means (shared covariance)."""

    kind = "mahalanobis"
    requires_fit = True
    needs_features = True
    abbreviations: ClassVar[dict[str, str]] = {"feature": "", "l2_normalize": "l2", "eps": "eps"}

    def __init__(
        self,
        feature: str | None = None,
        l2_normalize: bool = False,
        eps: float = 0.01,
        name: str | None = None,
    ) -> None:
        require(0 <= eps <= 1, f"mahalanobis: shrinkage eps must be in [0, 1], got {eps}")
        super().__init__(name=name, feature=feature, l2_normalize=bool(l2_normalize), eps=float(eps))
        self.feature_used: str | None = None
        self.means: torch.Tensor | None = None  #: class means (C, D), float64; rows of unseen classes are 0
        self.covariance: torch.Tensor | None = None  #: pooled covariance before shrinkage (D, D), float64
        self._whiten: torch.Tensor | None = None  # L^-1 with Sigma_shrunk = L L^T (D, D), float32
        self._centres: torch.Tensor | None = None  # whitened means of the seen classes (C', D), float32

    def fit_config(self) -> dict[str, Any]:
        return {"feature": self.params["feature"], "l2_normalize": self.params["l2_normalize"]}

    def _features(self, output: SegOutput) -> torch.Tensor:
        feat = self._feature(output)
        feat = feat.float()
        return F.normalize(feat, dim=1) if self.params["l2_normalize"] else feat

    def _fit_batch(self, output: SegOutput, label: torch.Tensor, pass_index: int) -> None:
        feat = self._features(output)
        y = labels_at(label, tuple(feat.shape[-2:])).reshape(-1)
        valid = y != IGNORE_INDEX
        f = flat_pixels(feat)[valid].to(torch.float64)
        y = y[valid]
        C, D = output.logits.shape[1], f.shape[1]
        self._accumulate("count", torch.bincount(y, minlength=C).to(torch.float64))
        self._accumulate("sum", torch.zeros(C, D, dtype=torch.float64, device=f.device).index_add_(0, y, f))
        self._accumulate("outer", f.T @ f)

    def _finish_pass(self, pass_index: int) -> None:
        s = self._pass_state(0)
        count, total, outer = s["count"], s["sum"], s["outer"]
        if float(count.sum()) == 0:
            self._no_pixels()
        seen = count > 0
        if not bool(seen.all()):
            log.warning(
                "mahalanobis '%s': classes %s have no fitting pixel; they are left out of the minimum",
                self.name,
                (~seen).nonzero().flatten().tolist(),
            )
        means = total / count.clamp_min(1)[:, None]
        cov = (outer - means[seen].T @ total[seen]) / count.sum()
        cov = (cov + cov.T) / 2
        D = cov.shape[0]
        eps = self.params["eps"]
        scale = torch.trace(cov) / D if float(torch.trace(cov)) > 0 else torch.ones((), dtype=cov.dtype)
        eye = torch.eye(D, dtype=cov.dtype, device=cov.device)
        shrunk = (1 - eps) * cov + eps * scale * eye
        chol, info = torch.linalg.cholesky_ex(shrunk)
        if int(info) != 0:  # singular even after shrinkage (eps = 0): add a tiny ridge
            chol = torch.linalg.cholesky(shrunk + 1e-9 * float(scale) * eye)
        whiten = torch.linalg.solve_triangular(chol, eye, upper=False)
        self.means, self.covariance = means, cov
        self._whiten = whiten.float()
        self._centres = (means[seen] @ whiten.T).float()

    def _score(self, output: SegOutput) -> torch.Tensor:
        assert self._whiten is not None and self._centres is not None
        feat = self._features(output)
        B, _, h, w = feat.shape
        if self._whiten.device != feat.device:  # moved once, not per batch
            self._whiten, self._centres = self._whiten.to(feat.device), self._centres.to(feat.device)
        g = flat_pixels(feat) @ self._whiten.T
        centres = self._centres
        sq = (g * g).sum(1, keepdim=True) - 2 * g @ centres.T + (centres * centres).sum(1)[None]
        dist = sq.amin(1).clamp_min(0).sqrt().reshape(B, h, w)
        return upsample(dist, tuple(output.logits.shape[-2:]))
