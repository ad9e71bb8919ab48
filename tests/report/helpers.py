"""Results records with the evaluation's exact schema, built from random scores through the real metric
accumulators (no model): fast inputs for the table, curve, report and sweep tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from anomalyseg.data import STREETHAZARDS
from anomalyseg.engine.evaluate import protocol_settings
from anomalyseg.metrics import AnomalyMetrics
from anomalyseg.report.results import write_results

SHAPE = (24, 32)


def fake_data(seed: int = 0, num_images: int = 4) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Labels (known ids, some anomaly 13, some 255) and a base signal per image."""
    rng = np.random.default_rng(seed)
    labels, signals = [], []
    for _ in range(num_images):
        label = rng.integers(0, 13, size=SHAPE)
        label[rng.uniform(size=SHAPE) < 0.12] = 13
        label[:1] = 255
        labels.append(label)
        signals.append(rng.normal(size=SHAPE))
    return labels, signals


def scores_for(labels: list[np.ndarray], signals: list[np.ndarray], separation: float) -> list[np.ndarray]:
    return [(s + separation * (lab == 13)).astype(np.float32) for lab, s in zip(labels, signals)]


def make_record(scorers: dict[str, float], *, seed: int = 0, ignore_ids: tuple[int, ...] = (), miou: float = 0.5,
                model_name: str = "tiny", protocols: tuple[str, ...] = ("per_image", "pooled")) -> dict[str, Any]:
    """A results record: each scorer's scores are the shared noise plus ``separation`` on anomaly pixels."""
    labels, signals = fake_data(seed)
    settings = {p: protocol_settings(p, ignore_ids, (13,), "label") for p in protocols}
    record: dict[str, Any] = {
        "checkpoint": {"path": f"/x/{model_name}.pt", "sha256": "ab" * 32, "model_name": model_name},
        "dataset": {"name": "StreetHazards", "split": "test", "num_images": len(labels)},
        "input": {"size_wh": None, "native": True, "tta": None},
        "segmentation": {"miou": miou, "pixel_accuracy": miou + 0.3, "mean_class_accuracy": miou + 0.1,
                         "per_class_iou": {n: miou for n in STREETHAZARDS.class_names}},
        "protocols": settings, "num_images": len(labels), "scorers": {},
        "per_image": [{"index": i, "id": f"t5/{i + 1}", "metrics": {}} for i in range(len(labels))],
    }
    for name, separation in scorers.items():
        entry: dict[str, Any] = {"kind": name, "params": {}, "requires_fit": False, "metrics": {}}
        for p in protocols:
            if p == "per_image":
                acc = AnomalyMetrics.streethazards(ignore_index=255 if ignore_ids else None)
            else:
                acc = AnomalyMetrics("pooled", ignore_index=255, fpr_rule="first")
            for label, score in zip(labels, scores_for(labels, signals, separation)):
                target = (label == 13).astype(np.int64)
                drop = np.isin(label, [*ignore_ids, 255])
                if p == "pooled" or ignore_ids:
                    target[drop] = 255
                acc.update(torch.from_numpy(score)[None], torch.from_numpy(target)[None])
            entry["metrics"][p] = {**acc.compute(), "protocol_settings": settings[p]}
            if p == "pooled":
                entry["curve"] = acc.curve(max_points=512)
            else:
                for rec, values in zip(record["per_image"], acc.per_image):
                    rec["metrics"][name] = {k: values.get(k) for k in ("auroc", "aupr", "fpr95")}
        record["scorers"][name] = entry
    return record


def write_record(path: Path, record: dict[str, Any]) -> Path:
    return write_results(record, path)["json"]
