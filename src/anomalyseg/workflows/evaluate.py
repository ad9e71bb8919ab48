"""The ``evaluate`` workflow: a checkpoint on any registered dataset, every scorer from one pass, results files.

StreetHazards is measured under the official per-image protocol and the pooled one; the real-photo anomaly
sets (Road Anomaly, SegmentMeIfYouCan, Fishyscapes) pooled with the "interp" FPR95 rule, one results file
per set (``NAME_<set>.json``); Cityscapes gives mIoU. What each dataset needs (classes, anomaly ids, void
handling, protocols, FPR rule) comes from its :class:`~anomalyseg.data.registry.DatasetSpec`.

>>> outputs = evaluate("runs/r50", "data/streethazards", "results/r50.json", scorers="max_logit,energy")
>>> outputs[0].record["scorers"]["energy"]["metrics"]["per_image"]["aupr"]
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anomalyseg.constants import DETECTION_RULE
from anomalyseg.data.registry import ALL_ANOMALY_SETS, parse_datasets
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
    fpr_rule: str | None = None,
    skip_images_without_anomaly: bool = False,
    components: str | None = None,
    component_threshold: float | None = None,
    save_scores: str | Path | None = None,
    save_scores_format: str = "npy",
    ignore: str = "",
    eval_at: str = "label",
    size: tuple[int, int] | None = None,
    tta: str | None = None,
    inference: str | None = None,
    tile: str | tuple[int, int] | None = None,
    overlap: float = 0.33,
    blend: str = "mean",
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
    ids), ``states`` the fitted scorer states (default ``<checkpoint stem>.scorers.pt``). ``fpr_rule``: the
    pooled FPR95 rule (default: the dataset's); ``skip_images_without_anomaly``: the course protocol's pooling.
    ``components``: SegmentMeIfYouCan component metrics (``anomaly`` / ``obstacle`` track, ``off``; default: the
    dataset's), each scorer's map binarised at ``component_threshold`` or its pooled best-F1 threshold.
    ``save_scores``: a folder for every score map (``<dataset>/<scorer>/<id>.npy``, float32, evaluation
    resolution; the 1 / 0 / 255 target the metrics saw beside them in ``<dataset>/_target/``), or with
    ``save_scores_format="smiyc"`` the SegmentMeIfYouCan benchmark's layout (``anomaly_p/<scorer>/<set>/<id>.hdf5``,
    float16). ``inference``: ``whole`` / ``resize`` / ``slide`` (tiles of ``tile`` "HxW", default the contract's
    size, overlapping by ``overlap``, logits blended by ``blend``: mean or gaussian); default resize to the
    contract's size when it has one, else whole. Runs sharded under ``torchrun``; rank 0 writes.
    Returns one :class:`EvalOutput` per dataset (on rank 0; ``[]`` elsewhere).
    """
    from anomalyseg.checkpoints.scorer_states import default_states_path, load_fitted
    from anomalyseg.engine.distributed import barrier, cleanup, init_distributed
    from anomalyseg.engine.evaluate import FPR_RULES
    from anomalyseg.engine.score_store import SCORE_FORMATS, check_export_dir
    from anomalyseg.engine.tta import TTA
    from anomalyseg.metrics.components import TRACKS
    from anomalyseg.report.results import check_writable

    started = time.time()
    settings = {"checkpoint": str(checkpoint), "data_root": str(data_root), "dataset": dataset, "split": split,
                "scorers": scorers, "protocol": protocol, "ignore": ignore, "eval_at": eval_at,
                "size": list(size) if size else None, "tta": tta, "inference": inference,
                "tile": list(tile) if isinstance(tile, tuple) else tile, "overlap": overlap, "blend": blend,
                "input_contract": input_contract,
                "states": str(states) if states else None, "batch_size": batch_size, "workers": workers,
                "device": device, "limit": limit, "fpr_rule": fpr_rule,
                "skip_images_without_anomaly": skip_images_without_anomaly, "components": components,
                "component_threshold": component_threshold, "save_scores": str(save_scores) if save_scores else None,
                "save_scores_format": save_scores_format}
    eval_at = S.normalise_eval_at(eval_at)
    opts = PassOptions(eval_at=eval_at, protocol=protocol, fpr_rule=_choice("--fpr-rule", fpr_rule, FPR_RULES),
                       skip_without_anomaly=skip_images_without_anomaly,
                       components=_choice("--components", components, (*TRACKS, "off")),
                       component_threshold=component_threshold, tta=TTA.parse(tta), batch_size=batch_size,
                       workers=workers, progress=progress,
                       save_scores=check_export_dir(save_scores, force) if save_scores is not None else None,
                       save_format=_choice("--save-scores-format", save_scores_format, SCORE_FORMATS) or "npy")
    for spec in parse_datasets(dataset):  # before any file is read
        _check_components(opts, spec)
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
        transform, window, inference_record = S.inference_transform(eval_at, size, loaded.contract.size, inference,
                                                                    tile, overlap, blend)
        opts = dataclasses.replace(opts, window=window)
        log.info("input contract: %s; evaluating at the %s resolution", loaded.contract.describe(), eval_at)
        for data in datasets:
            data.dataset.transform = transform
            results = _run(loaded, data, made, ctx, ignore_ids[data.spec.name], opts)
            if ctx.is_main:
                record = {"command": "evaluate", "argv": argv, "config": settings, "checkpoint": loaded.record(),
                          "scorer_states": {"path": str(states_path), "used": used} if used else None,
                          "dataset": data.record(), "input": {**inp, "eval_at": eval_at,
                                                                      "inference": inference_record},
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


@dataclass(frozen=True)
class PassOptions:
    """How each dataset's pass is run (the command's options, checked)."""

    eval_at: str
    protocol: str | None
    fpr_rule: str | None
    skip_without_anomaly: bool
    components: str | None
    component_threshold: float | None
    tta: Any
    batch_size: int
    workers: int
    progress: bool
    save_scores: Path | None
    save_format: str = "npy"
    window: Any = None

    def track(self, spec: Any) -> str | None:
        """The component track measured on ``spec`` (None: off)."""
        chosen = self.components or spec.components
        return None if chosen in (None, "off") else chosen


def _choice(flag: str, value: str | None, allowed: tuple[str, ...]) -> str | None:
    if value is not None and value not in allowed:
        raise UserError(f"{flag} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _check_components(opts: PassOptions, spec: Any) -> None:
    if opts.components not in (None, "off") and spec.has_class_labels:
        raise UserError(f"--components applies to the binary-mask anomaly sets (normal / anomaly / void masks); "
                        f"{spec.title} has class labels")
    if opts.track(spec) is not None and opts.protocol == "per_image" and opts.component_threshold is None:
        raise UserError("component metrics take their threshold from the pooled curve: add the pooled protocol "
                        "(--protocol pooled or both) or give --component-threshold")
    if opts.component_threshold is not None and not math.isfinite(opts.component_threshold):
        raise UserError(f"--component-threshold must be a finite number, got {opts.component_threshold}")


def _run(loaded: Any, data: S.EvalData, scorers: list[Any], ctx: Any, ignore: tuple[int, ...], opts: PassOptions
         ) -> dict[str, Any]:
    """One pass over one dataset: the plan from its spec and the options, then
    :func:`anomalyseg.engine.evaluate.run_evaluation`, then the component pass where asked."""
    from anomalyseg.engine.evaluate import EvalPlan, run_evaluation
    from anomalyseg.engine.score_store import ComponentCache, Sinks

    spec = data.spec
    protocols = {None: spec.protocols, "both": ("per_image", "pooled")}.get(opts.protocol, (opts.protocol,))
    plan = EvalPlan(
        num_classes=loaded.num_outputs, anomaly_ids=spec.anomaly_ids, ignore_ids=ignore,
        protocols=protocols if scorers else (), eval_at=opts.eval_at, fpr_rule=opts.fpr_rule or spec.fpr_rule,
        segmentation=spec.has_class_labels, void_label=not spec.void_is_normal,
        class_names=tuple(spec.class_names or loaded.checkpoint.get("class_names") or ()) or None, tta=opts.tta,
        skip_without_anomaly=opts.skip_without_anomaly, window=opts.window)
    track = opts.track(spec) if scorers else None
    cache = ComponentCache([s.name for s in scorers]) if track else None
    writer = _export_writer(opts, spec)
    loader = S.make_loader(data.data, ctx, opts.batch_size, opts.workers)
    log.info("evaluating %d %s images on %s x%d: %s", len(data.data), data.dataset.info.name, ctx.device,
             ctx.world_size, ", ".join(s.name for s in scorers) or "segmentation only")
    try:
        results = run_evaluation(loaded.model, loader, scorers, ctx.device, plan,
                                 progress=ctx.is_main and opts.progress, desc=spec.folder or "evaluate",
                                 sink=Sinks([writer, cache.writer if cache else None]) if writer or cache else None)
        if cache is not None:
            _add_components(results, cache, track, opts.component_threshold)
    finally:
        if cache is not None:
            cache.close()
    return results


def _export_writer(opts: PassOptions, spec: Any) -> Any:
    """The ``--save-scores`` sink of this dataset (None without ``--save-scores``)."""
    from anomalyseg.engine.score_store import ScoreWriter, SmiycWriter

    if opts.save_scores is None:
        return None
    if opts.save_format == "smiyc":
        return SmiycWriter(opts.save_scores, spec.smiyc_name or spec.name)
    return ScoreWriter(opts.save_scores / spec.name, targets=True)


def _add_components(results: dict[str, Any], cache: Any, track: str, threshold: float | None) -> None:
    """``metrics["components"]`` of every scorer: its map at ``threshold`` or its pooled best-F1 threshold."""
    from anomalyseg.engine.score_store import component_pass

    entries = results["scorers"]
    thresholds = {name: threshold if threshold is not None else e["metrics"]["pooled"].get("threshold_best_f1")
                  for name, e in entries.items()}
    for name, value in thresholds.items():
        if value is None or not math.isfinite(value):
            log.warning("%s: no pooled best-F1 threshold (no anomaly pixel?): no component metrics", name)
    usable = {n: v for n, v in thresholds.items() if v is not None and math.isfinite(v)}
    for name, values in component_pass(cache, usable, track).items():
        source = "given" if threshold is not None else "pooled best-F1 pixel threshold (exact)"
        entries[name]["metrics"]["components"] = {**values, "threshold_source": source,
                                                  "binarised": DETECTION_RULE,
                                                  "eval_at": results["eval_at"]}


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
