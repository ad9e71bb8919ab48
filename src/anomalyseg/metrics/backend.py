"""Which side of a "numpy on CPU, torch elsewhere" branch a tensor takes, decided in one place.

On this project's CPUs numpy's integer, masking and elementwise kernels are several times faster than
torch's, so the hot paths (histogram adds, confusion counts, score checks, anomaly targets, RbA / GEN) run
through numpy for CPU tensors and through torch for any other device. Every such branch asks
:func:`numpy_path`. Inside :func:`torch_path_on_cpu` it answers ``False`` for CPU tensors too, so the tests
run the torch side (the one CUDA takes) on CPU tensors and compare it with the numpy side and with an
independent reference: a bug on either side fails a test on a machine without a GPU.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

_force_torch = False  # process-wide (not a context variable): the evaluation's metric threads must see it too


def numpy_path(tensor: torch.Tensor) -> bool:
    """True when ``tensor`` should take the numpy side: it is on the CPU and the torch side is not forced."""
    return tensor.device.type == "cpu" and not _force_torch


@contextmanager
def torch_path_on_cpu() -> Iterator[None]:
    """Make every dispatch take its torch side, CPU tensors included (for tests; not thread-local)."""
    global _force_torch
    previous, _force_torch = _force_torch, True
    try:
        yield
    finally:
        _force_torch = previous
