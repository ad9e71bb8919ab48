"""A small accumulator lifecycle shared by every metric: update / compute / reset / merge / sync / state_dict.

States are tensors combined by SUMMATION only, so two accumulators merge by adding their states and
``torch.distributed`` ranks combine with one ``all_reduce(SUM)`` per state. States live on the device of
the first update (no per-batch host copies).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist


def distributed_ready() -> bool:
    """True when a ``torch.distributed`` process group is initialised."""
    return dist.is_available() and dist.is_initialized()


class Accumulator:
    """Base class: subclasses declare sum-states with :meth:`_add_state` and a config dict in :meth:`_config`."""

    def __init__(self) -> None:
        self._states: dict[str, torch.Tensor] = {}
        self._synced = False

    # ---- subclass hooks -------------------------------------------------------------------------
    def _config(self) -> dict[str, Any]:
        """Settings that must agree for two accumulators to be merged (stored in ``state_dict``)."""
        return {}

    def compute(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    # ---- state handling -------------------------------------------------------------------------
    def _add_state(self, name: str, value: torch.Tensor) -> None:
        self._states[name] = value
        setattr(self, name, value)

    def _set_state(self, name: str, value: torch.Tensor) -> None:
        self._states[name] = value
        setattr(self, name, value)

    def to(self, device: torch.device | str) -> Accumulator:
        """Move every state to ``device``."""
        for name, value in list(self._states.items()):
            self._set_state(name, value.to(device))
        return self

    @property
    def device(self) -> torch.device:
        return next(iter(self._states.values())).device

    def _follow(self, device: torch.device) -> None:
        """States follow the inputs' device (moved once, on the first update from a new device)."""
        if self.device != device:
            self.to(device)

    def reset(self) -> None:
        """Zero every state (the accumulator can be reused for a new pass)."""
        for name, value in list(self._states.items()):
            self._set_state(name, torch.zeros_like(value))
        self._synced = False

    def merge(self, other: Accumulator) -> Accumulator:
        """Add ``other``'s states into this one (e.g. two shards of a dataset); returns ``self``."""
        if type(other) is not type(self) or other._config() != self._config():
            raise ValueError(
                f"cannot merge {type(other).__name__}{other._config()} into {type(self).__name__}{self._config()}"
            )
        for name, value in self._states.items():
            self._set_state(name, value + other._states[name].to(value.device))
        self._merge_extra(other)
        return self

    def _merge_extra(self, other: Accumulator) -> None:
        """Hook for non-tensor records (e.g. per-image values); default: nothing."""

    def state_dict(self) -> dict[str, Any]:
        """Config plus a CPU copy of every state; :meth:`load_state_dict` restores it exactly."""
        out: dict[str, Any] = {"config": self._config()}
        out.update({name: value.detach().cpu().clone() for name, value in self._states.items()})
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore states saved by :meth:`state_dict` of an accumulator with the same config."""
        if state.get("config") != self._config():
            raise ValueError(f"state was saved with config {state.get('config')}, this one has {self._config()}")
        for name, value in self._states.items():
            if name not in state:
                raise ValueError(f"state_dict lacks {name!r}")
            self._set_state(name, state[name].to(device=value.device, dtype=value.dtype).clone())

    def sync(self) -> None:
        """Sum the states over all ``torch.distributed`` ranks in place (no-op without a process group).

        Call it once on every rank after the last update and before ``compute``; a second call would count
        other ranks twice, so it raises until :meth:`reset`.
        """
        if not distributed_ready():
            return
        if self._synced:
            raise RuntimeError(f"{type(self).__name__}.sync() called twice; call reset() before reuse")
        for value in self._states.values():
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
        self._sync_extra()
        self._synced = True

    def _sync_extra(self) -> None:
        """Hook for non-tensor records; default: nothing."""
