"""Model, optimizer and loss built from the config sections."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from anomalyseg.config import ModelConfig, OptimConfig
from anomalyseg.errors import UserError
from anomalyseg.models.outputs import SegOutput

log = logging.getLogger(__name__)


def build_model_from_config(cfg: ModelConfig, num_classes: int) -> nn.Module:
    """The model ``cfg.name`` names, through the closed registry (:func:`anomalyseg.models.build_model`).

    Configs and checkpoints come from files, so their model name is only looked up: a built-in model, one
    registered with :func:`anomalyseg.models.register_model`, or an ``anomalyseg.models`` entry point of an
    installed distribution. Anything else (a ``module:attr`` string included) is a one-line
    :class:`UserError` listing the known names; no name is ever imported as code.
    """
    from anomalyseg.models import build_model

    model = build_model(cfg.name, num_classes, pretrained=cfg.pretrained, aux=cfg.aux, **cfg.options)
    if not hasattr(model, "name"):
        model.name = cfg.name
    return model


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW / SGD / Adam with up to four parameter groups (backbone or head x decay or not)."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        backbone = any(name.startswith(p) for p in cfg.backbone_prefixes)
        decay = cfg.decay_norm_and_bias or param.ndim > 1
        groups.setdefault((backbone, decay), []).append(param)
    if cfg.backbone_lr_mult != 1.0 and not any(bb for bb, _ in groups):
        log.warning("optim.backbone_lr_mult=%s but no parameter starts with %s", cfg.backbone_lr_mult,
                    list(cfg.backbone_prefixes))
    param_groups = [
        {
            "params": params,
            "lr": cfg.lr * (cfg.backbone_lr_mult if backbone else 1.0),
            "weight_decay": cfg.weight_decay if decay else 0.0,
        }
        for (backbone, decay), params in sorted(groups.items())
    ]
    if cfg.name == "sgd":
        return torch.optim.SGD(param_groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.name == "adam":
        return torch.optim.Adam(param_groups, lr=cfg.lr, betas=cfg.betas)
    return torch.optim.AdamW(param_groups, lr=cfg.lr, betas=cfg.betas)


def balanced_class_weights(counts: Sequence[int] | np.ndarray, mode: str) -> list[float]:
    """Loss weights from per-class pixel counts of the training labels.

    ``inverse_sqrt``: ``w_c = f_c^-1/2``; ``median_freq`` (Eigen & Fergus, 2015): ``w_c = median(f) / f_c``.
    Both rescaled so the pixel-weighted mean weight ``sum_c f_c w_c`` is 1 (the loss keeps its scale, the
    learning rate its meaning); classes with no pixel get weight 0 (they never appear in a target).
    """
    c = np.asarray(counts, dtype=np.float64)
    if c.sum() <= 0:
        raise UserError("class balancing needs labelled training pixels; the training labels hold none")
    f = c / c.sum()
    present = f > 0
    w = np.zeros_like(f)
    if mode == "inverse_sqrt":
        w[present] = 1.0 / np.sqrt(f[present])
    elif mode == "median_freq":
        w[present] = np.median(f[present]) / f[present]
    else:
        raise ValueError(f"unknown class balance mode {mode!r}")
    return (w / float((f * w).sum())).tolist()


class SegLoss(nn.Module):
    """Cross-entropy (ignore 255, optional class weights) on the logits plus ``aux_weight`` x the same on
    the auxiliary logits when the model returned them."""

    def __init__(
        self, num_classes: int, aux_weight: float = 0.4, class_weights: Sequence[float] | None = None,
        ignore_index: int = 255,
    ) -> None:
        super().__init__()
        if class_weights is not None and len(class_weights) != num_classes:
            raise UserError(f"train.class_weights has {len(class_weights)} values, the dataset {num_classes} classes")
        weight = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32)
        self.register_buffer("weight", weight, persistent=False)
        self.aux_weight = aux_weight
        self.ignore_index = ignore_index

    def _ce(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # sum / weight-sum instead of reduction="mean": a crop with no labelled pixel gives 0, not NaN
        total = F.cross_entropy(logits.float(), target, weight=self.weight, ignore_index=self.ignore_index,
                                reduction="sum")
        valid = target != self.ignore_index
        if self.weight is None:
            denom = valid.sum().to(total.dtype)
        else:
            denom = (self.weight[torch.where(valid, target, 0)] * valid).sum()
        return total / denom.clamp(min=1e-12)

    def forward(self, output: SegOutput, target: torch.Tensor) -> torch.Tensor:
        loss = self._ce(output.logits, target)
        if output.aux_logits is not None and self.aux_weight:
            loss = loss + self.aux_weight * self._ce(output.aux_logits, target)
        return loss
