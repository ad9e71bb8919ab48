"""Comparison tables over several results files: model x scorer anomaly metrics per protocol, segmentation
and per-class IoU per model, and (:mod:`anomalyseg.report.real_tables`) the real-photo sets.

Protocols are never mixed: a column group is one exact protocol (:mod:`anomalyseg.report.protocols`), so two
``per_image`` results measured differently land in two numbered groups, each explained in the table notes. The
best value of every column is marked (bold; lowest for FPR95, highest otherwise; ties all marked). Rendering:
:mod:`anomalyseg.report.render` (Markdown, CSV, LaTeX) and :mod:`anomalyseg.report.html`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from anomalyseg.report.protocols import protocol_groups, protocol_key
from anomalyseg.report.real_tables import real_set_key, real_sets_table
from anomalyseg.report.render import Table
from anomalyseg.report.results import ResultSet

#: Anomaly metrics in table order, with the direction that is better.
ANOMALY_METRICS: tuple[tuple[str, str, str], ...] = (("fpr95", "FPR95", "min"), ("auroc", "AUROC", "max"),
                                                      ("aupr", "AUPR", "max"))


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
