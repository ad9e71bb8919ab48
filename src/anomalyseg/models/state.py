"""Loading saved weights into a built model, with errors a user can act on.

Handles what checkpoints of this field look like in practice: a ``module.`` (DistributedDataParallel) or
``_orig_mod.`` (torch.compile) prefix, a checkpoint trained with an auxiliary head loaded into a model
without one (aux keys dropped) and the reverse (aux head left as initialised: it is unused at inference),
and a different class count or architecture (one line naming the keys that do not fit).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from anomalyseg.errors import UserError
from anomalyseg.models.base import AUX_PREFIXES

log = logging.getLogger(__name__)

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


@dataclass
class LoadReport:
    """What :func:`load_model_state` did besides loading."""

    dropped_aux: list[str] = field(default_factory=list)
    missing_aux: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)


def strip_wrapper_prefixes(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove DDP ``module.`` / torch.compile ``_orig_mod.`` prefixes carried by every key."""
    state = dict(state_dict)
    changed = True
    while changed and state:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
    return state


def _short(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def load_model_state(model: nn.Module, state_dict: Mapping[str, torch.Tensor], strict: bool = True) -> LoadReport:
    """Load ``state_dict`` into ``model``; auxiliary-head keys may be present or absent on either side.

    With ``strict`` any other missing/unexpected key or shape mismatch is a one-line :class:`UserError`
    (a class-count difference is named as such); without it the fitting tensors load and the rest is
    reported (logged and returned).
    """
    if not isinstance(state_dict, Mapping) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise UserError("expected a model state dict (names -> tensors); got something else")
    state = strip_wrapper_prefixes(state_dict)
    own = model.state_dict()
    name = getattr(model, "name", type(model).__name__)
    report = LoadReport()
    for key in list(state):
        if key not in own and key.startswith(AUX_PREFIXES):
            report.dropped_aux.append(key)
            del state[key]
    for key in own:
        if key not in state and key.startswith(AUX_PREFIXES):
            report.missing_aux.append(key)
    report.missing = [k for k in own if k not in state and k not in report.missing_aux]
    report.unexpected = [k for k in state if k not in own]
    report.mismatched = [k for k in state if k in own and state[k].shape != own[k].shape]
    if report.dropped_aux:
        log.info("%s: checkpoint has an auxiliary head the model does not use; %d keys dropped",
                 name, len(report.dropped_aux))
    if report.missing_aux:
        log.warning("%s: checkpoint has no auxiliary head; the model's aux head keeps its initial weights "
                    "(fine for inference)", name)
    problems = _describe(model, state, own, report)
    if problems and strict:
        raise UserError(f"checkpoint does not fit model {name!r}: {problems}")
    if problems:
        log.warning("%s: loading what fits; %s", name, problems)
    loadable = {k: v for k, v in state.items() if k in own and k not in report.mismatched}
    model.load_state_dict(loadable, strict=False)
    return report


def _describe(model: nn.Module, state: dict, own: dict, report: LoadReport) -> str:
    """One line naming what does not fit, leading with a class-count difference when that is the cause."""
    parts: list[str] = []
    num_classes = getattr(model, "num_classes", None)
    if num_classes is not None:
        for key in report.mismatched:
            theirs, ours = state[key].shape, own[key].shape
            if len(theirs) and ours[0] == num_classes and theirs[0] != num_classes and theirs[1:] == ours[1:]:
                parts.append(f"it was trained for {theirs[0]} classes, the model has {num_classes}")
                break
    if report.mismatched:
        shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in report.mismatched]
        parts.append(f"{len(shapes)} shape mismatch(es): {_short(shapes, 2)}")
    if report.missing:
        parts.append(f"{len(report.missing)} missing key(s): {_short(report.missing)}")
    if report.unexpected:
        parts.append(f"{len(report.unexpected)} unexpected key(s): {_short(report.unexpected)}")
    if (report.missing or report.unexpected) and not report.mismatched:
        parts.append("was it saved from another architecture?")
    return "; ".join(parts)
