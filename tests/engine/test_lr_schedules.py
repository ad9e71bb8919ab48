"""Warmup x poly / cosine / plateau learning rates against their closed-form formulas; optimizer groups."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from anomalyseg.config import OptimConfig, ScheduleConfig
from anomalyseg.engine.factory import build_optimizer
from anomalyseg.engine.schedules import LRSchedule
from anomalyseg.errors import UserError


def run(cfg: ScheduleConfig, total: int, lr: float = 0.1, steps_per_epoch: int = 10) -> list[float]:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=lr)
    sched = LRSchedule(opt, cfg, total, steps_per_epoch)
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(total):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    return lrs


def test_poly_without_warmup_matches_formula():
    lrs = run(ScheduleConfig(name="poly", power=0.9), total=50)
    assert lrs == pytest.approx([0.1 * (1 - s / 50) ** 0.9 for s in range(51)], rel=1e-12, abs=1e-15)
    assert lrs[-1] == 0.0


def test_cosine_with_warmup_and_floor_matches_formula():
    W, T, m, start = 5, 40, 0.01, 0.1
    cfg = ScheduleConfig(name="cosine", warmup_iters=W, warmup_start_factor=start, min_lr_factor=m)
    lrs = run(cfg, total=T)
    expected = []
    for s in range(T + 1):
        if s < W:
            f = start + (1 - start) * s / W
        else:
            p = (s - W) / (T - W)
            f = m + (1 - m) * 0.5 * (1 + math.cos(math.pi * p))
        expected.append(0.1 * f)
    assert lrs == pytest.approx(expected, rel=1e-12)
    assert lrs[W] == pytest.approx(0.1)  # peak right after warmup
    assert lrs[-1] == pytest.approx(0.1 * m)


def test_warmup_epochs_convert_with_steps_per_epoch():
    cfg = ScheduleConfig(name="poly", warmup_epochs=0.5, warmup_start_factor=0.0, power=1.0)
    lrs = run(cfg, total=20, steps_per_epoch=8)  # 4 warmup steps
    assert lrs[:5] == pytest.approx([0.0, 0.025, 0.05, 0.075, 0.1])
    assert lrs[12] == pytest.approx(0.1 * (1 - 8 / 16))
    with pytest.raises(UserError, match="not both"):
        run(ScheduleConfig(warmup_iters=2, warmup_epochs=1.0), total=5)


def test_plateau_drops_after_patience_and_respects_floor():
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    cfg = ScheduleConfig(name="plateau", plateau_patience=1, plateau_factor=0.5, min_lr_factor=0.2)
    sched = LRSchedule(opt, cfg, total_steps=100, steps_per_epoch=10)
    seen = []
    for metric in [0.1, 0.2, 0.2, 0.15, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3]:
        sched.step()
        sched.observe(metric)
        seen.append(opt.param_groups[0]["lr"])
    # improvements at 0.1, 0.2, 0.3; drop after 2 (> patience 1) bad validations; floor at 0.2
    assert seen == pytest.approx([1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.2, 0.2, 0.2])


def test_state_dict_round_trip_continues_identically():
    cfg = ScheduleConfig(name="poly", warmup_iters=3)
    full = run(cfg, total=20)
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    first = LRSchedule(opt, cfg, 20, 10)
    for _ in range(7):
        first.step()
    opt2 = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    second = LRSchedule(opt2, cfg, 20, 10)
    second.load_state_dict(first.state_dict())
    rest = [opt2.param_groups[0]["lr"]]
    for _ in range(13):
        second.step()
        rest.append(opt2.param_groups[0]["lr"])
    assert rest == pytest.approx(full[7:], rel=1e-15)


def test_optimizer_groups_decay_and_backbone_multiplier():
    model = nn.Sequential()
    model.add_module("backbone", nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))
    model.add_module("head", nn.Conv2d(4, 2, 1))
    opt = build_optimizer(model, OptimConfig(name="adamw", lr=0.01, weight_decay=0.05, backbone_lr_mult=0.1))
    assert isinstance(opt, torch.optim.AdamW)
    by_param = {id(p): g for g in opt.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert by_param[id(named["backbone.0.weight"])]["lr"] == pytest.approx(0.001)
    assert by_param[id(named["backbone.0.weight"])]["weight_decay"] == 0.05
    assert by_param[id(named["backbone.1.weight"])]["weight_decay"] == 0.0  # norm weight: no decay
    assert by_param[id(named["head.bias"])]["weight_decay"] == 0.0
    assert by_param[id(named["head.weight"])]["lr"] == pytest.approx(0.01)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(named)
    sgd = build_optimizer(model, OptimConfig(name="sgd", lr=0.1, momentum=0.8, nesterov=True))
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.8
    assert isinstance(build_optimizer(model, OptimConfig(name="adam")), torch.optim.Adam)
