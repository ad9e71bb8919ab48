"""The ``fit-scorers`` workflow: stream in-distribution data through the model and fit every scorer that needs
it (sml, heat, mahalanobis, ...); the states go beside the checkpoint (``<checkpoint stem>.scorers.pt``),
merged under a lock into what the file holds when they are written (concurrent fits of other scorers are kept).

Fits on in-distribution data only: the dataset's evaluation split with anomalies (StreetHazards' test) and any
split whose labels hold an anomaly id are refused before any fitting.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anomalyseg import __version__
from anomalyseg.data.registry import parse_datasets
from anomalyseg.errors import UserError
from anomalyseg.files import check_output
from anomalyseg.workflows import session as S

log = logging.getLogger(__name__)


@dataclass
class FitOutput:
    """Where the states went and which scorers were fitted (on rank 0)."""

    states_path: Path
    scorers: list[str]


def fit_scorers(
    checkpoint: str | Path,
    data_root: str | Path,
    *,
    dataset: str = "streethazards",
    split: str | None = None,
    scorers: str | None = None,
    size: tuple[int, int] | None = None,
    tta: str | None = None,
    states: str | Path | None = None,
    batch_size: int = 1,
    workers: int = 2,
    device: str = "auto",
    limit: int | None = None,
    progress: bool = True,
    force: bool = False,
) -> FitOutput:
    """Fit the scorers of ``scorers`` (default: every registered scorer that needs fitting) on ``split``
    (default: the dataset's in-distribution split) and write their states; existing entries of other scorers
    are kept, entries of the same scorers only replaced with ``force``."""
    from anomalyseg.checkpoints.scorer_states import default_states_path, entries_to_keep, merge_states
    from anomalyseg.engine.distributed import broadcast_object, cleanup, init_distributed
    from anomalyseg.engine.fit import fit_scorers as fit_loop
    from anomalyseg.engine.guards import assert_no_anomaly, check_split_allowed
    from anomalyseg.engine.tta import TTA

    tta_spec = TTA.parse(tta)
    made = _fit_scorers(scorers)
    ctx = init_distributed(device)
    try:
        specs = parse_datasets(dataset)
        if len(specs) != 1 or not specs[0].has_class_labels or specs[0].fit_split is None:
            raise UserError("scorers are fitted on the in-distribution split of a dataset with class labels, "
                            f"not on {', '.join(s.title for s in specs)}")
        split = split or specs[0].fit_split
        check_split_allowed(split, "fitting scorers", spec=specs[0])
        data = S.open_datasets(dataset, data_root, split=split, transform=S.eval_transform("label", size, None),
                               limit=limit)[0]
        loaded = S.load_checked(checkpoint, ctx.device, None, [data.spec])
        states_path = check_output(Path(states) if states else default_states_path(loaded.path), "--states")
        entries_to_keep(states_path, [s.name for s in made], loaded.sha256, force)  # refuse early, before fitting
        assert_no_anomaly(data.data, data.split, spec=data.spec, purpose="fitting scorers", workers=max(0, workers))
        loader = S.make_loader(data.data, ctx, batch_size, workers)
        log.info("fitting %s on %d %s images", ", ".join(s.name for s in made), len(data.data), data.split)
        fit_loop(loaded.model, loader, made, ctx.device, tta=tta_spec, progress=ctx.is_main and progress)
        error = None  # rank 0 writes; every rank learns whether the write was refused
        if ctx.is_main:
            provenance = {"split": data.split, "dataset": data.spec.name, "data_root": str(Path(data_root).resolve()),
                          "num_images": len(data.data), "input": S.input_record(size, tta), "anomalyseg": __version__,
                          "fitted": time.strftime("%Y-%m-%dT%H:%M:%S")}
            fitted = {s.name: {"state": s.state_dict(), **provenance} for s in made}
            try:  # re-read under the lock: merged with what other fits wrote meanwhile, or refused
                merge_states(states_path, loaded.path, loaded.sha256, fitted, force)
            except UserError as exc:
                error = str(exc)
        error = broadcast_object(ctx, error)
        if error:
            raise UserError(error)
    finally:
        cleanup(ctx)
    return FitOutput(states_path, [s.name for s in made])


def _fit_scorers(spec: str | None) -> list[Any]:
    """The scorers to fit: those of ``spec`` that need fitting, or one per distinct fit of every registered
    scorer (sml's statistics serve sml_full)."""
    from anomalyseg.scoring import available_scorers, get_scorer, scorers_from_spec

    if spec is not None:
        requested = scorers_from_spec(spec)
        made = [s for s in requested if s.requires_fit]
        if not made:
            raise UserError(f"none of {spec!r} needs fitting (post-hoc scorers work as they are)")
        if len(made) < len(requested):
            log.info("skipping post-hoc scorers (nothing to fit): %s",
                     ", ".join(s.name for s in requested if not s.requires_fit))
        return made
    made, seen = [], set()
    for name in available_scorers():
        s = get_scorer(name)
        key = (s.kind, repr(sorted(s.fit_config().items())))
        if s.requires_fit and key not in seen:
            seen.add(key)
            made.append(s)
    return made
