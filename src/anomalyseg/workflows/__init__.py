"""anomalyseg.workflows: whole jobs as plain functions, called the same way by the CLI, the notebook and the tests.

A workflow wires the lower layers (``engine`` loops, loaders, checkpoints; ``data`` registry; ``models``) into
one job and returns where it wrote its results; the ``anomalyseg`` command only parses arguments and calls it.
Layers point one way: cli -> workflows -> report / viz -> engine -> scoring -> models -> data -> metrics.

* :func:`anomalyseg.workflows.train.train` (also exported here as ``train_model``): config -> run folder with
  checkpoints, resumable exactly, DDP under ``torchrun``.

The names below are imported on first use (:mod:`anomalyseg.lazy`), so ``import anomalyseg.workflows`` is
torch-free. ``train`` is exported as ``train_model`` because the package attribute ``train`` is the submodule
``anomalyseg.workflows.train`` once it has been imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from anomalyseg.lazy import lazy_exports

if TYPE_CHECKING:
    from anomalyseg.workflows.train import train as train_model

_EXPORTS = {
    "train_model": ".train:train",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["train_model"]
