"""Importing checkpoints of other codebases (PyTorch-ENet, ERFNet) into anomalyseg's format, with their input
contract, so ``evaluate`` reads them without retyping how they must be fed.

>>> ckpt = import_checkpoint("enet_cityscapes_void20.pth", "enet", "size=512x1024,norm=none,void=19,classes=cityscapes",
...                          out="enet_void20.pt")
"""

from __future__ import annotations

import logging
import platform
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from anomalyseg.checkpoints.contract import InputContract, parse_contract
from anomalyseg.checkpoints.io import FORMAT, file_sha256, save_checkpoint
from anomalyseg.errors import UserError
from anomalyseg.files import check_output, load_torch_file

log = logging.getLogger(__name__)

#: Keys under which foreign training scripts nest the weights (davidtvs: ``state_dict``; others: ``model``...).
_NESTED_KEYS = ("state_dict", "model_state_dict", "model", "net", "network")
#: The last layer of each architecture written here: (state-dict key, dimension holding the class count).
_CLASSIFIER = {"enet": ("transposed_conv.weight", 1), "erfnet": ("decoder.output_conv.weight", 1)}


def read_foreign_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The weights in a checkpoint saved by another codebase: a bare state dict or one nested under
    ``state_dict`` / ``model`` / ...; DataParallel ``module.`` and ``_orig_mod.`` prefixes removed."""
    from anomalyseg.models.state import strip_wrapper_prefixes

    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    obj = load_torch_file(path, "checkpoint")
    for _ in range(3):
        if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return strip_wrapper_prefixes(obj)
        nested = next((obj[k] for k in _NESTED_KEYS if isinstance(obj, Mapping) and isinstance(obj.get(k), Mapping)),
                      None)
        if nested is None:
            break
        obj = nested
    raise UserError(f"{path} holds no state dict (a mapping of names to tensors, bare or under one of "
                    f"{', '.join(_NESTED_KEYS)})")


def num_outputs_of(arch: str, state: Mapping[str, torch.Tensor]) -> int | None:
    """Class count read off the last layer of a state dict of ``arch`` (architectures written here)."""
    key, dim = _CLASSIFIER.get(arch, (None, 0))
    if key is None or key not in state or state[key].dim() <= dim:
        return None
    return int(state[key].shape[dim])


def import_checkpoint(
    path: str | Path,
    arch: str,
    contract: InputContract | str,
    out: str | Path | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Convert a foreign checkpoint into an anomalyseg checkpoint that ``evaluate`` reads without retyping.

    The weights are loaded strictly into ``build_model(arch, ...)`` (one-line error listing missing /
    unexpected keys otherwise); the result holds the project's keys (``format``, ``model_name``,
    ``num_classes``, ``class_names``, ``model``, ``config``: see :mod:`anomalyseg.checkpoints.io`) plus
    ``input_contract`` and ``imported_from`` (source path and sha256). Written to ``out`` when given
    (refused if it exists, unless ``force``). Returns the checkpoint dict.
    """
    from anomalyseg.models.registry import build_model
    from anomalyseg.models.state import load_model_state

    if isinstance(contract, str):
        contract = parse_contract(contract)
    if out is not None and Path(out).exists() and not force:
        raise UserError(f"{out} exists; pass force=True (--force) to replace it")
    if out is not None:
        check_output(out, "--out")
    state = read_foreign_state(path)
    found = num_outputs_of(arch, state)
    num_outputs = contract.num_outputs or found
    if num_outputs is None:
        raise UserError(f"cannot tell how many classes {path} predicts: give classes=... in the input contract")
    if found is not None and contract.num_outputs is not None and found != contract.num_outputs:
        raise UserError(f"{path} predicts {found} classes but the input contract names {contract.num_outputs} "
                        f"({', '.join(contract.class_names[:3])}, ...)")
    if contract.void_index is not None and contract.void_index >= num_outputs:
        raise UserError(f"void channel {contract.void_index} does not exist: {path} has {num_outputs} outputs")
    options = contract.model_options()
    model = build_model(arch, num_outputs, pretrained=False, aux=False, **options)
    report = load_model_state(model, state, strict=True)
    names = list(contract.class_names) or [f"class_{i}" for i in range(num_outputs)]
    ckpt: dict[str, Any] = {
        "format": FORMAT,
        "model_name": arch,
        "num_classes": num_outputs,
        "has_aux": False,
        "class_names": names,
        "ignore_index": 255,
        "anomaly_id": None,
        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "config": {"model": {"name": arch, "pretrained": False, "aux": False, "options": options}},
        "input_contract": replace(contract, class_names=tuple(names)).to_dict(),
        "imported_from": {"path": str(Path(path).resolve()), "sha256": file_sha256(path), "arch": arch,
                          "tensors": len(state), "dropped_aux_keys": len(report.dropped_aux)},
        "epoch": None,
        "step": None,
        "versions": {"torch": str(torch.__version__), "python": platform.python_version()},
    }
    if out is not None:
        save_checkpoint(out, ckpt)
        log.info("imported %s (%s, %d outputs; %s) -> %s", path, arch, num_outputs, contract.describe(), out)
    return ckpt
