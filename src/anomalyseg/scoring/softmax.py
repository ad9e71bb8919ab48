"""Softmax quantities shared by every scorer of one forward pass (computed once, cached on the output).

MSP, energy, entropy and GEN all start from ``exp(z / T - max)``; with six scorers on a 13 x 720 x 1280 logit
map that exponential (and its allocation) was the largest scoring cost. :func:`softmax_stats` computes it
once per (channel selection, temperature) and stores it in ``SegOutput.cache``, which lives as long as the
batch's output, so memory stays bounded by the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from anomalyseg.models.outputs import SegOutput
    from anomalyseg.scoring.base import Scorer


@dataclass(frozen=True)
class SoftmaxStats:
    """For logits ``z`` (B, C, H, W) at temperature ``T``, with ``m = max_c z_c / T``.

    Attributes:
        shifted: ``z / T - m`` (B, C, H, W), every value <= 0.
        max: ``m`` (B, H, W).
        sum_exp: ``sum_c exp(shifted)`` (B, H, W), in [1, C].
        probs: ``softmax(z / T)`` (B, C, H, W).
    """

    shifted: torch.Tensor
    max: torch.Tensor
    sum_exp: torch.Tensor
    probs: torch.Tensor

    @property
    def logsumexp(self) -> torch.Tensor:
        """``logsumexp(z / T)`` (B, H, W)."""
        return self.max + torch.log(self.sum_exp)

    @property
    def max_prob(self) -> torch.Tensor:
        """``max_c softmax(z / T)_c = 1 / sum_exp`` (B, H, W)."""
        return self.sum_exp.reciprocal()

    @property
    def entropy(self) -> torch.Tensor:
        """``-sum_c p_c log p_c = log(sum_exp) - sum_c p_c shifted_c``; both terms are small where the
        softmax is confident, so there is no cancellation (unlike ``logsumexp - sum p z``)."""
        return torch.log(self.sum_exp) - (self.probs * self.shifted).sum(1)


def softmax_stats(output: SegOutput, logits: torch.Tensor, selection: Any = None,
                  temperature: float = 1.0) -> SoftmaxStats:
    """:class:`SoftmaxStats` of ``logits`` (``output.logits`` or a channel selection of it, named by the
    hashable-by-repr ``selection``), cached on ``output`` for the other scorers of the same pass."""
    key = ("softmax", repr(selection), float(temperature), tuple(logits.shape))
    stats = output.cache.get(key)
    if stats is None:
        z = logits.float()
        if temperature != 1.0:
            z = z / temperature
        m = z.amax(1, keepdim=True)
        shifted = z - m
        e = torch.exp(shifted)
        s = e.sum(1, keepdim=True)
        stats = SoftmaxStats(shifted, m.squeeze(1), s.squeeze(1), e.div_(s))
        output.cache[key] = stats
    return stats


def scorer_softmax(scorer: Scorer, output: SegOutput, temperature: float = 1.0) -> SoftmaxStats:
    """:func:`softmax_stats` of the channels ``scorer`` reads (its ``known_classes`` setting)."""
    return softmax_stats(output, scorer._logits(output), scorer.params.get("known_classes"), temperature)
