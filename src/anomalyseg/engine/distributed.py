"""``torchrun`` support: process-group setup from the environment, rank-0 helpers, buffer sync.

No module-level state: :func:`init_distributed` returns a :class:`DistContext` that callers pass along.
Under ``torchrun`` only rank 0 logs INFO: the other ranks' ``anomalyseg`` logger shows warnings and errors
(every rank would otherwise print each progress line once).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from anomalyseg.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: ``rank`` of ``world_size`` on ``device``; ``owns_group`` when it created it."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str | torch.device | None, local_rank: int = 0) -> torch.device:
    """``auto`` -> ``cuda:<local_rank>`` when available, else CPU; ``cuda`` gets the local rank as index."""
    name = str(name or "auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r} (use cpu, cuda, cuda:N or auto)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device {name!r} requested but CUDA is not available; use --device cpu")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        if device.index >= torch.cuda.device_count():
            raise UserError(f"device {device} does not exist ({torch.cuda.device_count()} GPUs)")
    return device


def init_distributed(device: str | torch.device | None = "auto") -> DistContext:
    """Join the process group that ``torchrun`` describes (RANK / WORLD_SIZE / LOCAL_RANK), if any.

    Backend: NCCL on CUDA, gloo on CPU. Without those variables this is a single-process context.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(device=resolve_device(device))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if rank != 0:
        quiet_non_main()
    dev = resolve_device(device, local_rank)
    if dist.is_initialized():
        return DistContext(rank, world, local_rank, dev, owns_group=False)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    log.debug("rank %d/%d on %s", rank, world, dev)
    return DistContext(rank, world, local_rank, dev, owns_group=True)


def quiet_non_main() -> None:
    """Raise this process's ``anomalyseg`` logger to ERROR: the logging rule of a rank other than 0.

    Every rank reaches the same warnings (a config's ``train.amp`` without CUDA, a pretrained fallback), so
    rank 0 alone logs INFO and WARNING; the others log errors only (what only one rank sees, e.g. its count of
    unreadable samples, is gathered and logged by rank 0). Called by :func:`init_distributed`, the first step
    of every training / evaluation / fitting workflow, before any of them logs.
    """
    logger = logging.getLogger("anomalyseg")
    if logger.getEffectiveLevel() < logging.ERROR:
        logger.setLevel(logging.ERROR)


def cleanup(ctx: DistContext) -> None:
    """Destroy the process group if this context created it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (a no-op in a single process)."""
    if ctx.distributed:
        dist.barrier()


def broadcast_object(ctx: DistContext, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(ctx: DistContext, obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def sync_buffers(ctx: DistContext, model: nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running stats) to every rank, so evaluation and checkpoints agree.

    DDP broadcasts buffers at the START of each forward, so after the last training step ranks differ.
    """
    if not ctx.distributed:
        return
    for buf in model.buffers():
        dist.broadcast(buf.data, src=0)
