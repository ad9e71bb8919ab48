"""The real-photo table: Road Anomaly, SegmentMeIfYouCan and Fishyscapes results side by side (one column
group per set and exact measurement setting; component metrics where they were computed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from anomalyseg.report.protocols import describe_key, protocol_key
from anomalyseg.report.render import Table
from anomalyseg.report.results import ResultSet

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
