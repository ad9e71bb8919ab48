"""Comparison tables over several results files: model x scorer anomaly metrics per protocol, segmentation
per model, rendered as Markdown, CSV and LaTeX (HTML: :mod:`anomalyseg.report.html`).

Protocols are never mixed: a column group is one exact protocol -- dataset, split, protocol name, FPR95
rule, ignored ids and evaluation resolution -- so two ``per_image`` results measured differently land in two
numbered groups, each explained in the table notes. The best value of every column is marked (bold;
lowest for FPR95, highest otherwise; ties all marked).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anomalyseg.errors import UserError

#: Anomaly metrics in table order, with the direction that is better.
ANOMALY_METRICS: tuple[tuple[str, str, str], ...] = (("fpr95", "FPR95", "min"), ("auroc", "AUROC", "max"),
                                                      ("aupr", "AUPR", "max"))


@dataclass
class ResultSet:
    """One results file: a label for its row(s), where it came from, its record and optional tags
    (e.g. a sweep's grid values) shown as extra columns."""

    label: str
    path: Path | None
    record: dict[str, Any]
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class Table:
    """A table of text columns (``index``) followed by numeric columns in ``groups``; values are fractions
    (shown as %) or None; ``better`` is "min" / "max" per numeric column."""

    title: str
    index: list[str]
    groups: list[tuple[str, list[str]]]
    rows: list[tuple[list[str], list[float | None]]]
    better: list[str]
    notes: list[str] = field(default_factory=list)
    key: str = ""

    @property
    def headers(self) -> list[str]:
        return [f"{g} {m}".strip() for g, metrics in self.groups for m in metrics]

    def best(self) -> list[set[int]]:
        """Per numeric column, the row positions holding the best value (none when all values are equal)."""
        marks: list[set[int]] = []
        for c, direction in enumerate(self.better):
            values = [(r, v[c]) for r, (_, v) in enumerate(self.rows) if v[c] is not None and math.isfinite(v[c])]
            if not values:
                marks.append(set())
                continue
            if len({v for _, v in values}) < 2:  # one row, or all equal: nothing stands out
                marks.append(set())
                continue
            pick = min if direction == "min" else max
            target = pick(v for _, v in values)
            marks.append({r for r, v in values if v == target})
        return marks


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


def fmt(value: float | None, digits: int = 2) -> str:
    """A fraction as a percentage (``0.1234`` -> ``12.34``); ``-`` when missing."""
    return "-" if value is None or not math.isfinite(value) else f"{100 * value:.{digits}f}"


# ---------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------
def load_result_sets(paths: Iterable[str | Path]) -> list[ResultSet]:
    """Read results files; labels are file stems (parent folder prepended where stems repeat). A record with
    a ``sweep`` entry gets its grid values as tags."""
    from anomalyseg.report.results import read_results

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


# ---------------------------------------------------------------------------------------------------
# Protocol groups
# ---------------------------------------------------------------------------------------------------
def protocol_key(record: Mapping[str, Any], protocol: str) -> tuple[Any, ...]:
    """What must be equal for two numbers to share a column."""
    ds = record.get("dataset") or {}
    s = (record.get("protocols") or {}).get(protocol) or {}
    return (ds.get("name"), ds.get("split"), protocol, s.get("fpr_rule"), tuple(s.get("ignore_ids") or ()),
            s.get("eval_at"), tuple(s.get("anomaly_ids") or ()))


def describe_key(key: tuple[Any, ...], record: Mapping[str, Any]) -> str:
    """One sentence saying exactly how a group was measured."""
    name, split, protocol, rule, ignore, eval_at, anomaly = key
    s = (record.get("protocols") or {}).get(protocol) or {}
    official = " (official StreetHazards protocol)" if s.get("official_streethazards") else ""
    parts = [f"{name} {split}, `{protocol}`{official}: {s.get('aggregation', '')}",
             f"FPR95 rule '{rule}'", str(s.get("pixels", "")), f"anomaly ids {list(anomaly)}",
             f"evaluated at {eval_at} resolution"]
    if ignore:
        parts.append(f"ignored ids {list(ignore)}")
    return "; ".join(p for p in parts if p)


def protocol_groups(sets: Sequence[ResultSet]) -> list[tuple[tuple[Any, ...], str, str]]:
    """Distinct protocol groups in first-seen order: ``(key, column label, note)``. Labels are the protocol
    name, numbered when one name covers several settings."""
    keys: dict[tuple[Any, ...], str] = {}
    for rs in sets:
        for protocol in rs.record.get("protocols") or {}:
            key = protocol_key(rs.record, protocol)
            keys.setdefault(key, describe_key(key, rs.record))
    names = [k[2] for k in keys]
    several = {n for n in names if names.count(n) > 1}
    counter: dict[str, int] = {}
    out = []
    for key, note in keys.items():
        label = key[2]
        if label in several:
            counter[label] = counter.get(label, 0) + 1
            label = f"{label} [{counter[label]}]"
        out.append((key, label, note))
    return out


# ---------------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------------
def _tag_names(sets: Sequence[ResultSet]) -> list[str]:
    return list(dict.fromkeys(k for rs in sets for k in rs.tags))


def _input_text(record: Mapping[str, Any]) -> str:
    inp = record.get("input") or {}
    size = "native" if inp.get("native", True) or not inp.get("size_wh") else "x".join(map(str, inp["size_wh"]))
    return size + (f", TTA {inp['tta']}" if inp.get("tta") else "")


def anomaly_table(sets: Sequence[ResultSet], with_miou: bool = False) -> Table:
    """One row per (model, scorer); FPR95 / AUROC / AUPR per protocol group (``with_miou``: the model's
    closed-set mIoU first, for one-table summaries such as sweeps)."""
    groups = protocol_groups(sets)
    tags = _tag_names(sets)
    rows = []
    for rs in sets:
        lookup = {protocol_key(rs.record, p): p for p in rs.record.get("protocols") or {}}
        miou = (rs.record.get("segmentation") or {}).get("miou")
        for scorer, entry in (rs.record.get("scorers") or {}).items():
            values: list[float | None] = [miou] if with_miou else []
            for key, _, _ in groups:
                m = (entry.get("metrics") or {}).get(lookup[key], {}) if key in lookup else {}
                values += [m.get(k) for k, _, _ in ANOMALY_METRICS]
            rows.append(([rs.label, *[rs.tags.get(t, "") for t in tags], scorer], values))
    notes = [f"{label}: {note}" for _, label, note in groups]
    notes.append("Metrics in %; best value per column in bold (FPR95: lowest; AUROC, AUPR, mIoU: highest).")
    head = [("", ["mIoU"])] if with_miou else []
    return Table(
        title="Anomaly segmentation", index=["model", *tags, "scorer"],
        groups=head + [(label, [h for _, h, _ in ANOMALY_METRICS]) for _, label, _ in groups],
        rows=rows, better=["max"] * len(head) + [b for _ in groups for _, _, b in ANOMALY_METRICS], notes=notes,
        key="anomaly")


def segmentation_table(sets: Sequence[ResultSet]) -> Table:
    """One row per model: closed-set mIoU, pixel accuracy and mean class accuracy."""
    tags = _tag_names(sets)
    rows = []
    splits = set()
    for rs in sets:
        seg = rs.record.get("segmentation") or {}
        ds = rs.record.get("dataset") or {}
        splits.add((ds.get("name"), ds.get("split")))
        ck = rs.record.get("checkpoint") or {}
        rows.append(([rs.label, *[rs.tags.get(t, "") for t in tags], str(ck.get("model_name") or ""),
                      f"{ds.get('name', '')} {ds.get('split', '')}".strip(), _input_text(rs.record),
                      str(rs.record.get("num_images", ""))],
                     [seg.get("miou"), seg.get("pixel_accuracy"), seg.get("mean_class_accuracy")]))
    notes = ["Closed-set metrics over the known classes; anomaly and ignored pixels excluded. Metrics in %; "
             "best per column in bold."]
    if len(splits) > 1:
        notes.append("Rows come from different datasets / splits (see the 'data' column): compare with care.")
    return Table(title="Closed-set segmentation", index=["model", *tags, "architecture", "data", "input", "images"],
                 groups=[("", ["mIoU", "pixel acc.", "mean class acc."])], rows=rows, better=["max"] * 3,
                 notes=notes, key="segmentation")


def per_class_table(sets: Sequence[ResultSet]) -> Table | None:
    """Per-class IoU (rows: models; columns: classes), when every model shares one class list."""
    names: list[str] | None = None
    rows = []
    for rs in sets:
        per = (rs.record.get("segmentation") or {}).get("per_class_iou") or {}
        if names is None:
            names = list(per)
        if list(per) != names:
            return None
        rows.append(([rs.label], [per[n] for n in names]))
    if not names:
        return None
    return Table(title="Per-class IoU", index=["model"], groups=[("", names)], rows=rows, better=["max"] * len(names),
                 notes=["IoU in %; best per class in bold."], key="per_class")


def build_tables(sets: Sequence[ResultSet]) -> list[Table]:
    """Segmentation, anomaly and (where possible) per-class tables."""
    tables = [segmentation_table(sets), anomaly_table(sets)]
    per_class = per_class_table(sets)
    if per_class is not None:
        tables.append(per_class)
    return tables


# ---------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------
def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def table_markdown(table: Table) -> str:
    """A GitHub-flavoured Markdown table with its title and notes; best values bold."""
    best = table.best()
    head = [*table.index, *table.headers]
    lines = [f"## {table.title}", "", "| " + " | ".join(_md_escape(h) for h in head) + " |",
             "|" + "|".join(["---"] * len(table.index) + ["---:"] * len(table.headers)) + "|"]
    for r, (text, values) in enumerate(table.rows):
        cells = [_md_escape(t) for t in text]
        cells += [f"**{fmt(v)}**" if r in best[c] else fmt(v) for c, v in enumerate(values)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"- {_md_escape(n)}" for n in table.notes]
    return "\n".join(lines) + "\n"


def to_markdown(tables: Sequence[Table], title: str = "Results") -> str:
    return f"# {title}\n\n" + "\n".join(table_markdown(t) for t in tables)


def table_csv(table: Table) -> str:
    """CSV: the text columns, every numeric column as a fraction, and ``best`` naming the columns in which
    the row is best."""
    best = table.best()
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([*table.index, *table.headers, "best"])
    for r, (text, values) in enumerate(table.rows):
        marked = [h for c, h in enumerate(table.headers) if r in best[c]]
        writer.writerow([*text, *("" if v is None else repr(float(v)) for v in values), ";".join(marked)])
    return buf.getvalue()


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(c, c) for c in str(text))


def table_latex(table: Table) -> str:
    """A ``booktabs`` tabular (needs ``\\usepackage{booktabs}``) with grouped headers; best values bold."""
    best = table.best()
    arrows = {"min": r"$\downarrow$", "max": r"$\uparrow$"}
    spec = "l" * len(table.index) + "".join("r" * len(m) for _, m in table.groups)
    lines = [f"% {table.title}", r"\begin{tabular}{" + spec + "}", r"\toprule"]
    if any(g for g, _ in table.groups):
        cells, rules, col = [""] * len(table.index), [], len(table.index) + 1
        for g, metrics in table.groups:
            cells.append(rf"\multicolumn{{{len(metrics)}}}{{c}}{{{latex_escape(g)}}}")
            rules.append(rf"\cmidrule(lr){{{col}-{col + len(metrics) - 1}}}")
            col += len(metrics)
        lines += [" & ".join(cells) + r" \\", " ".join(rules)]
    metric_cells, c = [], 0
    for _, metrics in table.groups:
        for m in metrics:
            metric_cells.append(f"{latex_escape(m)} {arrows[table.better[c]]}")
            c += 1
    lines += [" & ".join([latex_escape(h) for h in table.index] + metric_cells) + r" \\", r"\midrule"]
    for r, (text, values) in enumerate(table.rows):
        cells = [latex_escape(t) for t in text]
        cells += [rf"\textbf{{{fmt(v)}}}" if r in best[c] else fmt(v) for c, v in enumerate(values)]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [f"% {n}" for n in table.notes]
    return "\n".join(lines) + "\n"


def to_latex(tables: Sequence[Table]) -> str:
    return "% generated by anomalyseg report; needs \\usepackage{booktabs}\n\n" + "\n".join(
        table_latex(t) for t in tables)
