"""GEN, generalized entropy (Liu et al., CVPR 2023): ``sum over the M largest p_c of p_c^g (1 - p_c)^g``.

The official code (XixiLiu95/GEN, ``generalized_entropy``) sorts the softmax probabilities, keeps the M
largest and returns ``-sum p^g (1-p)^g`` as an in-distribution score; the anomaly score here is its
negation, the sum itself. Defaults follow the paper: ``gamma = 0.1``, ``M = 100`` (all classes when C <= M).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch

from anomalyseg.metrics.backend import numpy_path
from anomalyseg.scoring.base import Scorer, known_classes_setting, require
from anomalyseg.scoring.softmax import scorer_softmax

if TYPE_CHECKING:
    from anomalyseg.models.outputs import SegOutput


class GEN(Scorer):
    """Generalized entropy of the top-M softmax probabilities; higher = flatter = more anomalous."""

    kind = "gen"
    abbreviations: ClassVar[dict[str, str]] = {"gamma": "g", "top_m": "M", "known_classes": "K"}

    def __init__(self, gamma: float = 0.1, top_m: int = 100, known_classes: int | slice | Sequence[int] | None = None,
                 name: str | None = None) -> None:
        require(gamma > 0, f"gen: gamma must be > 0, got {gamma}")
        require(int(top_m) >= 1, f"gen: top_m must be >= 1, got {top_m}")
        super().__init__(name=name, gamma=float(gamma), top_m=int(top_m),
                         known_classes=known_classes_setting(known_classes, self.kind))

    def _score(self, output: SegOutput) -> torch.Tensor:
        p = scorer_softmax(self, output).probs
        if self.params["top_m"] < p.shape[1]:
            p = p.topk(self.params["top_m"], dim=1).values
        g = self.params["gamma"]
        if numpy_path(p):  # numpy's pow: same wall time as torch's on 2 threads, half the CPU here
            pn = p.numpy()
            return torch.from_numpy(np.power(pn * (1 - pn), np.float32(g)).sum(1))
        return (p * (1 - p)).pow_(g).sum(1)  # p^g (1-p)^g with one pow
