"""Wall-clock accounting of an evaluation pass: seconds per stage, summarised across ranks."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist

from anomalyseg.metrics.base import distributed_ready


class StageTimer:
    """Wall-clock seconds per stage; on CUDA every stage ends with ``torch.cuda.synchronize`` so that
    asynchronous kernels are charged to the stage that launched them."""

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self.seconds: dict[str, float] = {}

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def __call__(self, *keys: str) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.add(time.perf_counter() - start, *keys)

    def add(self, seconds: float, *keys: str) -> None:
        for key in keys:
            self.seconds[key] = self.seconds.get(key, 0.0) + seconds


def timings_summary(seconds: dict[str, float], num_images: int) -> dict[str, Any]:
    """Stage totals of this rank (and, under torch.distributed, the slowest rank's) plus per-image means."""
    per_rank = [seconds]
    if distributed_ready():
        per_rank = [None] * dist.get_world_size()  # type: ignore[list-item]
        dist.all_gather_object(per_rank, seconds)
    slowest = {k: max(r.get(k, 0.0) for r in per_rank) for k in per_rank[0]}
    main = ("data", "transfer", "inference", "scoring", "metrics")
    summary = {f"{k}_s": round(slowest.get(k, 0.0), 4) for k in (*main, "loop")}
    busy = sum(slowest.get(k, 0.0) for k in ("inference", "scoring", "metrics")) or 1.0
    summary.update(
        images=num_images,
        ranks=len(per_rank),
        seconds_per_image=round(slowest.get("loop", 0.0) * len(per_rank) / max(num_images, 1), 4),
        share={k: round(slowest.get(k, 0.0) / busy, 4) for k in ("inference", "scoring", "metrics")},
        detail={k: round(v, 4) for k, v in sorted(slowest.items()) if k not in main and k != "loop"},
        note="seconds summed over the loop (slowest rank); CUDA synchronised at every stage boundary",
    )
    return summary
