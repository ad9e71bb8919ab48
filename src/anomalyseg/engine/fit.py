"""Streaming scorer fits: the in-distribution fitting passes of the scorers that need them, one model pass over
the loader per fitting pass, mergeable across ranks."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from anomalyseg.engine.tta import TTA, forward
from anomalyseg.errors import UserError
from anomalyseg.metrics.base import distributed_ready
from anomalyseg.progress import progress_bar
from anomalyseg.scoring import Scorer, check_unique
from anomalyseg.scoring.labels import labels_at

log = logging.getLogger(__name__)


def loader_length(loader: Any) -> int | None:
    """Batches in ``loader``, when it knows (plain lists and DataLoaders do)."""
    try:
        return len(loader)
    except TypeError:
        return None


@torch.no_grad()
def fit_scorers(
    model: nn.Module,
    loader: Iterable[dict[str, Any]],
    scorers: Sequence[Scorer],
    device: torch.device | str,
    *,
    tta: TTA | None = None,
    progress: bool = False,
) -> list[Scorer]:
    """Fit every scorer that needs it on in-distribution batches (known ids / 255 labels only).

    One model pass over ``loader`` per fitting pass (``fit_passes``: 2 for HEAT's feature term); labels are
    resized (nearest) to the logits resolution, i.e. the model input. Under ``torch.distributed`` each
    pass ends with ``sync_fit`` so every rank finishes with the statistics of the whole split. A label
    holding an id outside the known classes (the anomaly id) is refused by the scorers' leakage check.
    The caller refuses the test split itself (:func:`anomalyseg.engine.guards.assert_no_anomaly`).
    Returns the scorers, now fitted (post-hoc scorers are passed through untouched).
    """
    device = torch.device(device)
    scorers = list(scorers)
    check_unique(scorers)
    model.eval()
    pass_no = 0
    while active := [s for s in scorers if s.requires_fit and not s.is_fitted]:
        pass_no += 1
        needs_features = any(s.needs_features for s in active)
        seen = 0
        desc = f"fit pass {pass_no}"
        for batch in progress_bar(loader, total=loader_length(loader), desc=desc, unit="batch", disable=not progress,
                                  dynamic_ncols=True):
            images = batch["image"].to(device, non_blocking=True)
            output = forward(model, images, None, tta=tta, return_features=needs_features)
            label = labels_at(batch["label"].to(device, non_blocking=True).long(), tuple(output.logits.shape[-2:]))
            for scorer in active:
                scorer.fit_update(output, label)
            seen += images.shape[0]
        if distributed_ready():
            counts: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(counts, seen)
            if min(counts) == 0:
                raise UserError(f"a rank received no fitting image ({counts} per rank): use fewer processes")
        elif seen == 0:
            raise UserError("the fitting loader yielded no image")
        for scorer in active:
            scorer.sync_fit()
            scorer.fit_finalize()
        log.info("fitting pass %d done on %d images (this rank): %s", pass_no, seen,
                 ", ".join(s.name for s in active))
    return scorers
