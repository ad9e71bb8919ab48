"""Protocol groups of comparison tables: what must be equal for two numbers to share a column.

A group is one exact protocol -- dataset, split, protocol name, FPR95 rule, ignored ids, anomaly ids,
evaluation resolution and the empty-image setting -- so two ``per_image`` results measured differently land in
two numbered groups, each explained by :func:`describe_key` in the table notes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from anomalyseg.report.results import ResultSet


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
