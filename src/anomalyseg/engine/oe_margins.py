"""``auto`` hinge margins for the energy / RbA outlier losses: from the fine-tuned model's own score scale.

The papers' margins (PEBAL: energy ``-12 / -6``; RbA: ``0 / 5``) are in the units of their networks' logits. A
CE-trained DeepLabV3+ EfficientNet-lite0 on the synthetic StreetHazards data has inlier energies of
-9.96 / -7.24 / -4.06 / -3.02 (percentiles 5 / 50 / 95 / 99 on training pixels) and RbA scores of
4.46 / 6.88 / 9.05 / 9.74: RbA's ``m_in = 0`` pushes every inlier pixel down by ~7 (a fine-tune lost 15 mIoU
points), PEBAL's values are arbitrary at that scale. The rule, fixed in advance (not tuned):

- ``margin_in: auto`` = the :data:`AUTO_QUANTILE` (0.95) quantile of the loss's score (free energy for
  ``energy``, ``-sum tanh z`` for ``rba``) over the known-class pixels (label < K) of the VALIDATION split,
  scored by the model as it starts the run (after ``init_from``), in eval mode. The inlier hinge then acts
  only on the 5 % least confident inlier pixels -- class boundaries and confusions, exactly the false positives
  of anomaly scoring -- and leaves the confident majority alone. Validation data is in-distribution only (its
  loader never pastes outliers); the test split is never read by training.
- ``margin_out: auto`` = ``margin_in`` + the paper's gap (``m_out - m_in``: energy 6, RbA 5); the RbA score lies
  in ``(-K, K)``, so its ``margin_out`` is capped at ``K - 1`` (reachable), and a cap at or below ``margin_in``
  is a one-line error. Either margin can be ``auto`` alone, the other a number.

Up to :data:`AUTO_MAX_BATCHES` validation batches are scored; a batch with more than
:data:`AUTO_MAX_PIXELS_PER_BATCH` inlier pixels contributes that many, evenly spaced in raster order (memory
stays below ~100 MB at 1280x720); the quantile is exact (numpy's, linear) over the collected pixels. The
calibration draws nothing from the RNGs of the run: python / numpy / torch CPU generators and the validation
loader's generator are restored (an eval-mode forward draws nothing on CUDA), so a run with ``auto`` trains
exactly like one given the same margins as numbers.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from anomalyseg.engine.loaders import seeded_rngs
from anomalyseg.engine.oe_losses import AUTO, HINGE_SCORES, PAPER_DEFAULTS, inlier_mask
from anomalyseg.engine.train import autocast
from anomalyseg.errors import UserError

#: ``margin_in: auto`` is this quantile of the validation inlier scores: the hinge acts on the 5 % least confident
#: inlier pixels (boundaries, confusions: the false positives of anomaly scoring), not on the confident majority.
AUTO_QUANTILE = 0.95
#: Validation batches scored for the quantile (the split's first ones, in order).
AUTO_MAX_BATCHES = 20
#: Inlier pixels kept per batch at most (evenly spaced): 20 x 2**20 float32 scores = 84 MB.
AUTO_MAX_PIXELS_PER_BATCH = 2**20


@torch.no_grad()
def inlier_scores(model: nn.Module, loader: Iterable[dict[str, Any]], loss: str, num_classes: int,
                  device: torch.device, *, amp: str = "none", max_batches: int = AUTO_MAX_BATCHES,
                  max_pixels_per_batch: int = AUTO_MAX_PIXELS_PER_BATCH) -> tuple[np.ndarray, int]:
    """The ``loss``'s score (:data:`~anomalyseg.engine.oe_losses.HINGE_SCORES`) at known-class pixels of the
    first ``max_batches`` batches (logits upsampled to the label size, as in validation), float32 on the CPU,
    and the number of images scored. Model in eval mode meanwhile, its previous mode restored."""
    was_training = model.training
    model.eval()
    chunks, images = [], 0
    try:
        for i, batch in enumerate(loader):
            if i >= max_batches:
                break
            x, target = batch["image"].to(device), batch["label"].to(device)
            with autocast(device, amp):
                logits = model(x).logits.float()
            if logits.shape[-2:] != target.shape[-2:]:
                logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
            values = HINGE_SCORES[loss](logits)[inlier_mask(target, num_classes)]
            if values.numel() > max_pixels_per_batch:
                values = values[torch.linspace(0, values.numel() - 1, max_pixels_per_batch, device=device).long()]
            chunks.append(values.cpu())
            images += x.shape[0]
    finally:
        model.train(was_training)
    return (torch.cat(chunks).numpy() if chunks else np.zeros(0, np.float32)), images


def auto_margins(scores: np.ndarray | None, loss: str, num_classes: int, margin_in: float | str,
                 margin_out: float | str, *, images: int = 0) -> tuple[float, float, dict[str, str]]:
    """The rule of the module docstring: ``(margin_in, margin_out, notes)``, ``notes`` saying how each ``auto``
    margin was set (for the log and the checkpoint). ``scores``: validation inlier scores (needed when
    ``margin_in`` is auto)."""
    notes: dict[str, str] = {}
    score_name = {"energy": "energy", "rba": "RbA score"}[loss]
    if margin_in == AUTO:
        if scores is None or scores.size == 0:
            raise UserError("outlier_exposure.margin_in=auto: the validation split has no known-class pixels to "
                            "take the quantile of")
        margin_in = float(np.quantile(scores.astype(np.float64), AUTO_QUANTILE))
        notes["margin_in"] = (f"auto: q{AUTO_QUANTILE:g} of val inlier {score_name} over {scores.size} pixels "
                              f"of {images} images")
    margin_in = float(margin_in)
    if margin_out == AUTO:
        paper = PAPER_DEFAULTS[loss]
        assert paper.margin_in is not None and paper.margin_out is not None  # hinge losses have margins
        gap = paper.margin_out - paper.margin_in
        margin_out = margin_in + gap
        notes["margin_out"] = f"auto: margin_in + {gap:g}"
        cap = num_classes - 1  # -sum_k tanh(z_k) over K logits lies in (-K, K)
        if loss == "rba" and margin_out > cap:
            margin_out = float(cap)
            notes["margin_out"] += f", capped at K-1 = {cap}"
            if margin_out <= margin_in:
                raise UserError(f"outlier_exposure.margin_out=auto: capped at K-1 = {cap} (the RbA score is below "
                                f"K = {num_classes}), not above margin_in={margin_in:g}; give margin_in lower")
    return margin_in, float(margin_out), notes


def calibrate_margins(model: nn.Module, loader: Any, loss: str, num_classes: int, device: torch.device,
                      margin_in: float | str, margin_out: float | str, *, amp: str = "none"
                      ) -> tuple[float, float, dict[str, str]]:
    """Resolve ``auto`` margins on ``loader`` (the validation loader) with :func:`auto_margins`; the
    validation scores are computed only when ``margin_in`` is auto. Leaves every RNG as it found it."""
    scores, images = None, 0
    if margin_in == AUTO:
        generator = getattr(loader, "generator", None)
        saved = generator.get_state() if generator is not None else None
        try:
            with seeded_rngs(0):
                scores, images = inlier_scores(model, loader, loss, num_classes, device, amp=amp)
        finally:
            if generator is not None:
                generator.set_state(saved)
    return auto_margins(scores, loss, num_classes, margin_in, margin_out, images=images)


__all__ = ["AUTO_MAX_BATCHES", "AUTO_MAX_PIXELS_PER_BATCH", "AUTO_QUANTILE", "auto_margins", "calibrate_margins",
           "inlier_scores"]
