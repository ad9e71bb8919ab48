"""Post-hoc logit scorers (no fitting): max logit, max softmax probability, energy, softmax entropy.

Each reads the true logits z ``(B, C, H, W)`` of :class:`SegOutput` (never probabilities) and returns a
``(B, H, W)`` map with higher = more anomalous, in float32. ``known_classes`` (every logit scorer) restricts
them to the known-class channels, e.g. ``known_classes=19`` for a Cityscapes model with a void output at 19
(see :func:`~anomalyseg.scoring.base.known_classes_setting`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import torch

from anomalyseg.scoring.base import Scorer, known_classes_setting, require

if TYPE_CHECKING:
    from anomalyseg.models.outputs import SegOutput


class MaxLogit(Scorer):
    """``-max_c z_c`` (Hendrycks et al., "Scaling out-of-distribution detection", 2022)."""

    kind = "max_logit"
    abbreviations: ClassVar[dict[str, str]] = {"known_classes": "K"}

    def __init__(self, known_classes: int | slice | Sequence[int] | None = None, name: str | None = None) -> None:
        super().__init__(name=name, known_classes=known_classes_setting(known_classes, self.kind))

    def _score(self, output: SegOutput) -> torch.Tensor:
        return -self._logits(output).float().amax(1)


class MSP(Scorer):
    """``-max_c softmax(z / T)_c`` (Hendrycks & Gimpel, ICLR 2017), as ``-exp(max z/T - lse(z/T))``."""

    kind = "msp"
    abbreviations: ClassVar[dict[str, str]] = {"temperature": "T", "known_classes": "K"}

    def __init__(self, temperature: float = 1.0, known_classes: int | slice | Sequence[int] | None = None,
                 name: str | None = None) -> None:
        require(temperature > 0, f"msp: temperature must be > 0, got {temperature}")
        super().__init__(name=name, temperature=float(temperature),
                         known_classes=known_classes_setting(known_classes, self.kind))

    def _score(self, output: SegOutput) -> torch.Tensor:
        z = self._logits(output).float() / self.params["temperature"]
        return -torch.exp(z.amax(1) - torch.logsumexp(z, 1))


def energy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Free energy ``-T * logsumexp(z / T)`` over the class dimension (higher = more anomalous)."""
    return -temperature * torch.logsumexp(logits.float() / temperature, 1)


class Energy(Scorer):
    """``-T * logsumexp(z / T)`` (Liu et al., NeurIPS 2020)."""

    kind = "energy"
    abbreviations: ClassVar[dict[str, str]] = {"temperature": "T", "known_classes": "K"}

    def __init__(self, temperature: float = 1.0, known_classes: int | slice | Sequence[int] | None = None,
                 name: str | None = None) -> None:
        require(temperature > 0, f"energy: temperature must be > 0, got {temperature}")
        super().__init__(name=name, temperature=float(temperature),
                         known_classes=known_classes_setting(known_classes, self.kind))

    def _score(self, output: SegOutput) -> torch.Tensor:
        return energy(self._logits(output), self.params["temperature"])


class Entropy(Scorer):
    """Softmax entropy ``-sum_c p_c log p_c`` with ``log p = log_softmax(z)`` (no clipping needed)."""

    kind = "entropy"
    abbreviations: ClassVar[dict[str, str]] = {"known_classes": "K"}

    def __init__(self, known_classes: int | slice | Sequence[int] | None = None, name: str | None = None) -> None:
        super().__init__(name=name, known_classes=known_classes_setting(known_classes, self.kind))

    def _score(self, output: SegOutput) -> torch.Tensor:
        log_p = torch.log_softmax(self._logits(output).float(), 1)
        return -(log_p.exp() * log_p).sum(1)
