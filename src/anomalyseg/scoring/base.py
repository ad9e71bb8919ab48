"""The scorer lifecycle: ``score(output) -> (B,H,W)``, higher = more anomalous; optional streaming fit.

One small base class in the spirit of pytorch-ood's detectors, without their boilerplate: a scorer never
holds the model (it reads a :class:`~anomalyseg.models.outputs.SegOutput`), post-hoc scorers inherit a
no-op fit, and scorers that fit keep only running sums (float64) so that fitting streams over any number
of batches, merges across shards (:meth:`Scorer.merge_fit`) and across ``torch.distributed`` ranks
(:meth:`Scorer.sync_fit`) by plain addition. Feature-map scorers build on
:class:`~anomalyseg.scoring.features.FeatureScorer`; the fitting-label guard is in :mod:`anomalyseg.scoring.labels`.

Fitting protocol (``requires_fit`` scorers), repeated ``fit_passes`` times (2 only for HEAT's feature term):
``fit_update(output, label)`` for every in-distribution batch -> ``sync_fit()`` on every rank (no-op
without a process group) -> ``fit_finalize()``. ``fit(batches)`` does this in one process.
"""

from __future__ import annotations

import inspect
import logging
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.distributed as dist

from anomalyseg.errors import NotFittedError, UserError
from anomalyseg.scoring.labels import check_fit_label
from anomalyseg.scoring.labels import labels_at as labels_at  # re-exported for existing importers

if TYPE_CHECKING:
    from anomalyseg.models.outputs import SegOutput

log = logging.getLogger(__name__)

FIT_COMMAND = "anomalyseg fit-scorers --checkpoint CKPT --data-root DIR"
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+$")


class Scorer:
    """Base class. Subclasses set ``kind``, store their settings via ``super().__init__(name=..., **params)``
    and implement :meth:`_score`; fit-able ones also set ``requires_fit = True`` and implement
    :meth:`_fit_batch` / :meth:`_finish_pass` (and :meth:`fit_config`).

    Attributes:
        name: unique label of this configured scorer (results are keyed by it); by default the kind plus
            the non-default settings, e.g. ``energy`` vs ``energy_T2``.
        params: the constructor settings (saved in :meth:`state_dict`).
        requires_fit: whether :meth:`score` needs fitted in-distribution statistics.
        fit_passes: how many passes over the fitting data the fit needs.
        needs_features: whether :meth:`score` reads ``output.features`` (run the model with
            ``return_features=True``).
        needs_void_channel: whether the scorer only applies to models with a trained void output (left
            out of the registry's ``all``).
    """

    kind: ClassVar[str] = ""
    #: short labels of settings used in automatic names (``temperature`` -> ``T``); "" = value only.
    abbreviations: ClassVar[dict[str, str]] = {}
    requires_fit: bool = False
    fit_passes: int = 1
    needs_features: bool = False
    needs_void_channel: bool = False

    def __init__(self, name: str | None = None, **params: Any) -> None:
        self.params: dict[str, Any] = dict(params)
        self.name = name_with_settings(type(self), self.kind, self.params) if name is None else str(name)
        if not _NAME_RE.match(self.name):
            raise UserError(f"scorer name {self.name!r} may only hold letters, digits, '_', '.' and '-'")
        self._pass_states: list[dict[str, torch.Tensor]] = []
        self._passes_done = 0
        self._synced = False
        self._num_classes: int | None = None

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}(name={self.name!r}{', ' if args else ''}{args})"

    # ---- scoring ------------------------------------------------------------------------------------
    @torch.no_grad()
    def score(self, output: SegOutput) -> torch.Tensor:
        """Anomaly score ``(B, H, W)`` float32 at ``output.logits`` resolution; higher = more anomalous."""
        if output.logits.dim() != 4:
            raise ValueError(f"logits must be (B, C, H, W), got shape {tuple(output.logits.shape)}")
        if self.requires_fit:
            if not self.is_fitted:
                raise NotFittedError(
                    f"scorer '{self.name}' is not fitted: run `{FIT_COMMAND}` first "
                    "(fits on the validation split) or load its fitted state"
                )
            if self._num_classes is not None and output.logits.shape[1] != self._num_classes:
                raise UserError(
                    f"scorer '{self.name}' was fitted for {self._num_classes} classes, "
                    f"the logits have {output.logits.shape[1]}"
                )
        return self._score(output).float()

    def _score(self, output: SegOutput) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _logits(self, output: SegOutput) -> torch.Tensor:
        """``output.logits`` restricted to the ``known_classes`` setting (all channels when it is None)."""
        return select_channels(output.logits, self.params.get("known_classes"), self.name)

    # ---- fitting (no-op for post-hoc scorers) --------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        """True when :meth:`score` can run (always for post-hoc scorers)."""
        return not self.requires_fit or self._passes_done >= self.fit_passes

    def fit_config(self) -> dict[str, Any]:
        """Settings the running sums depend on; a saved state loads only where they agree."""
        return {}

    @torch.no_grad()
    def fit_update(self, output: SegOutput, label: torch.Tensor) -> None:
        """Add one in-distribution batch: ``label`` ``(B,H,W)`` at logits resolution, known ids or 255."""
        if not self.requires_fit:
            return
        if self.is_fitted:
            raise RuntimeError(f"scorer '{self.name}' is already fitted; call reset_fit() to fit again")
        if self._synced:
            raise RuntimeError(f"scorer '{self.name}': fit_update after sync_fit; call fit_finalize() first")
        num_classes = check_fit_label(label, output.logits, self.name)
        if self._num_classes is None:
            self._num_classes = num_classes
        elif num_classes != self._num_classes:
            raise ValueError(f"scorer '{self.name}': logits changed from {self._num_classes} to {num_classes} classes")
        self._fit_batch(output, label.to(output.logits.device), self._passes_done)

    def fit_finalize(self) -> None:
        """End the current pass: turn the running sums into the statistics :meth:`score` uses."""
        if not self.requires_fit:
            return
        if self.is_fitted:
            raise RuntimeError(f"scorer '{self.name}' is already fitted")
        if not self._current_states():
            self._no_pixels()
        self._finish_pass(self._passes_done)
        self._passes_done += 1
        self._synced = False

    def fit(self, batches: Iterable[tuple[SegOutput, torch.Tensor]]) -> Scorer:
        """Single-process convenience: every pass over ``batches`` (re-iterable if ``fit_passes > 1``)."""
        if not self.requires_fit:
            return self
        if self.fit_passes - self._passes_done > 1 and iter(batches) is batches:
            raise TypeError(
                f"scorer '{self.name}' needs {self.fit_passes} passes: give a list or a DataLoader, not an iterator"
            )
        while not self.is_fitted:
            for output, label in batches:
                self.fit_update(output, label)
            self.fit_finalize()
        return self

    def reset_fit(self) -> None:
        """Forget every fitted statistic."""
        self._pass_states, self._passes_done, self._synced, self._num_classes = [], 0, False, None

    def merge_fit(self, other: Scorer) -> Scorer:
        """Add the running sums of ``other`` (same kind and pass, another shard of the data); returns self."""
        if type(other) is not type(self) or other.fit_config() != self.fit_config():
            raise ValueError(f"cannot merge {other!r} into {self!r}: different kind or fit settings")
        if other._passes_done != self._passes_done:
            raise ValueError(
                f"cannot merge scorers at different fitting passes ({other._passes_done} vs {self._passes_done})"
            )
        if other._num_classes is not None and self._num_classes not in (None, other._num_classes):
            raise ValueError(f"cannot merge a {other._num_classes}-class fit into a {self._num_classes}-class one")
        self._num_classes = self._num_classes or other._num_classes
        mine = self._current_states()
        for key, value in other._current_states().items():
            mine[key] = value.clone() if key not in mine else mine[key] + value.to(mine[key].device)
        self._merge_extra(other)
        return self

    def sync_fit(self) -> None:
        """Sum the running sums of the current pass over all ``torch.distributed`` ranks (no-op without one).

        Call on every rank after its last ``fit_update`` of the pass and before ``fit_finalize``; every rank
        must have seen at least one batch (``DistributedSampler`` pads shards, so it does).
        """
        if not (dist.is_available() and dist.is_initialized()) or not self.requires_fit:
            return
        if self._synced:
            raise RuntimeError(f"scorer '{self.name}': sync_fit() called twice in one pass")
        states = self._current_states()
        if not states:
            raise RuntimeError(f"scorer '{self.name}': this rank saw no fitting batch; cannot sync")
        for key in sorted(states):
            dist.all_reduce(states[key], op=dist.ReduceOp.SUM)
        self._synced = True

    # ---- persistence --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Kind, name, settings and the running sums (CPU tensors): enough to rebuild the statistics."""
        return {
            "kind": self.kind,
            "name": self.name,
            "params": dict(self.params),
            "fit_config": self.fit_config(),
            "num_classes": self._num_classes,
            "passes_done": self._passes_done,
            "states": [{k: v.detach().cpu().clone() for k, v in d.items()} for d in self._pass_states],
            "extra": self._extra_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` of the same kind and fit settings (other settings may differ)."""
        if state.get("kind") != self.kind:
            raise ValueError(f"state of a '{state.get('kind')}' scorer cannot load into '{self.kind}' ({self.name})")
        if state.get("fit_config") != self.fit_config():
            raise ValueError(
                f"scorer '{self.name}': state was fitted with {state.get('fit_config')}, "
                f"this one needs {self.fit_config()}"
            )
        self._pass_states = [{k: v.clone() for k, v in d.items()} for d in state["states"]]
        self._passes_done = int(state["passes_done"])
        self._num_classes = state.get("num_classes")
        self._synced = False
        self._load_extra(state.get("extra", {}))
        for index in range(min(self._passes_done, self.fit_passes)):
            self._finish_pass(index)

    # ---- hooks for fit-able subclasses --------------------------------------------------------------
    def _fit_batch(self, output: SegOutput, label: torch.Tensor, pass_index: int) -> None:  # pragma: no cover
        raise NotImplementedError

    def _finish_pass(self, pass_index: int) -> None:  # pragma: no cover
        raise NotImplementedError

    def _extra_state(self) -> dict[str, Any]:
        """Non-tensor records kept with the state (e.g. the feature name actually used)."""
        return {}

    def _load_extra(self, extra: dict[str, Any]) -> None:
        """Restore what :meth:`_extra_state` returned."""

    def _merge_extra(self, other: Scorer) -> None:
        """Combine non-tensor records on merge."""

    def _no_pixels(self) -> None:
        raise UserError(
            f"scorer '{self.name}': fitting pass {self._passes_done + 1} saw no labelled in-distribution pixel"
        )

    def _current_states(self) -> dict[str, torch.Tensor]:
        while len(self._pass_states) <= self._passes_done:
            self._pass_states.append({})
        return self._pass_states[self._passes_done]

    def _pass_state(self, pass_index: int) -> dict[str, torch.Tensor]:
        return self._pass_states[pass_index]

    def _accumulate(self, key: str, value: torch.Tensor) -> None:
        """Add ``value`` (cast to float64) into the running sum ``key`` of the current pass."""
        states = self._current_states()
        value = value.to(torch.float64)
        if key in states:
            states[key] += value
        else:
            states[key] = value.clone()


# ---- helpers shared by the scorers -----------------------------------------------------------------
def known_classes_setting(value: int | slice | Sequence[int] | None, scorer: str) -> int | list[int] | None:
    """Canonical ``known_classes`` setting of the logit scorers: which output channels are known classes.

    ``None`` = all channels; an int K = ``logits[:, :K]`` (K < 0 drops the last -K channels, so ``-1``
    leaves out a void class appended last); a slice with non-negative bounds or a list of channel indices
    (stored as a list, or as K when it is ``0..K-1``). Models trained with a void / background output use
    it to score with the known classes only.
    """
    if value is None or isinstance(value, bool):
        require(value is None, f"{scorer}: known_classes must be an int, a slice or channel indices, got {value!r}")
        return None
    if isinstance(value, int):
        require(value != 0, f"{scorer}: known_classes=0 leaves no channel")
        return int(value)
    if isinstance(value, slice):
        require(value.step in (None, 1), f"{scorer}: known_classes slice must have step 1, got {value}")
        if value.start in (None, 0) and value.stop is not None:
            return known_classes_setting(int(value.stop), scorer)
        require(value.stop is not None and min(value.start or 0, value.stop) >= 0,
                f"{scorer}: known_classes slice needs non-negative bounds, got {value}")
        value = list(range(value.start or 0, value.stop))
    if isinstance(value, str):  # "0.1.2" (the form used in scorer names) from a command line
        try:
            value = [int(v) for v in value.split(".")]
        except ValueError:
            raise UserError(f"{scorer}: known_classes must be an int or channel indices, got {value!r}") from None
    channels = [int(c) for c in value]
    require(len(channels) > 0 and min(channels) >= 0 and len(set(channels)) == len(channels),
            f"{scorer}: known_classes must list distinct non-negative channels, got {channels}")
    return len(channels) if channels == list(range(len(channels))) else channels


def select_channels(logits: torch.Tensor, known: int | list[int] | None, scorer: str) -> torch.Tensor:
    """``logits`` ``(B, C, H, W)`` restricted to the known-class channels of a canonical setting."""
    if known is None:
        return logits
    C = logits.shape[1]
    if isinstance(known, int):
        require(-C < known <= C, f"scorer '{scorer}': known_classes={known} does not fit {C} output channels")
        return logits[:, :known]
    require(max(known) < C, f"scorer '{scorer}': known_classes {known} name channels beyond the {C} outputs")
    return logits[:, known]


def require(condition: bool, message: str) -> None:
    """Raise :class:`UserError` with ``message`` unless ``condition`` (checks of user settings)."""
    if not condition:
        raise UserError(message)


def name_with_settings(cls: type, prefix: str, params: dict[str, Any], reference: dict[str, Any] | None = None) -> str:
    """``prefix`` plus each setting that differs from ``reference`` (default: the constructor defaults)."""
    if reference is None:
        reference = {
            p.name: p.default
            for p in inspect.signature(cls.__init__).parameters.values()  # type: ignore[misc]
            if p.default is not inspect.Parameter.empty
        }
    abbreviations: dict[str, str] = getattr(cls, "abbreviations", {})
    parts = [prefix]
    for key, value in params.items():
        if key in reference and value == reference[key]:
            continue
        label = abbreviations.get(key, key)
        if isinstance(value, bool):
            parts.append(label if value else f"no{label}")
        elif isinstance(value, list | tuple):
            parts.append(label + ".".join(str(v) for v in value))
        elif isinstance(value, float):
            parts.append(f"{label}{value:g}")
        else:
            parts.append(f"{label}{value}")
    return "_".join(parts)


def mean_std(
    count: torch.Tensor, total: torch.Tensor, total_sq: torch.Tensor, unbiased: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation from running ``count``, ``sum`` and ``sum of squares`` (float64)."""
    mean = total / count.clamp_min(1)
    dof = (count - 1 if unbiased else count).clamp_min(1)
    var = ((total_sq - total * mean) / dof).clamp_min(0)
    return mean, var.sqrt()
