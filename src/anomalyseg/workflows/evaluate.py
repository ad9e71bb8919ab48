"""The ``evaluate`` workflow: a checkpoint on any registered dataset, every scorer from one pass, results files.

StreetHazards is measured under the official per-image protocol and the pooled one; the real-photo anomaly
sets (Road Anomaly, SegmentMeIfYouCan, Fishyscapes) pooled with the "interp" FPR95 rule, one results file
per set (``NAME_<set>.json``); Cityscapes gives mIoU. What each dataset needs (classes, anomaly ids, void
handling, protocols, FPR rule) comes from its :class:`~anomalyseg.data.registry.DatasetSpec`.

>>> outputs = evaluate("runs/r50", "data/streethazards", "results/r50.json", scorers="max_logit,energy")
>>> outputs[0].record["scorers"]["energy"]["metrics"]["per_image"]["aupr"]
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anomalyseg.data.registry import ALL_ANOMALY_SETS
from anomalyseg.errors import UserError
from anomalyseg.workflows import session as S

log = logging.getLogger(__name__)


@dataclass
class EvalOutput:
    """One dataset's results record and the files it was written to."""

    record: dict[str, Any]
    paths: dict[str, Path]


def results_path(out: str | Path, key: str) -> Path:
    """``results/NAME.json`` -> ``results/NAME_<key>.json`` (one file per anomaly set)."""
    out = Path(out)
    stem = out.name[: -len(".json")] if out.name.lower().endswith(".json") else out.name
    return out.with_name(f"{stem}_{key}.json")


def evaluate(
    checkpoint: str | Path,
    data_root: str | Path,
    out: str | Path,
    *,
    dataset: str = "streethazards",
    split: str | None = None,
    scorers: str = "all",
    protocol: str | None = None,
    ignore: str = "",
    eval_at: str = "label",
    size: tuple[int, int] | None = None,
    tta: str | None = None,
    input_contract: str | None = None,
    states: str | Path | None = None,
    batch_size: int = 1,
    workers: int = 2,
    device: str = "auto",
    limit: int | None = None,
    progress: bool = True,
    force: bool = False,
    argv: list[str] | None = None,
) -> list[EvalOutput]:
    """Evaluate ``checkpoint`` on ``dataset`` and write ``out`` (JSON + CSV + Markdown) per dataset.

    ``size`` is ``(width, height)`` of the model input (aspect kept), ``protocol`` ``per_image`` / ``pooled``
    / ``both`` (default: the dataset's), ``ignore`` known classes left out of the anomaly metrics (names or
    ids), ``states`` the fitted scorer states (default ``<checkpoint stem>.scorers.pt``). Runs sharded under
    ``torchrun``; rank 0 writes. Returns one :class:`EvalOutput` per dataset (on rank 0; ``[]`` elsewhere).
    """
    from anomalyseg.checkpoints.scorer_states import default_states_path, load_fitted
    from anomalyseg.engine.distributed import barrier, cleanup, init_distributed
    from anomalyseg.engine.tta import TTA
    from anomalyseg.report.results import check_writable

    started = time.time()
    settings = {"checkpoint": str(checkpoint), "data_root": str(data_root), "dataset": dataset, "split": split,
                "scorers": scorers, "protocol": protocol, "ignore": ignore, "eval_at": eval_at,
                "size": list(size) if size else None, "tta": tta, "input_contract": input_contract,
                "states": str(states) if states else None, "batch_size": batch_size, "workers": workers,
                "device": device, "limit": limit}
    eval_at = S.normalise_eval_at(eval_at)
    tta_spec = TTA.parse(tta)
    ctx = init_distributed(device)
    outputs: list[EvalOutput] = []
    try:
        datasets = S.open_datasets(dataset, data_root, split=split, transform=None, limit=limit)
        grouped = datasets[0].spec.group == ALL_ANOMALY_SETS
        ignore_ids = {d.spec.name: tuple(S.class_ids(ignore, d.spec)) for d in datasets}
        paths = {d.spec.name: check_writable(results_path(out, d.spec.name) if grouped else out, force)
                 for d in datasets}
        loaded = S.load_checked(checkpoint, ctx.device, input_contract, [d.spec for d in datasets])
        made = _scorers(scorers, loaded, datasets)
        states_path = Path(states) if states else default_states_path(loaded.path)
        used = load_fitted(made, states_path, loaded.sha256)
        inp = S.input_record(size, tta)
        _warn_fit_input(used, inp)
        transform = S.eval_transform(eval_at, size, loaded.contract.size)
        log.info("input contract: %s; evaluating at the %s resolution", loaded.contract.describe(), eval_at)
        for data in datasets:
            data.dataset.transform = transform
            results = _run(loaded, data, made, ctx, eval_at=eval_at, protocol=protocol,
                           ignore=ignore_ids[data.spec.name], tta=tta_spec, batch_size=batch_size, workers=workers,
                           progress=progress)
            if ctx.is_main:
                record = {"command": "evaluate", "argv": argv, "config": settings, "checkpoint": loaded.record(),
                          "scorer_states": {"path": str(states_path), "used": used} if used else None,
                          "dataset": data.record(), "input": {**inp, "eval_at": eval_at},
                          "input_contract": loaded.contract.to_dict(), **results, **_run_facts(ctx, started)}
                outputs.append(EvalOutput(record, _write(record, paths[data.spec.name]["json"], force)))
        barrier(ctx)
    finally:
        cleanup(ctx)
    return outputs


def _scorers(spec: str, loaded: Any, datasets: list[S.EvalData]) -> list[Any]:
    """The scorers of ``spec`` for this model (void channel from its contract), checked before any pass;
    none on a dataset without anomaly labels."""
    from anomalyseg.scoring import scorers_from_spec

    if not any(d.spec.anomaly_ids for d in datasets):
        log.info("%s has no anomaly labels: segmentation metrics only", datasets[0].spec.title)
        return []
    made = scorers_from_spec(spec, void_index=loaded.contract.void_index)
    S.check_void(made, loaded.num_outputs)
    return made


def _warn_fit_input(used: dict[str, dict[str, Any]], inp: dict[str, Any]) -> None:
    for name, entry in used.items():
        fitted = entry.get("input")
        if fitted is not None and {k: fitted.get(k) for k in inp} != inp:
            log.warning("scorer %s was fitted with input %s, evaluated with %s: its statistics may not match",
                        name, fitted, inp)


def _run(loaded: Any, data: S.EvalData, scorers: list[Any], ctx: Any, *, eval_at: str, protocol: str | None,
         ignore: tuple[int, ...], tta: Any, batch_size: int, workers: int, progress: bool) -> dict[str, Any]:
    """One pass over one dataset: the plan from its spec, then :func:`anomalyseg.engine.evaluate.run_evaluation`."""
    from anomalyseg.engine.evaluate import EvalPlan, run_evaluation

    spec = data.spec
    protocols = {None: spec.protocols, "both": ("per_image", "pooled")}.get(protocol, (protocol,))
    plan = EvalPlan(
        num_classes=loaded.num_outputs, anomaly_ids=spec.anomaly_ids, ignore_ids=ignore,
        protocols=protocols if scorers else (), eval_at=eval_at, fpr_rule=spec.fpr_rule,
        segmentation=spec.has_class_labels, void_label=not spec.void_is_normal,
        class_names=tuple(spec.class_names or loaded.checkpoint.get("class_names") or ()) or None, tta=tta)
    loader = S.make_loader(data.data, ctx, batch_size, workers)
    log.info("evaluating %d %s images on %s x%d: %s", len(data.data), data.dataset.info.name, ctx.device,
             ctx.world_size, ", ".join(s.name for s in scorers) or "segmentation only")
    return run_evaluation(loaded.model, loader, scorers, ctx.device, plan, progress=ctx.is_main and progress,
                          desc=spec.folder or "evaluate")


def _run_facts(ctx: Any, started: float) -> dict[str, Any]:
    return {"world_size": ctx.world_size, "device": str(ctx.device), "versions": S.versions(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
            "wall_seconds": round(time.time() - started, 3)}


def _write(record: dict[str, Any], json_path: Path, force: bool) -> dict[str, Path]:
    from anomalyseg.report.results import write_results

    try:
        return write_results(record, json_path, force=force)
    except OSError as exc:
        raise UserError(f"cannot write results to {json_path}: {exc.strerror or exc}") from None
