"""Rebuilding a checkpoint's model: the ONE reload path of every command (evaluate, fit-scorers, visualize, ...).

The architecture named in the checkpoint is looked up in the closed model registry
(:func:`anomalyseg.models.build_model`): a name that the package or the user did not register is refused,
so a checkpoint can never name code to run. :func:`init_weights` loads a checkpoint's weights into a model
built for a new run (``train --init-from``: fine-tuning), with the same checks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from anomalyseg.checkpoints.contract import InputContract, contract_from_checkpoint, resolve_contract
from anomalyseg.checkpoints.io import (
    check_compatible,
    file_sha256,
    load_checkpoint,
    load_model_state,
    resolve_checkpoint,
)
from anomalyseg.errors import UserError


@dataclass
class LoadedModel:
    """A checkpoint's model in eval mode, with what the commands record about it."""

    model: nn.Module
    checkpoint: dict[str, Any]  # the checkpoint dict (config, class_names, epoch, ...; weights included)
    path: Path  # the checkpoint file (a run folder resolved to its best / last checkpoint)
    sha256: str
    contract: InputContract  # the stored contract with the command line's keys on top

    @property
    def num_outputs(self) -> int:
        """Output channels of the model (a void channel included)."""
        return int(self.checkpoint["num_classes"])

    def record(self) -> dict[str, Any]:
        """The ``checkpoint`` entry of a results record."""
        ckpt = self.checkpoint
        return {"path": str(self.path.resolve()), "sha256": self.sha256, "model_name": ckpt.get("model_name"),
                "epoch": ckpt.get("epoch"), "step": ckpt.get("step"), "imported_from": ckpt.get("imported_from")}


def load_model(
    checkpoint: str | Path,
    device: str | torch.device = "cpu",
    *,
    contract: str | None = None,
    class_names: Sequence[str] | None = None,
) -> LoadedModel:
    """Rebuild the checkpoint's model (no pretrained download, no aux head) in eval mode on ``device``.

    Args:
        checkpoint: a checkpoint file or a run folder.
        contract: ``KEY=VALUE,...`` keys laid over the checkpoint's input contract; a new normalisation
            builds the model with it (models written here take ``input_mean`` / ``input_std``).
        class_names: the known classes of the data it will see; the checkpoint must predict exactly these
            (a void channel of the contract aside), else a one-line UserError.
    """
    path = resolve_checkpoint(checkpoint)
    ckpt = load_checkpoint(path)
    resolved = resolve_contract(ckpt, contract)
    num_outputs = int(ckpt["num_classes"])
    if class_names is not None:
        _check_classes(path, ckpt, resolved, list(class_names))
    if resolved.num_outputs is not None and resolved.num_outputs != num_outputs:
        raise UserError(f"the input contract names {resolved.num_outputs} classes but {path} predicts {num_outputs}")
    model = _build(path, ckpt, resolved)
    load_model_state(model, ckpt["model"], source=str(path))
    return LoadedModel(model.to(device).eval(), ckpt, path, file_sha256(path), resolved)


def _check_classes(path: Path, ckpt: dict[str, Any], contract: InputContract, wanted: list[str]) -> None:
    known = len(contract.known_channels(int(ckpt["num_classes"])))
    if known != len(wanted):
        raise UserError(f"{path} predicts {known} classes but the dataset has {len(wanted)} known classes")
    names = ckpt.get("class_names")
    if names is not None and contract.void_index is None and list(names) != wanted:
        raise UserError(f"{path} was trained on classes {list(names)}, not the dataset's classes {wanted}")


def _build(path: Path, ckpt: dict[str, Any], contract: InputContract) -> nn.Module:
    from anomalyseg.config import ModelConfig
    from anomalyseg.configio import config_from_dict
    from anomalyseg.models import build_model

    cfg = config_from_dict(ModelConfig, (ckpt.get("config") or {}).get("model", {"name": ckpt.get("model_name")}))
    options = dict(cfg.options or {})
    stored = contract_from_checkpoint(ckpt)
    if (list(stored.mean), list(stored.std)) != (list(contract.mean), list(contract.std)):
        options.update(contract.model_options())
    try:
        model = build_model(cfg.name, int(ckpt["num_classes"]), pretrained=False, aux=False, **options)
    except TypeError as exc:
        raise UserError(f"{path}: model {cfg.name!r} does not take these options ({exc})") from None
    if not hasattr(model, "name"):
        model.name = cfg.name
    return model


def init_weights(model: nn.Module, checkpoint: str | Path, *, model_name: str, class_names: Sequence[str],
                 source: str = "model.init_from") -> dict[str, Any]:
    """Load only the weights of ``checkpoint`` (file or run folder) into ``model``, the start of a fine-tuning run.

    The checkpoint must hold a ``model_name`` model trained on exactly ``class_names``; an aux head may be
    missing on either side. Anything else (missing file, other architecture or classes) is a one-line
    UserError naming ``source``. Returns what the new run records: ``path, sha256, model_name, epoch, step``.
    """
    try:
        path = resolve_checkpoint(checkpoint)
    except UserError as exc:
        raise UserError(f"{source}: {exc}") from None
    ckpt = load_checkpoint(path)
    where = f"{source} {path}"
    check_compatible(ckpt, num_classes=len(class_names), model_name=model_name, source=where)
    stored = ckpt.get("class_names")
    if stored is not None and list(stored) != list(class_names):
        raise UserError(f"{where} was trained on classes {list(stored)}, not the dataset's classes {list(class_names)}")
    load_model_state(model, ckpt["model"], source=where)
    return {"path": str(path.resolve()), "sha256": file_sha256(path), "model_name": ckpt.get("model_name"),
            "epoch": ckpt.get("epoch"), "step": ckpt.get("step")}
