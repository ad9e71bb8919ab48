"""Evaluation results on disk: one JSON (everything), plus a CSV and a Markdown table beside it.

``NAME.json`` holds the record :mod:`anomalyseg.engine.eval_cli` builds (config, checkpoint and hash,
dataset, protocols, per-scorer metrics, pooled curves, per-image values, timings, versions); ``NAME.csv``
one row per (scorer, protocol); ``NAME.md`` a table to paste into a paper or an issue. Non-finite numbers
are written as ``null`` (strict JSON). Nothing existing is overwritten unless ``force``.
Several files load as :class:`ResultSet` rows of the comparison tables (:func:`load_result_sets`).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anomalyseg.constants import DETECTION_RULE
from anomalyseg.errors import UserError
from anomalyseg.files import atomic_write, check_output
from anomalyseg.report.render import fmt

RESULTS_FORMAT = "anomalyseg.results/1"
METRIC_KEYS = ("auroc", "aupr", "fpr95")
CSV_COLUMNS = (
    "scorer", "kind", "protocol", "fpr_rule", "ignore_ids", "eval_at", "auroc", "aupr", "fpr95", "best_f1",
    "num_images", "num_images_skipped", "num_positive", "num_negative", "miou", "split", "checkpoint",
)


def result_paths(out: str | Path) -> dict[str, Path]:
    """``{"json", "csv", "md"}`` paths for ``out`` (``results/NAME.json`` -> NAME.csv / NAME.md beside it)."""
    out = Path(out)
    stem = out.name[: -len(".json")] if out.name.lower().endswith(".json") else out.name  # keep dots: lr0.01
    return {ext: out.with_name(f"{stem}.{ext}") for ext in ("json", "csv", "md")}


def check_writable(out: str | Path, force: bool = False) -> dict[str, Path]:
    """Refuse (one line) to overwrite existing result files unless ``force``; returns the paths."""
    if Path(out).is_dir():
        raise UserError(f"--out {out} is a folder; give a results file name such as {Path(out) / 'results.json'}")
    paths = result_paths(out)
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not force:
        raise UserError(f"result file(s) already exist: {', '.join(existing)} (choose another --out, or --force "
                        "to overwrite)")
    for p in paths.values():
        if p.exists() and p.is_dir():
            raise UserError(f"{p} is a folder, not a result file")
        if p.parent.exists() and not p.parent.is_dir():
            raise UserError(f"cannot write {p}: {p.parent} is not a folder")
        check_output(p, "--out")
    return paths


def jsonable(obj: Any) -> Any:
    """Plain JSON data: NaN / inf -> None, tuples -> lists, paths -> str, tensors / numpy -> lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # torch / numpy scalars and arrays
        return jsonable(obj.tolist())
    return obj


def write_results(results: Mapping[str, Any], out: str | Path, force: bool = False) -> dict[str, Path]:
    """Write ``results`` as JSON + CSV + Markdown (see module docstring); returns the three paths."""
    paths = check_writable(out, force)
    record = jsonable({"format": RESULTS_FORMAT, **results})
    atomic_write(paths["json"], json.dumps(record, indent=1, allow_nan=False) + "\n")
    atomic_write(paths["csv"], to_csv(record))
    atomic_write(paths["md"], to_markdown(record))
    return paths


def read_results(path: str | Path) -> dict[str, Any]:
    """Load a results JSON written by :func:`write_results` (a one-line UserError for anything else)."""
    path = result_paths(path)["json"]
    if not path.is_file():
        raise UserError(f"results file not found: {path}")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(record, dict) or record.get("format") != RESULTS_FORMAT:
        raise UserError(f"{path} is not an anomalyseg results file (format {RESULTS_FORMAT!r})")
    check_record(record, path)
    return record


def check_record(record: Mapping[str, Any], path: str | Path) -> None:
    """One-line :class:`UserError` naming ``path`` (and the scorer) unless the record holds something to report:
    at least one scorer, each ``{"metrics": {protocol: {metric: value}}}`` (or, from a dataset without anomaly
    labels, segmentation metrics and no anomaly protocol)."""
    scorers = record.get("scorers")
    if scorers is None:
        scorers = {}
    if not isinstance(scorers, Mapping):
        raise UserError(f"{path}: 'scorers' must map scorer names to their results, got {type(scorers).__name__}")
    segmentation = record.get("segmentation")
    if segmentation is not None and not isinstance(segmentation, Mapping):
        raise UserError(f"{path}: 'segmentation' must hold the segmentation metrics, got {type(segmentation).__name__}")
    if not scorers and not segmentation:
        raise UserError(f"{path} holds no scorer and no segmentation metrics: nothing to report")
    if not scorers and record.get("protocols"):
        raise UserError(f"{path} holds no scorer results although anomaly protocols were measured "
                        f"({', '.join(map(str, record['protocols']))}): the file is incomplete")
    for name, entry in scorers.items():
        metrics = entry.get("metrics") if isinstance(entry, Mapping) else None
        if not isinstance(metrics, Mapping) or not all(isinstance(m, Mapping) for m in metrics.values()):
            raise UserError(f"{path}: the entry of scorer '{name}' is broken (expected {{'metrics': {{protocol: "
                            "{metric: value}}}, as written by 'anomalyseg evaluate')")


def metric_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One flat row per (scorer, protocol): the CSV's content."""
    miou = (results.get("segmentation") or {}).get("miou")
    split = (results.get("dataset") or {}).get("split")
    ckpt = (results.get("checkpoint") or {}).get("path")
    rows = []
    for name, entry in (results.get("scorers") or {}).items():
        for protocol, m in entry.get("metrics", {}).items():
            if protocol == "components":  # not a protocol: the component metrics have their own columns
                continue
            settings = m.get("protocol_settings", {})
            rows.append({
                "scorer": name, "kind": entry.get("kind"), "protocol": protocol, "fpr_rule": m.get("fpr_rule"),
                "ignore_ids": " ".join(str(i) for i in settings.get("ignore_ids", [])),
                "eval_at": settings.get("eval_at"),
                **{k: m.get(k) for k in ("auroc", "aupr", "fpr95", "best_f1", "num_images", "num_images_skipped",
                                         "num_positive", "num_negative")},
                "miou": miou, "split": split, "checkpoint": ckpt,
            })
    return rows


def to_csv(results: Mapping[str, Any]) -> str:
    """CSV text of :func:`metric_rows` (metrics as fractions, empty where undefined)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in metric_rows(results):
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in CSV_COLUMNS})
    return buf.getvalue()


def to_markdown(results: Mapping[str, Any]) -> str:
    """A Markdown summary: provenance, mIoU, and AUROC / AUPR / FPR95 (%) per scorer and protocol."""
    seg = results.get("segmentation") or {}
    ds = results.get("dataset") or {}
    ck = results.get("checkpoint") or {}
    protocols = list(results.get("protocols") or {})
    lines = [f"# Evaluation: {ds.get('name', 'dataset')} {ds.get('split', '')}".rstrip(), ""]
    if ck:
        lines.append(f"- checkpoint: `{ck.get('path')}` (sha256 `{str(ck.get('sha256', ''))[:12]}`)")
    lines.append(f"- images: {results.get('num_images')}" + (f" from `{ds.get('root')}`" if ds.get("root") else ""))
    lines.append(f"- closed-set mIoU: {fmt(seg.get('miou'))} % ({seg.get('note', '')})")
    for p, s in (results.get("protocols") or {}).items():
        ignore = f", ignored ids {s.get('ignore_ids')}" if s.get("ignore_ids") else ""
        lines.append(f"- protocol `{p}`: FPR95 rule '{s.get('fpr_rule')}', {s.get('aggregation')}; "
                     f"{s.get('pixels')}{ignore}; evaluated at {s.get('eval_at')} resolution")
    if results.get("tta"):
        t = results["tta"]
        lines.append(f"- TTA: scales {t.get('scales')}, flip {t.get('flip')} (logits averaged)")
    lines += ["", "Metrics in %; FPR95 lower is better.", ""]
    scorers = results.get("scorers") or {}
    components = [e["metrics"]["components"] for e in scorers.values() if "components" in e.get("metrics", {})]
    if components:
        c = components[0]
        lines.insert(-3, f"- components: SegmentMeIfYouCan {c.get('track')} track, each map binarised as "
                         f"{c.get('binarised', DETECTION_RULE)} at its {c.get('threshold_source', 'threshold')}; "
                         f"evaluated at {c.get('eval_at')} resolution")
    header = ["scorer"] + [f"{p} {k.upper()}" for p in protocols for k in METRIC_KEYS]
    header += ["sIoU gt", "PPV", "mean F1"] if components else []
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
    for name, entry in scorers.items():
        cells = [name]
        for p in protocols:
            m = entry.get("metrics", {}).get(p, {})
            cells += [fmt(m.get(k)) for k in METRIC_KEYS]
        if components:
            c = entry.get("metrics", {}).get("components") or {}
            cells += [fmt(c.get(k)) for k in ("siou_gt", "ppv", "f1_mean")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------
# Several results files, for comparison tables
# ---------------------------------------------------------------------------------------------------
@dataclass
class ResultSet:
    """One results file: a label for its row(s), where it came from, its record and optional tags
    (e.g. a sweep's grid values) shown as extra columns."""

    label: str
    path: Path | None
    record: dict[str, Any]
    tags: dict[str, str] = field(default_factory=dict)


def best_scorer(record: Mapping[str, Any], protocol: str = "pooled", metric: str = "aupr") -> str | None:
    """The scorer with the best ``metric`` under ``protocol`` in one results record (None if none has it)."""
    lower_better = metric == "fpr95"
    best, best_value = None, None
    for name, entry in (record.get("scorers") or {}).items():
        value = ((entry.get("metrics") or {}).get(protocol) or {}).get(metric)
        if value is None or not math.isfinite(value):
            continue
        if best_value is None or (value < best_value if lower_better else value > best_value):
            best, best_value = name, value
    return best


def load_result_sets(paths: Iterable[str | Path]) -> list[ResultSet]:
    """Read results files; labels are file stems (parent folder prepended where stems repeat). A record with
    a ``sweep`` entry gets its grid values as tags."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise UserError("no results file given")
    stems = [p.with_suffix("").name for p in paths]
    sets = []
    for path, stem in zip(paths, stems):
        record = read_results(path)
        label = f"{path.parent.name}/{stem}" if stems.count(stem) > 1 else stem
        point = (record.get("sweep") or {}).get("point") or {}
        sets.append(ResultSet(label, path, record, {str(k): str(v) for k, v in point.items()}))
    return sets
