"""The checkpoint file: format, atomic writes, ``weights_only`` loads, sha256, RNG capture, weight loading.

A checkpoint is a plain dict of tensors and primitive containers (so ``torch.load(weights_only=True)``
reads it without executing code):

``format, model_name, num_classes, has_aux, class_names, ignore_index, anomaly_id, model`` (state dict),
``optimizer, scheduler, scaler, epoch`` (epochs completed), ``step`` (optimizer steps done),
``batch_in_epoch`` (batches of the current epoch consumed; 0 at an epoch boundary), ``rng`` (one entry per
rank), ``config`` (resolved, as a dict), ``best`` (best metric / epoch / validations without improvement),
``history`` (one dict per validation), ``versions``; ``init_from`` (path, sha256, ... of the checkpoint whose
weights started the run, or None) and ``outlier_exposure`` (the resolved outlier-loss settings, or None).
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from anomalyseg.errors import UserError
from anomalyseg.files import atomic_write, load_torch_file

log = logging.getLogger(__name__)

FORMAT = "anomalyseg.checkpoint/1"


def unwrap(model: nn.Module) -> nn.Module:
    """The bare module inside DDP / ``torch.compile`` wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def save_checkpoint(path: str | Path, payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` to ``path`` atomically (:func:`anomalyseg.files.atomic_write`): a crash mid-write
    leaves the previous file intact, readers see the old or the new checkpoint, never half."""
    return atomic_write(path, lambda fh: torch.save(dict(payload), fh))


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file (ties results and fitted scorer states to one version of a checkpoint)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def resolve_checkpoint(path: str | Path) -> Path:
    """The checkpoint file for a file or a run folder (``checkpoints/best.pt``, ``checkpoints/last.pt``,
    ``best.pt``, first found); a missing one is a UserError."""
    path = Path(path)
    if path.is_dir():
        for candidate in (path / "checkpoints" / "best.pt", path / "checkpoints" / "last.pt", path / "best.pt"):
            if candidate.is_file():
                return candidate
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint (file or run folder, see :func:`resolve_checkpoint`) with ``weights_only=True``;
    a missing or foreign file is a one-line UserError."""
    path = resolve_checkpoint(path)
    ckpt = load_torch_file(path, "checkpoint", map_location=map_location)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise UserError(f"{path} is not an anomalyseg checkpoint (no 'model' entry)")
    if ckpt.get("format", FORMAT) != FORMAT:
        raise UserError(f"{path} has checkpoint format {ckpt.get('format')!r}; this version reads {FORMAT!r}")
    return ckpt


# ---------------------------------------------------------------------------------------------------
# RNG states as tensors / primitives (weights_only-safe)
# ---------------------------------------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch (and CUDA, when initialised) generator states of this process."""
    py = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": py[0], "state": torch.tensor(py[1], dtype=torch.int64), "gauss": py[2]},
        "numpy": {
            "kind": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda = [s.cpu() for s in state["cuda"]]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
        else:
            log.warning("checkpoint has %d CUDA RNG states, this machine %d GPUs: CUDA RNG not restored",
                        len(cuda), torch.cuda.device_count())


# ---------------------------------------------------------------------------------------------------
# Model weights
# ---------------------------------------------------------------------------------------------------
def load_model_state(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load weights through :func:`anomalyseg.models.load_model_state` (strict, aux heads optional on either
    side); a class-count or architecture mismatch is a UserError that also names ``source``."""
    from anomalyseg.models import load_model_state as load_strict

    try:
        load_strict(unwrap(model), state, strict=True)
    except UserError as exc:
        raise UserError(f"{source}: {exc}") from None


def check_compatible(
    ckpt: Mapping[str, Any], *, num_classes: int | None = None, model_name: str | None = None, source: str = ""
) -> None:
    """Raise a UserError when the checkpoint was trained for another class count or architecture."""
    where = source or "checkpoint"
    if num_classes is not None and int(ckpt.get("num_classes", -1)) != int(num_classes):
        raise UserError(
            f"{where} predicts {ckpt.get('num_classes')} classes but the dataset has {num_classes} known classes"
        )
    if model_name is not None and ckpt.get("model_name") != model_name:
        raise UserError(f"{where} holds a {ckpt.get('model_name')!r} model, not {model_name!r}")
