"""Ablation sweeps: every combination of grid values -> one training (or none) + fit + evaluation -> one
results folder and one table. Finished runs are skipped on re-run, so an interrupted sweep resumes.

Layout of ``out``: ``results/<point>.json`` (the evaluation record plus a ``sweep`` entry: grid values,
fingerprint), ``runs/<training>/`` (one training run per distinct set of training values, shared by the
points that differ only in scoring settings), ``work/<point>/`` (fitted scorer states, raw evaluation),
``table.md``, ``table.csv``. A run is finished when its results file exists with the same grid values and the same
fingerprint (base config + evaluation settings); results made from another base config are refused rather
than mixed into the table.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import itertools
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from anomalyseg.argtypes import size_wh
from anomalyseg.config import Config
from anomalyseg.configio import Bound, apply_overrides, bounded, config_from_dict, config_to_dict, read_yaml
from anomalyseg.errors import UserError
from anomalyseg.files import check_output
from anomalyseg.limits import MAX_BATCH, MAX_COUNT, MAX_WORKERS
from anomalyseg.scoring import scorers_from_spec

log = logging.getLogger(__name__)

TRAIN_SECTIONS = ("data", "model", "optim", "schedule", "train")


@bounded(batch_size=Bound(1, MAX_BATCH), workers=Bound(0, MAX_WORKERS), limit=Bound(1, MAX_COUNT))
@dataclass
class EvalSettings:
    """How every run is evaluated (``anomalyseg evaluate`` options; ``size`` as ``WxH``)."""

    data_root: str | None = None  # default: data.root of the training config
    split: str = "test"
    scorers: str = "max_logit"
    protocol: Literal["per_image", "pooled", "both"] = "both"
    size: str | None = None
    tta: str | None = None
    ignore: str = ""
    eval_at: Literal["label", "input"] = "label"
    batch_size: int = 1
    workers: int = 2
    limit: int | None = None


@dataclass
class SweepSection:
    """The ``sweep:`` section of BASE.yaml."""

    out: str = "sweeps/sweep"
    checkpoint: str | None = None  # set: scoring-only sweep (no training)
    fit_split: str = "val"
    evaluate: EvalSettings = field(default_factory=EvalSettings)


@dataclass
class SweepPoint:
    """One combination of grid values and what it changes."""

    name: str
    values: dict[str, str]
    train_name: str  # training run folder name (points with equal training values share it)
    train_overrides: list[str]
    scorer_params: dict[str, dict[str, str]]
    settings: SweepSection


@dataclass
class SweepSpec:
    """A loaded sweep: base training config (dict), sweep section, grid axes, output folder."""

    base: dict[str, Any]
    section: SweepSection
    axes: list[tuple[str, list[str]]]
    out: Path
    device: str | None = None

    @property
    def training(self) -> bool:
        return self.section.checkpoint is None


Runner = Callable[[SweepPoint, SweepSpec], dict[str, Any]]


# ---------------------------------------------------------------------------------------------------
# Grid parsing
# ---------------------------------------------------------------------------------------------------
def split_values(text: str) -> list[str]:
    """``a,b`` -> [a, b]; commas inside ``[]`` / ``()`` / ``{}`` stay; with a ``|`` anywhere, split on ``|``."""
    if "|" in text:
        parts = text.split("|")
    else:
        parts, depth, cur = [], 0, ""
        for ch in text:
            depth += ch in "[({"
            depth -= ch in "])}"
            if ch == "," and depth == 0:
                parts.append(cur)
                cur = ""
            else:
                cur += ch
        parts.append(cur)
    values = [p.strip() for p in parts]
    if not values or any(v == "" for v in values):
        raise UserError(f"grid values {text!r} hold an empty item")
    return values


def parse_grid(items: Sequence[str]) -> list[tuple[str, list[str]]]:
    """``["key=v1,v2", ...]`` -> ``[(key, [v1, v2]), ...]`` (each key once)."""
    axes: list[tuple[str, list[str]]] = []
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"--grid item {item!r} is not KEY=V1,V2")
        if key in (k for k, _ in axes):
            raise UserError(f"--grid key {key!r} is given twice")
        axes.append((key, list(dict.fromkeys(split_values(raw)))))
    if not axes:
        raise UserError("--grid needs at least one KEY=V1,V2")
    return axes


def _kind(key: str) -> str:
    head = key.split(".", 1)[0]
    if head == "scorer":
        if key.count(".") != 2:
            raise UserError(f"grid key {key!r}: scorer settings are scorer.NAME.PARAM (e.g. scorer.energy.temperature)")
        return "scorer"
    if head == "eval":
        return "eval"
    if head in TRAIN_SECTIONS:
        return "train"
    raise UserError(f"grid key {key!r}: expected a training key ({', '.join(s + '.*' for s in TRAIN_SECTIONS)}), "
                    "scorer.NAME.PARAM or eval.KEY")


def run_name(values: dict[str, str]) -> str:
    """A readable, file-safe, stable name for grid values (no dots, so no file suffix; hashed when long)."""
    text = "__".join(f"{k}={v}" for k, v in values.items())
    if not text:
        return "base"
    safe = "".join(c if c.isalnum() or c in "=-" else "_" for c in text)
    if len(safe) > 120:
        safe = safe[:100] + "-" + hashlib.sha256(text.encode()).hexdigest()[:10]
    return safe


def points(spec: SweepSpec) -> list[SweepPoint]:
    """Every combination of the grid, in ``itertools.product`` order, with its overrides checked."""
    out = []
    keys = [k for k, _ in spec.axes]
    for combo in itertools.product(*(v for _, v in spec.axes)):
        values = dict(zip(keys, combo))
        train, scorer_params = [], {}
        section = copy.deepcopy(spec.section)
        eval_overrides = []
        for key, value in values.items():
            kind = _kind(key)
            if kind == "train":
                if not spec.training:
                    raise UserError(f"grid key {key!r} changes training, but sweep.checkpoint is set (scoring-only "
                                    "sweep); remove one of the two")
                train.append(f"{key}={value}")
            elif kind == "scorer":
                _, name, param = key.split(".")
                scorer_params.setdefault(name, {})[param] = value
            else:
                eval_overrides.append(f"evaluate.{key.split('.', 1)[1]}={value}")
        if eval_overrides:
            data = apply_overrides(SweepSection, config_to_dict(section), eval_overrides)
            section = config_from_dict(SweepSection, data)
        config_from_dict(Config, apply_overrides(Config, spec.base, train))  # type check: one line naming the key
        scorers_from_spec(scorer_spec(section.evaluate.scorers, scorer_params))  # unknown scorer / parameter
        train_values = {k: v for k, v in values.items() if _kind(k) == "train"}
        out.append(SweepPoint(run_name(values), values, run_name(train_values), train, scorer_params, section))
    return out


def scorer_spec(base: str, params: dict[str, dict[str, str]]) -> str:
    """``base`` scorer spec with ``params`` appended to the items of the same name (added when absent)."""
    items = [s.strip() for s in base.split(",") if s.strip()]
    for name, settings in params.items():
        extra = "".join(f":{k}={v}" for k, v in settings.items())
        hits = [i for i, item in enumerate(items) if item.split(":")[0].strip() == name]
        if hits:
            for i in hits:
                items[i] += extra
        else:
            items.append(name + extra)
    return ",".join(items)


# ---------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------
def load_sweep(base: str | Path, grid: Sequence[str], *, out: str | Path | None = None, device: str | None = None
               ) -> SweepSpec:
    """Read BASE.yaml (a training config plus a ``sweep:`` section) and the grid; check every grid point."""
    data = read_yaml(base)
    section = config_from_dict(SweepSection, data.pop("sweep", None) or {})
    config_from_dict(Config, data)  # the training part must be a valid config on its own
    spec = SweepSpec(base=data, section=section, axes=parse_grid(grid), out=Path(out or section.out), device=device)
    points(spec)  # fail on a bad key before anything runs
    return spec


def fingerprint(spec: SweepSpec) -> str:
    """Hash of what every run shares (base config, sweep section); a change invalidates finished runs."""
    blob = json.dumps({"base": spec.base, "sweep": config_to_dict(spec.section)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------------
def result_path(spec: SweepSpec, point: SweepPoint) -> Path:
    return spec.out / "results" / f"{point.name}.json"


def is_finished(spec: SweepSpec, point: SweepPoint) -> bool:
    """Results file present with this point's values; a different fingerprint is a UserError."""
    from anomalyseg.report.results import read_results

    path = result_path(spec, point)
    if not path.is_file():
        return False
    try:
        record = read_results(path)
    except UserError:
        return False  # half-written or foreign: run again
    info = record.get("sweep") or {}
    if info.get("point") != point.values:
        return False
    if info.get("fingerprint") != fingerprint(spec):
        raise UserError(f"{path} was made with another base config or sweep settings; use another --out "
                        "(or delete the old results) instead of mixing them in one table")
    return True


def sweep(base: str | Path, grid: Sequence[str], *, out: str | Path | None = None, device: str | None = None,
          dry_run: bool = False) -> dict[str, Any]:
    """The ``sweep`` command: :func:`load_sweep` then :func:`run_sweep` (training + fit + evaluation per point)."""
    spec = load_sweep(base, grid, out=out, device=device)
    check_output(spec.out, "--out" if out is not None else "sweep.out", folder=True)
    return run_sweep(spec, dry_run=dry_run)


def run_sweep(spec: SweepSpec, runner: Runner | None = None, dry_run: bool = False) -> dict[str, Any]:
    """Run every unfinished grid point with ``runner`` (default :func:`train_and_evaluate`), write its
    results, then the sweep table. Returns ``{"runs": [{name, status}], "table": path}``."""
    from anomalyseg.report.results import write_results

    runner = runner or train_and_evaluate
    todo = points(spec)
    runs = []
    for i, point in enumerate(todo, 1):
        done = is_finished(spec, point)
        runs.append({"name": point.name, "status": "done" if done else "todo", "values": point.values})
        if dry_run or done:
            if done:
                log.info("[%d/%d] %s: finished earlier, skipped", i, len(todo), point.name)
            continue
        log.info("[%d/%d] %s", i, len(todo), point.name)
        started = time.time()
        record = dict(runner(point, spec))
        record.pop("format", None)
        record["sweep"] = {"point": point.values, "name": point.name, "fingerprint": fingerprint(spec),
                           "grid": {k: v for k, v in spec.axes}, "seconds": round(time.time() - started, 2)}
        write_results(record, result_path(spec, point), force=True)
        runs[-1]["status"] = "ran"
    table = None if dry_run else write_table(spec, todo)
    return {"runs": runs, "table": table}


def write_table(spec: SweepSpec, todo: Sequence[SweepPoint]) -> Path | None:
    """``table.md`` and ``table.csv`` over the finished points, grid values as columns."""
    from anomalyseg.report.render import table_csv, table_markdown
    from anomalyseg.report.results import load_result_sets
    from anomalyseg.report.tables import anomaly_table

    paths = [result_path(spec, p) for p in todo if result_path(spec, p).is_file()]
    if not paths:
        return None
    table = anomaly_table(load_result_sets(paths), with_miou=True)
    table.index = table.index[1:]  # the run label repeats the grid values shown in their own columns
    table.rows = [(text[1:], values) for text, values in table.rows]
    table.title = f"Sweep {spec.out.name}: " + ", ".join(k for k, _ in spec.axes)
    md = spec.out / "table.md"
    md.write_text(table_markdown(table), encoding="utf-8")
    (spec.out / "table.csv").write_text(table_csv(table), encoding="utf-8")
    return md


# ---------------------------------------------------------------------------------------------------
# The real runner: train (or resume) -> fit scorers -> evaluate
# ---------------------------------------------------------------------------------------------------
def _train(point: SweepPoint, spec: SweepSpec) -> Path:
    """Train the point's config into ``out/runs/<name>``, resuming an interrupted run; returns the checkpoint."""
    from anomalyseg.checkpoints.io import load_checkpoint
    from anomalyseg.workflows.train import train

    runs = spec.out / "runs"
    data = apply_overrides(Config, spec.base, [*point.train_overrides, f"out_dir={runs}",
                                               f"run_name={point.train_name}"])
    cfg = config_from_dict(Config, data)
    run_dir = runs / point.train_name
    last = run_dir / "checkpoints" / "last.pt"
    resume = None
    if last.is_file():
        loop = load_checkpoint(last).get("loop") or {}
        patience = cfg.train.early_stop_patience
        stopped = patience is not None and loop.get("bad_validations", 0) >= patience
        if loop.get("epoch", 0) >= cfg.train.epochs or stopped:
            log.info("%s: training %s finished earlier", point.name, point.train_name)
            return _best(run_dir)
        resume = run_dir
        log.info("%s: resuming training from epoch %d", point.name, loop.get("epoch", 0))
    elif run_dir.exists():  # started but no checkpoint yet: keep it aside, start clean
        aside = run_dir.with_name(f"{point.train_name}.incomplete-{time.strftime('%Y%m%d-%H%M%S')}")
        run_dir.rename(aside)
        log.warning("%s had no checkpoint (interrupted early); moved to %s", run_dir, aside.name)
    train(cfg, device=spec.device, resume=resume)
    return _best(run_dir)


def _best(run_dir: Path) -> Path:
    for name in ("best.pt", "last.pt"):
        if (run_dir / "checkpoints" / name).is_file():
            return run_dir / "checkpoints" / name
    raise UserError(f"{run_dir} holds no checkpoint after training")


def train_and_evaluate(point: SweepPoint, spec: SweepSpec) -> dict[str, Any]:
    """The default runner: train (unless the sweep has a checkpoint), fit the scorers that need it on
    ``fit_split`` (states in the run folder), evaluate, and return the results record."""
    from anomalyseg.workflows.evaluate import evaluate
    from anomalyseg.workflows.fit import fit_scorers

    s = point.settings
    ev = s.evaluate
    work = spec.out / "work" / point.name
    checkpoint = Path(s.checkpoint) if s.checkpoint else _train(point, spec)
    root = ev.data_root or config_from_dict(Config, spec.base).data.root
    scorers = scorer_spec(ev.scorers, point.scorer_params)
    try:
        size = size_wh(ev.size) if ev.size else None
    except argparse.ArgumentTypeError as exc:
        raise UserError(f"sweep.evaluate.size: {exc}") from None
    common: dict[str, Any] = {"size": size, "tta": ev.tta, "states": work / "scorers.pt", "batch_size": ev.batch_size,
                              "workers": ev.workers, "device": spec.device or "auto", "limit": ev.limit,
                              "progress": False, "force": True}
    fit_items = [item for item in scorers.split(",") if scorers_from_spec(item)[0].requires_fit]
    if fit_items:
        fit_scorers(checkpoint, root, split=s.fit_split, scorers=",".join(fit_items), **common)
    outputs = evaluate(checkpoint, root, work / "evaluation.json", split=ev.split, scorers=scorers,
                       protocol=ev.protocol, ignore=ev.ignore, eval_at=ev.eval_at, **common)
    return outputs[0].record
