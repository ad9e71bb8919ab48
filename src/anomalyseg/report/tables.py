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
    #: per group, how it was measured (shown under the group's name; empty: nothing to show)
    details: list[str] = field(default_factory=list)
    #: Markdown names the group only at its first column (wide groups, e.g. one per dataset)
    compact: bool = False

    def group_title(self, index: int) -> str:
        """The group's name with its detail in parentheses."""
        label = self.groups[index][0]
        detail = self.details[index] if index < len(self.details) else ""
        return f"{label} ({detail})" if detail else label

    @property
    def headers(self) -> list[str]:
        return [f"{self.group_title(i)} {m}".strip() for i, (_, metrics) in enumerate(self.groups) for m in metrics]

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
def eval_resolution(record: Mapping[str, Any], protocol: str) -> str:
    """Where the metrics of ``protocol`` were measured: ``label`` (the masks' native resolution) or the model
    input (``model 512x1024``: its H x W from the input contract, or ``model <= WxH`` for a ``--size``)."""
    s = (record.get("protocols") or {}).get(protocol) or {}
    eval_at = s.get("eval_at")
    if eval_at not in ("model", "input"):
        return str(eval_at) if eval_at is not None else "label"
    size_wh = (record.get("input") or {}).get("size_wh")
    if size_wh:
        return f"model <= {size_wh[0]}x{size_wh[1]} (WxH, aspect kept)"
    size = (record.get("input_contract") or {}).get("size")
    return f"model {size[0]}x{size[1]}" if size else "model"


def _resolution_text(resolution: str) -> str:
    if resolution == "label":
        return "the label resolution"
    if resolution.startswith("model "):
        return f"the model input ({resolution[len('model '):]})"
    return f"the {resolution} resolution"


def skips_empty_images(record: Mapping[str, Any], protocol: str) -> bool:
    """Whether ``protocol`` left out the images without anomaly pixels (``skip_images_without_anomaly``)."""
    return bool(((record.get("protocols") or {}).get(protocol) or {}).get("skip_images_without_anomaly"))


def protocol_key(record: Mapping[str, Any], protocol: str) -> tuple[Any, ...]:
    """What must be equal for two numbers to share a column."""
    ds = record.get("dataset") or {}
    s = (record.get("protocols") or {}).get(protocol) or {}
    return (ds.get("name"), ds.get("split"), protocol, s.get("fpr_rule"), tuple(s.get("ignore_ids") or ()),
            eval_resolution(record, protocol), tuple(s.get("anomaly_ids") or ()), skips_empty_images(record, protocol))


def describe_key(key: tuple[Any, ...], record: Mapping[str, Any]) -> str:
    """One sentence saying exactly how a group was measured."""
    name, split, protocol, rule, ignore, resolution, anomaly, skip = key[:8]
    s = (record.get("protocols") or {}).get(protocol) or {}
    official = " (official StreetHazards protocol)" if s.get("official_streethazards") else ""
    where = f"{name} {split}" if split and str(split) not in str(name) else str(name)
    parts = [f"{where}, `{protocol}`{official}: {s.get('aggregation', '')}",
             f"FPR95 rule '{rule}'", str(s.get("pixels", "")), f"anomaly ids {list(anomaly)}",
             f"evaluated at {_resolution_text(resolution)}"]
    if ignore:
        parts.append(f"ignored ids {list(ignore)}")
    if skip:
        parts.append("images without anomaly pixels left out")
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
    if inp.get("native", True) or not inp.get("size_wh"):
        size = "native"
    else:  # stored as --size W x H; shown H x W like the input contract ("size=512x1024 (HxW)")
        w, h = inp["size_wh"]
        size = f"{h}x{w} (HxW)"
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


#: Real-photo columns: (key in the pooled metrics or in ``metrics["components"]``, header, better).
REAL_METRICS: tuple[tuple[str, str, str], ...] = (("aupr", "AuPRC", "max"), ("fpr95", "FPR95", "min"))
COMPONENT_METRICS: tuple[tuple[str, str, str], ...] = (("siou_gt", "sIoU", "max"), ("ppv", "PPV", "max"),
                                                       ("f1_mean", "mean F1", "max"))
#: Short column-group names of the real-photo sets (the README's).
SHORT_NAMES = {"road_anomaly": "RoadAnomaly", "smiyc_ra21": "RA21", "smiyc_ro21": "RO21", "fs_static": "FS Static",
               "fs_lost_found": "FS L&F"}


def real_set_key(record: Mapping[str, Any]) -> str | None:
    """The real-photo set (preset) a record was measured on; None for StreetHazards, Cityscapes, ..."""
    return (record.get("dataset") or {}).get("preset") or None


def _components(entry: Mapping[str, Any]) -> Mapping[str, Any] | None:
    c = (entry.get("metrics") or {}).get("components")
    return c if isinstance(c, Mapping) else None


def _tracks(record: Mapping[str, Any]) -> tuple[str, ...]:
    """The component-metric tracks of a record's scorers (empty: no component metrics)."""
    tracks = {str(c.get("track")) for e in (record.get("scorers") or {}).values() if (c := _components(e))}
    return tuple(sorted(tracks))


def _threshold_sources(record: Mapping[str, Any]) -> str:
    """How the component metrics' thresholds were chosen (``threshold_source`` of evaluate), one text."""
    sources = {str(c.get("threshold_source") or "stored threshold")
               for e in (record.get("scorers") or {}).values() if (c := _components(e))}
    return " / ".join(sorted(sources))


def _model_label(rs: ResultSet) -> str:
    """``enet_road_anomaly`` -> ``enet``: evaluate writes ``NAME_<set>.json`` per set."""
    key = real_set_key(rs.record) or ""
    return rs.label[: -len(key) - 1] if key and rs.label.endswith(f"_{key}") else rs.label


def set_order(key: str) -> int:
    """Position of a real-photo set in the registry (Road Anomaly, RA21, RO21, FS Static, FS L&F); others last."""
    from anomalyseg.data.anomaly_presets import PRESETS

    order = list(PRESETS)
    return order.index(key) if key in order else len(order)


def _real_group_key(record: Mapping[str, Any], protocol: str) -> tuple[Any, ...]:
    """:func:`protocol_key` plus the component track(s): what must be equal to share a real-photo column."""
    return (*protocol_key(record, protocol), _tracks(record))


def _real_group_detail(key: tuple[Any, ...]) -> str:
    """The column-group line: protocol, FPR95 rule, skip setting (when on), track (when any), resolution."""
    protocol, rule, resolution, skip, tracks = key[2], key[3], key[5], key[7], key[8]
    bits = [protocol, f"FPR95 {rule}"]
    if skip:
        bits.append("images without anomaly skipped")
    if tracks:
        bits.append("track " + "/".join(tracks))
    if resolution == "label":
        bits.append("at label res.")
    else:
        bits.append(f"at model input {resolution[len('model '):]}" if resolution.startswith("model ")
                    else f"at {resolution}")
    return ", ".join(bits)


def real_sets_table(sets: Sequence[ResultSet], protocol: str = "pooled") -> Table | None:
    """One table for the real-photo sets: scorers as rows (with the model where several are given), one column
    group per set and measurement setting: AuPRC and FPR95 under ``protocol``, and sIoU / PPV / mean F1 where
    the scorers' ``metrics["components"]`` were computed. A group is one exact setting (:func:`protocol_key`
    plus the component track): the same set measured two ways gives two groups, never one column. Groups
    follow the sets' registry order (Road Anomaly, RA21, RO21, FS Static, FS L&F)."""
    members = [rs for rs in sets if real_set_key(rs.record) and protocol in (rs.record.get("protocols") or {})]
    if not members:
        return None
    models = list(dict.fromkeys(_model_label(rs) for rs in members))
    keys: dict[tuple[Any, ...], ResultSet] = {}  # group key -> first record measured that way
    for rs in sorted(members, key=lambda r: (set_order(real_set_key(r.record) or ""), models.index(_model_label(r)))):
        keys.setdefault(_real_group_key(rs.record, protocol), rs)  # by set, then by model (files' order)
    group_keys = list(keys)
    columns = [REAL_METRICS + (COMPONENT_METRICS if key[-1] else ()) for key in group_keys]
    offsets = [sum(len(c) for c in columns[:i]) for i in range(len(columns))]
    width = sum(len(c) for c in columns)
    real_names = {k for k, _, _ in REAL_METRICS}

    rows: dict[tuple[str, str], list[float | None]] = {}
    for rs in members:
        g = group_keys.index(_real_group_key(rs.record, protocol))
        for scorer, entry in (rs.record.get("scorers") or {}).items():
            values = rows.setdefault((_model_label(rs), scorer), [None] * width)
            pooled = (entry.get("metrics") or {}).get(protocol) or {}
            components = _components(entry) or {}
            for i, (name, _, _) in enumerate(columns[g]):
                value = (pooled if name in real_names else components).get(name)
                values[offsets[g] + i] = float(value) if isinstance(value, (int, float)) else None

    labels = [SHORT_NAMES.get(real_set_key(rs.record) or "", (rs.record.get("dataset") or {}).get("name") or "?")
              for rs in keys.values()]
    details = [_real_group_detail(key) for key in group_keys]
    titles = list(zip(labels, details))
    for title in set(titles):  # the same visible title for two settings (e.g. other ignored ids): number them
        where = [i for i, t in enumerate(titles) if t == title]
        for n, i in enumerate(where if len(where) > 1 else [], 1):
            labels[i] = f"{labels[i]} [{n}]"
    notes = []
    for key, rs, label, detail in zip(group_keys, keys.values(), labels, details):
        note = f"{label} ({detail}): {describe_key(key, rs.record)}"
        if key[-1]:
            note += (f"; sIoU / PPV / mean F1: SegmentMeIfYouCan component-level metrics, track {'/'.join(key[-1])}, "
                     f"each map binarised at its {_threshold_sources(rs.record)}; thresholds in "
                     "metrics.components.threshold")
        notes.append(note)
    notes.append("AuPRC = average precision (anomaly = positive); metrics in %; best value per column in bold "
                 "(FPR95: lowest; the others: highest); '-': not computed.")
    several = len(models) > 1
    return Table(title="Real photos: anomaly segmentation", index=["model", "scorer"] if several else ["scorer"],
                 groups=[(label, [h for _, h, _ in c]) for label, c in zip(labels, columns)],
                 rows=[([m, s] if several else [s], v) for (m, s), v in rows.items()],
                 better=[b for c in columns for _, _, b in c], notes=notes, key="real_sets", details=details,
                 compact=True)


def build_tables(sets: Sequence[ResultSet]) -> list[Table]:
    """Segmentation, anomaly and (where possible) per-class tables of the StreetHazards-style results, and one
    table over the real-photo sets (:func:`real_sets_table`) where there are any."""
    real = real_sets_table(sets)
    in_real = {id(rs) for rs in sets if real is not None and real_set_key(rs.record)
               and "pooled" in (rs.record.get("protocols") or {})}
    others = [rs for rs in sets if id(rs) not in in_real]
    tables: list[Table] = []
    if others:
        tables += [segmentation_table(others), anomaly_table(others)]
        per_class = per_class_table(others)
        if per_class is not None:
            tables.append(per_class)
    if real is not None:
        tables.append(real)
    return tables


# ---------------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------------
def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def table_markdown(table: Table) -> str:
    """A GitHub-flavoured Markdown table with its title and notes; best values bold."""
    best = table.best()
    head = [*table.index, *(_compact_headers(table) if table.compact else table.headers)]
    lines = [f"## {table.title}", "", "| " + " | ".join(_md_escape(h) for h in head) + " |",
             "|" + "|".join(["---"] * len(table.index) + ["---:"] * len(table.headers)) + "|"]
    for r, (text, values) in enumerate(table.rows):
        cells = [_md_escape(t) for t in text]
        cells += [f"**{fmt(v)}**" if r in best[c] else fmt(v) for c, v in enumerate(values)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"- {_md_escape(n)}" for n in table.notes]
    return "\n".join(lines) + "\n"


def _compact_headers(table: Table) -> list[str]:
    """The group's title on its first column only (``RoadAnomaly (pooled, ...) AuPRC``, ``FPR95``, ...)."""
    return [f"{table.group_title(i)} {m}".strip() if j == 0 else m
            for i, (_, metrics) in enumerate(table.groups) for j, m in enumerate(metrics)]


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
        lines.append(" & ".join(cells) + r" \\")
        if any(table.details):
            cells = [""] * len(table.index) + [
                rf"\multicolumn{{{len(m)}}}{{c}}{{\footnotesize {latex_escape(d)}}}" if d else ""
                for (_, m), d in zip(table.groups, [*table.details, *[""] * len(table.groups)])]
            lines.append(" & ".join(cells) + r" \\")
        lines.append(" ".join(rules))
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
