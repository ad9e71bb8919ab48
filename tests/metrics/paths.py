"""Run a callable on both sides of the package's "numpy on CPU / torch elsewhere" branches."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from anomalyseg.metrics.backend import torch_path_on_cpu

T = TypeVar("T")
PATHS = ("numpy", "torch")


def on_path(path: str, fn: Callable[[], T]) -> T:
    """``fn()`` with every dispatch on ``path``: ``"numpy"`` (what CPU tensors take) or ``"torch"`` (what CUDA
    tensors take, run here on CPU tensors)."""
    if path == "numpy":
        return fn()
    assert path == "torch", path
    with torch_path_on_cpu():
        return fn()
