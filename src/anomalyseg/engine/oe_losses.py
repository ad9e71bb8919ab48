"""Outlier-exposure losses: the closed-set cross-entropy plus an outlier term on pasted-outlier pixels.

Targets hold ``0 .. K-1`` (known class), :data:`~anomalyseg.constants.IGNORE_INDEX` (void) and
:data:`~anomalyseg.constants.OUTLIER_LABEL` (a pasted outlier cutout). Three outlier losses, each raising the
anomaly score of one scorer of :mod:`anomalyseg.scoring` on outlier pixels:

``entropy`` (Chan, Rottmann, Gottschalk, "Entropy Maximization and Meta Classification for Out-of-Distribution
Detection in Semantic Segmentation", ICCV 2021): cross-entropy from the softmax to the uniform distribution on
outlier pixels, ``logsumexp(z) - mean_k z_k`` (maximises the ``entropy`` scorer). The paper's loss is the convex
combination ``(1 - lambda) sum_in CE + lambda sum_out CE_uniform`` over the pixels of a batch; the official code
(robin-chan/meta-ood, ``ood_training.py``) takes one mean over all pixels of that mixed target, so each term
counts with its share of the pixels: here ``(1 - lambda) s_in CE + lambda s_out L_out`` with ``s_in`` / ``s_out``
the inlier / outlier share of the labelled pixels. Default ``lambda = 0.9`` (``config.py``: ``pareto_alpha``).

``energy`` (Tian et al., "Pixel-wise Energy-biased Abstention Learning for Anomaly Segmentation on Complex Urban
Driving Scenes" (PEBAL), ECCV 2022, after Liu et al., "Energy-based Out-of-distribution Detection", NeurIPS 2020):
with the free energy ``E = -logsumexp(z)`` (the ``energy`` scorer),
``L = 0.5 (mean_in relu(E - m_in)^2 + mean_out relu(m_out - E)^2)``; defaults ``m_in = -12``, ``m_out = -6``,
weight 0.1 (tianyu0207/PEBAL ``code/losses.py: energy_loss``, ``code/engine/trainer.py: loss += 0.1 * e_loss``).
PEBAL's abstention (gambler) loss and its smoothness / sparsity regularisers are not part of this: the
closed-set loss stays the cross-entropy.

``rba`` (Nayal et al., "RbA: Segmenting Unknown Regions Rejected by All", ICCV 2023): the same squared hinge on
the RbA score ``s = -sum_k tanh(z_k)`` (the ``rba`` scorer), ``L = 0.5 (mean_in relu(s - m_in)^2 +
mean_out relu(m_out - s)^2)``; defaults ``m_in = 0``, ``m_out = 5``, weight 1 (NazirNayal8/RbA
``mask2former/modeling/criterion.py: outlier_loss`` with ``OUTLIER_LOSS_FUNC: squared_hinge``,
``OUTLIER_LOSS_TARGET: nls``, ``SCORE_NORM: tanh``; the values of the released
``ckpts/swin_b_1dl_rba_ood_coco/config.yaml``). RbA's class scores are Mask2Former's one-vs-all mask scores;
here they are the logits of a softmax model, whose common offset the cross-entropy leaves free and this loss sets.
Both codes drop the factor 0.5 on batches without outlier pixels; here it stays, so the loss scale does not jump.

Margins are in the units of a network's logits: the papers' values fit theirs, not necessarily the model being
fine-tuned. ``margin_in`` / ``margin_out`` = ``auto`` (:data:`AUTO`) leaves them open here; the training workflow
sets them from the model's own validation scores before the first step (:mod:`anomalyseg.engine.oe_margins`,
:meth:`OutlierExposureLoss.set_margins`) and a resumed run takes the stored values.

The energy / RbA loss and their inlier hinge use the main logits only (an auxiliary head keeps its
cross-entropy). Everything is computed in float32 (AMP-safe); a batch without outlier pixels gives an outlier
term of 0, never NaN.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from anomalyseg.config import OutlierExposureConfig
from anomalyseg.constants import OUTLIER_LABEL
from anomalyseg.engine.factory import SegLoss
from anomalyseg.errors import UserError
from anomalyseg.models.outputs import SegOutput


@dataclass(frozen=True)
class PaperDefaults:
    """A loss's published settings and where they come from."""

    weight: float
    margin_in: float | None
    margin_out: float | None
    source: str


#: A margin to be set from the model's validation scores (``outlier_exposure.margin_in: auto``).
AUTO = "auto"

#: ``outlier_exposure.loss`` -> the paper defaults that a None in the config stands for.
PAPER_DEFAULTS: dict[str, PaperDefaults] = {
    "entropy": PaperDefaults(0.9, None, None, "Chan et al. ICCV 2021 (robin-chan/meta-ood config.py: pareto_alpha)"),
    "energy": PaperDefaults(0.1, -12.0, -6.0, "Tian et al. ECCV 2022 (tianyu0207/PEBAL code/losses.py, "
                                              "code/engine/trainer.py)"),
    "rba": PaperDefaults(1.0, 0.0, 5.0, "Nayal et al. ICCV 2023 (NazirNayal8/RbA mask2former/modeling/criterion.py, "
                                        "ckpts/swin_b_1dl_rba_ood_coco/config.yaml)"),
}


# ---------------------------------------------------------------------------------------------------
# The losses on logits (B, K, H, W) and targets (B, H, W)
# ---------------------------------------------------------------------------------------------------
def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``mask``; 0 (with a zero gradient) where ``mask`` is empty, not NaN."""
    kept = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device))
    return kept.sum() / mask.sum().clamp(min=1).to(values.dtype)


def inlier_mask(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Pixels of a known class (``0 .. num_classes-1``)."""
    return (target >= 0) & (target < num_classes)


def uniform_cross_entropy(logits: torch.Tensor) -> torch.Tensor:
    """``-(1/K) sum_k log softmax(z)_k = logsumexp(z) - mean_k z_k`` per pixel (B, H, W), in float32."""
    z = logits.float()
    return torch.logsumexp(z, 1) - z.mean(1)


def free_energy(logits: torch.Tensor) -> torch.Tensor:
    """``E = -logsumexp(z)`` per pixel (B, H, W): the ``energy`` scorer at temperature 1."""
    return -torch.logsumexp(logits.float(), 1)


def rba_score(logits: torch.Tensor) -> torch.Tensor:
    """``-sum_k tanh(z_k)`` per pixel (B, H, W): the ``rba`` scorer."""
    return -torch.tanh(logits.float()).sum(1)


def entropy_outlier_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over outlier pixels of the cross-entropy to the uniform distribution (Chan et al., 2021)."""
    return masked_mean(uniform_cross_entropy(logits), target == OUTLIER_LABEL)


def hinge_terms(score: torch.Tensor, target: torch.Tensor, num_classes: int, margin_in: float, margin_out: float
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean_in relu(score - margin_in)^2, mean_out relu(margin_out - score)^2)``: inlier scores pushed below
    ``margin_in``, outlier scores above ``margin_out``."""
    t_in = masked_mean(F.relu(score - margin_in).pow(2), inlier_mask(target, num_classes))
    t_out = masked_mean(F.relu(margin_out - score).pow(2), target == OUTLIER_LABEL)
    return t_in, t_out


def energy_hinge_loss(logits: torch.Tensor, target: torch.Tensor, margin_in: float = -12.0,
                      margin_out: float = -6.0) -> torch.Tensor:
    """PEBAL's energy loss ``0.5 (hinge_in + hinge_out)`` on ``E = -logsumexp(z)`` (Tian et al., 2022)."""
    t_in, t_out = hinge_terms(free_energy(logits), target, logits.shape[1], margin_in, margin_out)
    return 0.5 * (t_in + t_out)


def rba_hinge_loss(logits: torch.Tensor, target: torch.Tensor, margin_in: float = 0.0,
                   margin_out: float = 5.0) -> torch.Tensor:
    """RbA's outlier loss ``0.5 (hinge_in + hinge_out)`` on ``s = -sum_k tanh(z_k)`` (Nayal et al., 2023)."""
    t_in, t_out = hinge_terms(rba_score(logits), target, logits.shape[1], margin_in, margin_out)
    return 0.5 * (t_in + t_out)


#: The anomaly score each hinge loss shapes.
HINGE_SCORES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"energy": free_energy, "rba": rba_score}


# ---------------------------------------------------------------------------------------------------
# The criterion
# ---------------------------------------------------------------------------------------------------
def resolve_settings(cfg: OutlierExposureConfig) -> dict[str, Any]:
    """The loss settings with every None replaced by its paper default (``loss, weight, margin_in,
    margin_out``, ``paper_defaults``: the keys that took the default, ``source``: where the defaults come from,
    ``auto``: how each ``auto`` margin was set, filled by :meth:`OutlierExposureLoss.set_margins`; a margin
    stays :data:`AUTO` until then); one-line UserError for settings the chosen loss cannot take."""
    paper = PAPER_DEFAULTS[cfg.loss]
    weight = paper.weight if cfg.weight is None else float(cfg.weight)
    if cfg.loss == "entropy":
        if cfg.margin_in is not None or cfg.margin_out is not None:
            raise UserError("outlier_exposure.margin_in / margin_out belong to the energy and rba losses; "
                            "the entropy loss has none (leave them null)")
        if weight > 1:
            raise UserError(f"outlier_exposure.weight={weight:g}: for the entropy loss it is lambda of the convex "
                            "combination (1-lambda) CE + lambda L_out, in [0, 1]")
        margin_in = margin_out = None
    else:
        margin_in, margin_out = (getattr(paper, k) if getattr(cfg, k) is None else _margin(getattr(cfg, k))
                                 for k in ("margin_in", "margin_out"))
        if AUTO not in (margin_in, margin_out):
            check_margin_order(margin_in, margin_out)
    defaulted = [k for k in ("weight", "margin_in", "margin_out")
                 if getattr(cfg, k) is None and getattr(paper, k) is not None]
    return {"loss": cfg.loss, "weight": weight, "margin_in": margin_in, "margin_out": margin_out,
            "paper_defaults": defaulted, "source": paper.source, "auto": {}}


def _margin(value: float | str) -> float | str:
    return AUTO if value == AUTO else float(value)


def check_margin_order(margin_in: float, margin_out: float, how: str = "") -> None:
    """One-line UserError unless ``margin_in <= margin_out`` (``how``: how they were set, for the message)."""
    if margin_in > margin_out:
        raise UserError(f"outlier_exposure.margin_in={margin_in:g} is above margin_out={margin_out:g}{how}: inlier "
                        "scores are pushed below margin_in, outlier scores above margin_out")


class OutlierExposureLoss(nn.Module):
    """Cross-entropy on known-class pixels (``seg_loss``: class weights, aux head; outlier pixels ignored) plus
    the outlier loss ``settings["loss"]`` (see the module docstring for each formula and its defaults).

    ``last_terms``: detached float32 scalars of the last call (``loss_ce``, ``loss_outlier``, for the hinge
    losses ``loss_outlier_in`` / ``loss_outlier_out``, and ``outlier_fraction``: outlier share of the labelled
    pixels), which the training loop averages and logs; reading them never syncs with the device.
    """

    def __init__(self, seg_loss: SegLoss, settings: dict[str, Any]) -> None:
        super().__init__()
        if settings["loss"] not in PAPER_DEFAULTS:
            raise ValueError(f"unknown outlier loss {settings['loss']!r}")
        self.seg_loss = seg_loss
        self.settings = dict(settings)
        self.last_terms: dict[str, torch.Tensor] = {}

    @classmethod
    def from_config(cls, cfg: OutlierExposureConfig, seg_loss: SegLoss) -> OutlierExposureLoss:
        """The criterion of the config's ``outlier_exposure`` section, paper defaults filled in."""
        return cls(seg_loss, resolve_settings(cfg))

    @property
    def pending_margins(self) -> list[str]:
        """The margins still :data:`AUTO` (to set with :meth:`set_margins` before training)."""
        return [k for k in ("margin_in", "margin_out") if self.settings[k] == AUTO]

    def set_margins(self, margin_in: float, margin_out: float, auto: dict[str, str]) -> None:
        """Fix the hinge margins (``auto``: for each margin that was ``auto``, how it was set: logged by
        :meth:`describe`, kept in the checkpoint); one-line UserError when they are out of order."""
        check_margin_order(float(margin_in), float(margin_out), f" ({', '.join(auto)} auto)" if auto else "")
        self.settings.update(margin_in=float(margin_in), margin_out=float(margin_out), auto=dict(auto))

    def describe(self) -> str:
        """One line for the run's log: the loss with its resolved settings and their source."""
        s = self.settings
        auto = s.get("auto") or {}

        def margin(key: str) -> str:
            value = s[key] if s[key] == AUTO else f"{s[key]:g}"
            return f"{key} {value}" + (f" ({auto[key]})" if key in auto else "")

        margins = "" if s["margin_in"] is None else f", {margin('margin_in')}, {margin('margin_out')}"
        given = f"paper default: {', '.join(s['paper_defaults'])}" if s["paper_defaults"] else "all from the config"
        return f"outlier loss {s['loss']}: weight {s['weight']:g}{margins} ({given}; defaults of {s['source']})"

    def forward(self, output: SegOutput, target: torch.Tensor) -> torch.Tensor:
        outlier = target == OUTLIER_LABEL
        ce = self.seg_loss(output, target.masked_fill(outlier, self.seg_loss.ignore_index))
        num_classes = output.logits.shape[1]
        n_in = inlier_mask(target, num_classes).sum().float()
        n_out = outlier.sum().float()
        share_out = n_out / (n_in + n_out).clamp(min=1)
        kind, weight = self.settings["loss"], self.settings["weight"]
        terms: dict[str, torch.Tensor] = {"loss_ce": ce}
        if kind == "entropy":
            l_out = entropy_outlier_loss(output.logits, target)
            share_in = n_in / (n_in + n_out).clamp(min=1)
            total = (1 - weight) * share_in * ce + weight * share_out * l_out
        else:
            if self.pending_margins:
                raise RuntimeError(f"{self.pending_margins} still 'auto': call set_margins before training")
            score = HINGE_SCORES[kind](output.logits)
            t_in, t_out = hinge_terms(score, target, num_classes, self.settings["margin_in"],
                                      self.settings["margin_out"])
            l_out = 0.5 * (t_in + t_out)
            terms.update(loss_outlier_in=t_in, loss_outlier_out=t_out)
            total = ce + weight * l_out
        terms.update(loss_outlier=l_out, outlier_fraction=share_out)
        self.last_terms = {k: v.detach().float() for k, v in terms.items()}
        return total


__all__ = [
    "AUTO",
    "HINGE_SCORES",
    "PAPER_DEFAULTS",
    "OutlierExposureLoss",
    "PaperDefaults",
    "check_margin_order",
    "energy_hinge_loss",
    "entropy_outlier_loss",
    "free_energy",
    "hinge_terms",
    "masked_mean",
    "rba_hinge_loss",
    "rba_score",
    "resolve_settings",
    "uniform_cross_entropy",
]
