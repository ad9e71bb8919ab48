"""``write_report``: tables (Markdown, CSV, LaTeX), curve and threshold figures (PNG) and one self-contained
HTML page from several results files, plus any panels (``panels.json`` of ``anomalyseg visualize``) found
beside them. Real-photo sets (results of ``evaluate --dataset ...``, panels of ``visualize --dataset ...``)
get a section each on the page: the set's own table next to its panels."""

from __future__ import annotations

import glob
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from anomalyseg.errors import UserError
from anomalyseg.files import atomic_write, check_output, output_errors
from anomalyseg.report import html as H
from anomalyseg.report.real_tables import set_order
from anomalyseg.report.render import table_csv, to_latex, to_markdown
from anomalyseg.report.results import ResultSet, best_scorer, load_result_sets
from anomalyseg.report.tables import anomaly_table, build_tables

log = logging.getLogger(__name__)

OUTPUTS = ("report.html", "summary.md", "tables.tex")
PANELS_MANIFEST = "panels.json"


def expand_inputs(items: Iterable[str | Path]) -> list[Path]:
    """Files, folders (their ``*.json`` results) and glob patterns -> results files, in order, no repeats.
    ``panels.json`` manifests and other non-results JSON files found in folders are skipped."""
    from anomalyseg.report.results import RESULTS_FORMAT

    out: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            for candidate in sorted(path.glob("*.json")):
                try:
                    head = json.loads(candidate.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    continue
                if isinstance(head, dict) and head.get("format") == RESULTS_FORMAT:
                    out.append(candidate)
        elif any(c in str(item) for c in "*?[") and not path.exists():
            matches = sorted(Path(p) for p in glob.glob(str(item)))
            if not matches:
                raise UserError(f"no file matches {item}")
            out += matches
        else:
            if path.is_file() and path.suffix.lower() != ".json":
                kind = "a checkpoint?" if path.suffix.lower() in (".pt", ".pth", ".ckpt") else "not a .json file"
                raise UserError(f"report reads results JSON files written by 'anomalyseg evaluate --out NAME.json' "
                                f"(or folders of them); got {path} ({kind})")
            out.append(path)
    unique = list(dict.fromkeys(p.resolve() for p in out))
    if not unique:
        raise UserError("no results file found in " + ", ".join(str(i) for i in items))
    return unique


def find_panels(sets: Sequence[ResultSet], extra: Iterable[str | Path] = (), depth: int = 2) -> list[Path]:
    """``panels.json`` manifests in the results' folders (and their subfolders, ``depth`` levels) and in
    ``extra`` folders (and theirs: ``visualize --dataset`` writes one subfolder per real-photo set)."""
    extra = [Path(p) for p in extra]
    roots = [rs.path.parent for rs in sets if rs.path is not None] + extra
    found: list[Path] = []
    for root in roots:
        for level in range(depth + 1):
            found += sorted(root.glob("/".join(["*"] * level + [PANELS_MANIFEST])))
    for p in extra:
        if not any(f.resolve().is_relative_to(p.resolve()) for f in found) and p.is_dir():
            raise UserError(f"--panels {p}: no {PANELS_MANIFEST} there (write it with `anomalyseg visualize`)")
    return list(dict.fromkeys(f.resolve() for f in found))


def read_manifests(paths: Iterable[Path]) -> list[tuple[Path, dict[str, Any]]]:
    """``(path, manifest)`` of every readable ``panels.json`` (unreadable ones are skipped with a warning)."""
    out = []
    for path in paths:
        try:
            m = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("skipping unreadable panels manifest %s: %s", path, exc)
            continue
        if isinstance(m, dict):
            out.append((path, m))
        else:
            log.warning("skipping panels manifest %s: not a JSON object", path)
    return out


def _set_key(m: dict[str, Any]) -> str | None:
    """The real-photo set a manifest was drawn on (None: StreetHazards)."""
    return (m.get("dataset") or {}).get("key") if isinstance(m.get("dataset"), dict) else None


def shown_path(path: str | Path, out: str | Path, absolute: bool = False) -> str:
    """How the report names a file it read: relative to the report folder when both lie inside the current
    working directory (so the page names no folder of the machine that made it), else the file name alone;
    ``absolute=True`` (opt-in) gives the absolute path."""
    path = Path(path).resolve()
    if absolute:
        return str(path)
    here = Path.cwd().resolve()
    out = Path(out).resolve()
    if path.is_relative_to(here) and out.is_relative_to(here):
        return Path(os.path.relpath(path, out)).as_posix()
    return path.name


def _manifest_figures(path: Path, m: dict[str, Any], max_panels: int, section: str, legend: bool,
                      shown: Callable[[Path], str] = str) -> list[H.Figure]:
    where = path.parent
    thr = (m.get("threshold") or {}).get("label")
    what = f"{m.get('scorer')} on {m.get('model_name')} ({m.get('split')}), threshold {thr}"
    mode = (m.get("selection") or {}).get("mode")
    at = f", evaluated at the {m['eval_at']} resolution" if m.get("eval_at") else ""
    figures: list[H.Figure] = []
    if m.get("grid") and (where / m["grid"]).is_file():
        figures.append(H.Figure(f"Comparison grid: {what}", H.png_file(where / m["grid"]),
                                f"{len(m.get('samples', []))} samples, selection {mode}{at}; from {shown(where)}",
                                section))
    for s in m.get("samples", [])[:max_panels]:
        if (where / s["file"]).is_file():
            figures.append(H.Figure(f"Panel {s['id']}: {what}", H.png_file(where / s["file"]), "", section))
    if legend and m.get("legend") and (where / m["legend"]).is_file():
        figures.append(H.Figure("Colour legend", H.png_file(where / m["legend"]), "", section))
    return figures


def _panel_figures(manifests: Sequence[tuple[Path, dict[str, Any]]], max_panels: int,
                   shown: Callable[[Path], str] = str) -> list[H.Figure]:
    """StreetHazards panels (one legend for all)."""
    figures: list[H.Figure] = []
    legend_done = False
    for path, m in manifests:
        figs = _manifest_figures(path, m, max_panels, "Qualitative panels", not legend_done, shown)
        legend_done = legend_done or any(f.title == "Colour legend" for f in figs)
        figures += figs
    return figures


def real_set_sections(sets: Sequence[ResultSet], manifests: Sequence[tuple[Path, dict[str, Any]]],
                      max_panels: int, shown: Callable[[Path], str] = str) -> list[H.Section]:
    """One section per real-photo set found in the results or the panels: that set's anomaly table (its
    results files only) and its panels (``anomalyseg visualize --dataset ...`` writes ``OUT/<set>/``)."""
    names: dict[str, str] = {}
    for rs in sets:
        ds = rs.record.get("dataset") or {}
        if ds.get("preset"):
            names.setdefault(ds["preset"], ds.get("name") or ds["preset"])
    for _, m in manifests:
        key = _set_key(m)
        if key:
            names.setdefault(key, m["dataset"].get("name") or key)

    sections = []
    for key, name in sorted(names.items(), key=lambda item: set_order(item[0])):  # registry order, stable
        members = [rs for rs in sets if (rs.record.get("dataset") or {}).get("preset") == key]
        tables = []
        if members:
            table = anomaly_table(members)
            table.title, table.key = f"{name}: anomaly segmentation", f"anomaly_{key}"
            tables.append(table)
        figures: list[H.Figure] = []
        for path, m in manifests:
            if _set_key(m) == key:
                figures += _manifest_figures(path, m, max_panels, name, legend=True, shown=shown)
        convention = next(((rs.record.get("dataset") or {}).get("mask_convention") for rs in members), None)
        notes = [f"Real photos with an anomaly mask only ({convention or '0 normal, 1 anomaly, 255 void'}): no "
                 "closed-set ground truth, so no mIoU; each panel is titled with the image's own AUPR / FPR95 "
                 "(non-void pixels) and the detection precision / recall / F1 at the drawn threshold. Void "
                 "pixels are white and not counted."]
        if not figures:
            notes.append(f"No panels for this set: `anomalyseg visualize --dataset {key} --results RESULTS.json "
                         "--out DIR` with DIR beside the results (or pass --panels DIR/<set>).")
        sections.append(H.Section(name, tables, figures, notes))
    return sections


def _check_outputs(out: Path, force: bool) -> None:
    existing = [str(out / n) for n in OUTPUTS if (out / n).exists()]
    if existing and not force:
        raise UserError(f"report file(s) already exist: {', '.join(existing)} (choose another --out, or --force)")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder")
    check_output(out, "--out", folder=True)


def write_report(
    inputs: Iterable[str | Path],
    out: str | Path,
    *,
    title: str = "anomalyseg report",
    sensitivity_scorer: str | None = None,
    panels: Iterable[str | Path] = (),
    max_panels: int = 6,
    force: bool = False,
    dpi: int = 100,
    absolute_paths: bool = False,
) -> dict[str, Path]:
    """Write ``report.html``, ``summary.md``, ``<table>.csv``, ``tables.tex`` and ``figures/*.png`` to ``out``.

    ``sensitivity_scorer``: the scorer whose threshold sensitivity is plotted per results file (default:
    each file's best pooled AUPR). The page names the files it read relative to ``out`` (see :func:`shown_path`;
    ``absolute_paths=True`` writes absolute ones). Returns the written paths by name.
    """
    from anomalyseg.viz.curves import pr_roc_figure, stored_curves, threshold_figure
    from anomalyseg.viz.panels import save_figure

    out = Path(out)
    _check_outputs(out, force)
    sets = load_result_sets(expand_inputs(inputs))
    tables = build_tables(sets)
    figures: list[H.Figure] = []
    written: dict[str, Path] = {}
    with output_errors(out / "figures"):
        (out / "figures").mkdir(parents=True, exist_ok=True)
    for rs in sets:
        if not stored_curves(rs.record):
            log.info("%s holds no pooled curve: no PR / ROC figure for it", rs.label)
            continue
        fig = pr_roc_figure(rs.record, f"{rs.label}: pooled curves (all pixels of all images)", dpi=dpi)
        written[f"curves_{rs.label}"] = save_figure(fig, out / "figures" / f"curves_{_file_part(rs.label)}.png")
        figures.append(H.Figure(f"PR and ROC curves: {rs.label}", H.figure_png(fig), _provenance(rs), "Curves"))
        scorer = sensitivity_scorer or best_scorer(rs.record)
        if scorer is not None:
            if scorer not in (rs.record.get("scorers") or {}):
                log.warning("%s has no scorer %r: no threshold-sensitivity plot for it", rs.label, scorer)
                continue
            fig = threshold_figure(rs.record, scorer, dpi=dpi)
            name = f"threshold_{_file_part(rs.label)}_{_file_part(scorer)}.png"
            written[f"threshold_{rs.label}"] = save_figure(fig, out / "figures" / name)
            figures.append(H.Figure(f"Threshold sensitivity: {rs.label} / {scorer}", H.figure_png(fig),
                                    "Detections are score >= t; pooled curve.", "Threshold sensitivity"))
    manifests = read_manifests(find_panels(sets, panels))
    def shown(path: Path) -> str:
        return shown_path(path, out, absolute_paths)

    figures += _panel_figures([(p, m) for p, m in manifests if _set_key(m) is None], max_panels, shown)
    sections = real_set_sections(sets, manifests, max_panels, shown)
    meta = [f"{len(sets)} results file(s): "
            + ", ".join(f"{rs.label} ({shown(rs.path) if rs.path is not None else 'in memory'})" for rs in sets),
            f"generated {time.strftime('%Y-%m-%d %H:%M:%S')}"]
    written["html"] = _write(out / "report.html", H.build_html(title, tables, figures, meta, sections))
    written["markdown"] = _write(out / "summary.md", to_markdown(tables, title))
    written["latex"] = _write(out / "tables.tex", to_latex(tables))
    for table in tables:
        written[f"csv_{table.key}"] = _write(out / f"{table.key}.csv", table_csv(table))
    return written


def _provenance(rs: ResultSet) -> str:
    ck = rs.record.get("checkpoint") or {}
    ds = rs.record.get("dataset") or {}
    return (f"model {ck.get('model_name')} (checkpoint sha256 {str(ck.get('sha256', ''))[:12]}), "
            f"{ds.get('name')} {ds.get('split')}, {rs.record.get('num_images')} images; legend: pooled protocol (%)")


def _file_part(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def _write(path: Path, text: str) -> Path:
    return atomic_write(path, text)
