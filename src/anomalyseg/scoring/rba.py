"""Rejected by All (Nayal et al., ICCV 2023): ``-sum_c tanh(z_c)``.

As in the official code (NazirNayal8/RbA, ``get_RbA``: ``-logits.tanh().sum(dim=0)``). A pixel that every
class rejects (all logits negative) scores highest. RbA was designed for one-vs-all class scores
(Mask2Former); on the logits of a softmax cross-entropy model, whose common offset is free, the score
also depends on that offset.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch

from anomalyseg.metrics.backend import numpy_path
from anomalyseg.scoring.base import Scorer, known_classes_setting

if TYPE_CHECKING:
    from anomalyseg.models.outputs import SegOutput


class RbA(Scorer):
    """``-sum_c tanh(z_c)``; higher = rejected by more classes."""

    kind = "rba"
    abbreviations: ClassVar[dict[str, str]] = {"known_classes": "K"}

    def __init__(self, known_classes: int | slice | Sequence[int] | None = None, name: str | None = None) -> None:
        super().__init__(name=name, known_classes=known_classes_setting(known_classes, self.kind))

    def _score(self, output: SegOutput) -> torch.Tensor:
        z = self._logits(output).float()
        if numpy_path(z):  # numpy's tanh: ~2x faster wall, ~4x less CPU than torch's here
            return torch.from_numpy(-np.tanh(z.detach().numpy()).sum(1))
        return -torch.tanh(z).sum(1)
