"""Learning-rate schedules with linear warmup: poly, cosine, constant (per optimizer step) and plateau.

Own small class instead of chaining ``SequentialLR`` + ``ReduceLROnPlateau``: torch cannot put a warmup
in front of a plateau schedule, and this keeps one primitive ``state_dict`` for ``weights_only`` checkpoints.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from anomalyseg.config import ScheduleConfig
from anomalyseg.errors import UserError


def warmup_steps(cfg: ScheduleConfig, steps_per_epoch: int) -> int:
    """Warmup length in optimizer steps (``warmup_iters`` or ``warmup_epochs`` x steps per epoch)."""
    if cfg.warmup_iters and cfg.warmup_epochs:
        raise UserError("schedule: give warmup_iters or warmup_epochs, not both")
    if cfg.warmup_iters < 0 or cfg.warmup_epochs < 0:
        raise UserError("schedule: warmup must be >= 0")
    return int(cfg.warmup_iters or round(cfg.warmup_epochs * steps_per_epoch))


class LRSchedule:
    """Sets every param group's lr to ``initial_lr x factor(step)``.

    ``factor(s) = warmup(s) x decay(s)``: ``warmup(s) = start + (1 - start) s / W`` for ``s < W``, else 1;
    for ``s >= W`` with progress ``p = (s - W) / (T - W)``: poly ``m + (1 - m)(1 - p)^power``, cosine
    ``m + (1 - m)(1 + cos(pi p)) / 2``, constant 1, plateau the current plateau scale (``x plateau_factor``
    after more than ``plateau_patience`` validations without improvement, never below ``m``);
    ``m = min_lr_factor``. Call :meth:`step` after each optimizer step and :meth:`observe` after validation.
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, total_steps: int, steps_per_epoch: int
    ) -> None:
        if total_steps < 1:
            raise UserError("schedule: the run has no optimizer step (check epochs, batch size and dataset size)")
        self.optimizer = optimizer
        self.cfg = cfg
        self.total_steps = int(total_steps)
        self.warmup = min(warmup_steps(cfg, steps_per_epoch), self.total_steps)
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_step = 0
        self.plateau_scale = 1.0
        self.best: float | None = None
        self.bad = 0
        self._apply()

    def factor(self, step: int) -> float:
        """The lr multiplier at optimizer step ``step`` (0 = before the first step)."""
        cfg, m = self.cfg, self.cfg.min_lr_factor
        if step < self.warmup:
            return cfg.warmup_start_factor + (1.0 - cfg.warmup_start_factor) * step / self.warmup
        if cfg.name == "constant":
            return 1.0
        if cfg.name == "plateau":
            return max(self.plateau_scale, m)
        span = max(self.total_steps - self.warmup, 1)
        p = min(max((step - self.warmup) / span, 0.0), 1.0)
        decay = (1.0 - p) ** cfg.power if cfg.name == "poly" else 0.5 * (1.0 + math.cos(math.pi * p))
        return m + (1.0 - m) * decay

    def _apply(self) -> None:
        f = self.factor(self.last_step)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * f

    def step(self) -> None:
        """Advance by one optimizer step."""
        self.last_step += 1
        self._apply()

    def observe(self, metric: float) -> None:
        """Feed a validation metric (higher is better); only the plateau schedule reacts."""
        if self.cfg.name != "plateau":
            return
        if self.best is None or (not math.isnan(metric) and metric > self.best):
            self.best, self.bad = metric, 0
        else:
            self.bad += 1
            if self.bad > self.cfg.plateau_patience:
                self.plateau_scale *= self.cfg.plateau_factor
                self.bad = 0
        self._apply()

    def state_dict(self) -> dict[str, Any]:
        """Plain numbers only, so that checkpoints load with ``torch.load(weights_only=True)``."""
        return {"last_step": self.last_step, "plateau_scale": self.plateau_scale, "best": self.best,
                "bad": self.bad, "base_lrs": list(self.base_lrs), "total_steps": self.total_steps,
                "warmup": self.warmup}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict` (exact resume) and set the lrs it implies."""
        self.last_step = int(state["last_step"])
        self.plateau_scale = float(state["plateau_scale"])
        self.best = state["best"]
        self.bad = int(state["bad"])
        self.base_lrs = [float(v) for v in state["base_lrs"]]
        self._apply()
