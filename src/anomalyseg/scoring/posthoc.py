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
from anomalyseg.scoring.softmax import scorer_softmax

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
    """``-max_c softmax(z / T)_c`` (Hendrycks & Gimpel, ICLR 2017), as ``-1 / sum_c exp(z_c/T - max z/T)``."""

    kind = "msp"
    abbreviations: ClassVar[dict[str, str]] = {"temperature": "T", "known_classes": "K"}

    def __init__(self, temperature: float = 1.0, known_classes: int | slice | Sequence[int] | None = None,
                 name: str | None = None) -> None:
        require(temperature > 0, f"msp: temperature must be > 0, got {temperature}")
        super().__init__(name=name, temperature=float(temperature),
                         known_classes=known_classes_setting(known_classes, self.kind))

    def _score(self, output: SegOutput) -> torch.Tensor:
        return -scorer_softmax(self, output, self.params["temperature"]).max_prob


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
        t = self.params["temperature"]
        return -t * scorer_softmax(self, output, t).logsumexp


class Entropy(Scorer):
    """Softmax entropy ``-sum_c p_c log p_c`` from the shifted logits (no clipping of ``p`` needed)."""

    kind = "entropy"
    abbreviations: ClassVar[dict[str, str]] = {"known_classes": "K"}

    def __init__(self, known_classes: int | slice | Sequence[int] | None = None, name: str | None = None) -> None:
        super().__init__(name=name, known_classes=known_classes_setting(known_classes, self.kind))

    def _score(self, output: SegOutput) -> torch.Tensor:
        return scorer_softmax(self, output).entropy
