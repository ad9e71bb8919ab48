"""Checkpoints in one home: the file format (:mod:`.io`: atomic save, ``weights_only`` load, sha256, RNG
states), input contracts (:mod:`.contract`), the one model-reload path (:mod:`.reload`), imports of other
codebases' checkpoints (:mod:`.foreign`) and the fitted scorer states kept beside a checkpoint
(:mod:`.scorer_states`).

>>> loaded = load_model("runs/r50", "cpu", class_names=STREETHAZARDS.class_names)
>>> loaded.model, loaded.contract, loaded.sha256

The names below are imported on first use (:mod:`anomalyseg.lazy`): they import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from anomalyseg.lazy import lazy_exports

if TYPE_CHECKING:
    from anomalyseg.checkpoints.contract import (
        InputContract,
        contract_from_checkpoint,
        parse_contract,
        resolve_contract,
    )
    from anomalyseg.checkpoints.foreign import import_checkpoint
    from anomalyseg.checkpoints.io import FORMAT, file_sha256, load_checkpoint, resolve_checkpoint, save_checkpoint
    from anomalyseg.checkpoints.reload import LoadedModel, load_model

_EXPORTS = {
    "InputContract": ".contract",
    "contract_from_checkpoint": ".contract",
    "parse_contract": ".contract",
    "resolve_contract": ".contract",
    "import_checkpoint": ".foreign",
    "FORMAT": ".io",
    "file_sha256": ".io",
    "load_checkpoint": ".io",
    "resolve_checkpoint": ".io",
    "save_checkpoint": ".io",
    "LoadedModel": ".reload",
    "load_model": ".reload",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "FORMAT",
    "InputContract",
    "LoadedModel",
    "contract_from_checkpoint",
    "file_sha256",
    "import_checkpoint",
    "load_checkpoint",
    "load_model",
    "parse_contract",
    "resolve_checkpoint",
    "resolve_contract",
    "save_checkpoint",
]
