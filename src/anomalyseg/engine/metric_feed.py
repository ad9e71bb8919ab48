"""The metric side of an evaluation pass: each scorer's map goes to its accumulators (one per protocol),
optionally on worker threads beside the next batch's loading and inference; per-image records are gathered
across ranks in dataset order."""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch
import torch.distributed as dist

from anomalyseg.engine.timing import StageTimer
from anomalyseg.errors import UserError
from anomalyseg.metrics import AnomalyMetrics
from anomalyseg.metrics.anomaly import check_finite
from anomalyseg.metrics.base import distributed_ready

PER_IMAGE_KEYS = ("auroc", "aupr", "fpr95")


class MetricFeed:
    """Hands each scorer's map to its accumulators (one per protocol); with ``pool``, on its threads, and
    :meth:`wait` is called only before the NEXT batch is scored, so the metric work of a batch runs beside the
    loading and inference of the next one (the scores of at most two batches are alive). Each accumulator
    still sees its batches in order, so results do not depend on the threads. Seconds per scorer go to the
    timer as ``metrics/<name>`` (thread time: with threads they sum to more than the wall)."""

    def __init__(self, accs: dict[str, dict[str, AnomalyMetrics]], timer: StageTimer,
                 pool: ThreadPoolExecutor | None) -> None:
        self.accs, self.timer, self.pool = accs, timer, pool
        self.pending: list[tuple[str, Future[float]]] = []
        self.records: list[tuple[str, list[dict[str, Any]]]] = []  # per-image values still to copy

    def _work(self, name: str, protocol: str, score: torch.Tensor, target: torch.Tensor) -> float:
        start = time.perf_counter()
        self.accs[name][protocol].update(score, target)
        if self.timer.device.type == "cuda":
            torch.cuda.synchronize(self.timer.device)
        return time.perf_counter() - start

    def submit(self, name: str, score: torch.Tensor, targets: dict[str, torch.Tensor],
               records: list[dict[str, Any]]) -> None:
        """Start the metric work of ``name`` on this batch; its per-image values go into ``records``."""
        try:
            check_finite(score)
        except ValueError as exc:
            raise UserError(f"scorer '{name}' produced non-finite scores: {exc}") from None
        for p in self.accs[name]:
            if self.pool is None:
                self.timer.add(self._work(name, p, score, targets[p]), f"metrics/{name}")
            else:
                self.pending.append((name, self.pool.submit(self._work, name, p, score, targets[p])))
        if "per_image" in self.accs[name]:
            self.records.append((name, records))
        if self.pool is None:
            self.wait()

    def wait(self) -> None:
        """Finish the submitted work and copy its per-image values into the batch records."""
        for name, future in self.pending:
            self.timer.add(future.result(), f"metrics/{name}")
        self.pending = []
        for name, records in self.records:
            for rec, values in zip(records, self.accs[name]["per_image"].per_image[-len(records):]):
                rec.setdefault("num_anomaly", values["num_positive"])
                rec.setdefault("num_normal", values["num_negative"])
                rec["metrics"][name] = {k: values.get(k) for k in PER_IMAGE_KEYS}
        self.records = []


def gather_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every rank's per-image records, in dataset order."""
    if distributed_ready():
        parts: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, records)
        records = [r for part in parts for r in part]
    records = sorted(records, key=lambda r: r["position"])
    return [{"index": i, **{k: v for k, v in r.items() if k != "position"}} for i, r in enumerate(records)]
