"""The void-class scorer: softmax probability of a trained "void" / background output channel.

Networks trained with an extra output for everything outside the known classes (e.g. a Cityscapes ENet with
20 outputs: 19 classes + void at 19, the course baseline of the PoliTo "Real-Time Anomaly Segmentation"
project) can read that channel as an anomaly score: ``softmax(z)_void`` over ALL outputs, higher = more
anomalous.

There is no safe default channel: a model without a void output has none, and reading its last class
instead would be a silent wrong number. ``void_index`` therefore comes from the model's input contract
(:class:`~anomalyseg.checkpoints.contract.InputContract`, ``void_index``) or the command line
(``void:void_index=19``); the registry's ``all`` leaves this scorer out (:attr:`Scorer.needs_void_channel`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch

from anomalyseg.errors import UserError
from anomalyseg.scoring.base import Scorer, require

if TYPE_CHECKING:
    from anomalyseg.models.outputs import SegOutput


class VoidProbability(Scorer):
    """``softmax(z / T)[void_index]`` over all output channels; higher = more anomalous."""

    kind = "void"
    needs_void_channel = True
    abbreviations: ClassVar[dict[str, str]] = {"void_index": "c", "temperature": "T"}

    def __init__(self, void_index: int | None = None, temperature: float = 1.0, name: str | None = None) -> None:
        require(void_index is None or (isinstance(void_index, int) and not isinstance(void_index, bool)),
                f"void: void_index must be a channel index, got {void_index!r}")
        require(temperature > 0, f"void: temperature must be > 0, got {temperature}")
        super().__init__(name=name, void_index=void_index, temperature=float(temperature))

    def _score(self, output: SegOutput) -> torch.Tensor:
        index = self.params["void_index"]
        C = output.logits.shape[1]
        if index is None:
            raise UserError(
                f"scorer '{self.name}' needs the model's void channel: give void:void_index=K, or a checkpoint "
                "whose input contract names one (void=K)"
            )
        if not -C <= index < C:
            raise UserError(f"scorer '{self.name}': void channel {index} does not exist, the model has {C} outputs")
        z = output.logits.float() / self.params["temperature"]
        return torch.exp(z[:, index] - torch.logsumexp(z, 1))
