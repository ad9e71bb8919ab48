"""Settings of ``anomalyseg demo``: the generated data, the closed-set training, the outlier-exposure fine-tune
and the evaluation, as one typed schema (:class:`DemoConfig`) with built-in presets (:data:`PRESETS`, mirrored by
``configs/demo/demo_{default,quick}.yaml``; the fine-tune that :func:`finetune_config` derives for the default
preset is ``configs/demo/demo_oe.yaml``; tests keep them equal).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anomalyseg.config import Config, OutlierExposureConfig
from anomalyseg.configio import Bound, apply_overrides, bounded, config_from_dict, read_yaml
from anomalyseg.errors import UserError
from anomalyseg.limits import MAX_BATCH, MAX_COUNT, MAX_SEED, MAX_SYNTH_SIDE, MAX_WORKERS


@bounded(train=Bound(0, MAX_COUNT), val=Bound(0, MAX_COUNT), test=Bound(0, MAX_COUNT), size=Bound(32, MAX_SYNTH_SIDE),
         seed=Bound(0, MAX_SEED), workers=Bound(0, MAX_WORKERS))
@dataclass
class DemoData:
    """The generated dataset: image counts per split and frame size ``[width, height]``."""

    train: int = 400
    val: int = 40
    test: int = 40
    size: tuple[int, int] = (320, 180)
    seed: int = 0
    workers: int = 2  # processes drawing the images


@bounded(batch_size=Bound(1, MAX_BATCH), workers=Bound(0, MAX_WORKERS), panels=Bound(0, 1000))
@dataclass
class DemoEvaluate:
    """Scoring, evaluation and figures."""

    scorers: str = "all"
    batch_size: int = 4
    workers: int = 1
    panels: int = 4  # panels drawn for the best scorer (pooled AUROC)
    panel_scorer: str | None = None  # None: the best scorer by pooled AUROC


def _oe_on() -> OutlierExposureConfig:
    return OutlierExposureConfig(enabled=True)


@bounded(epochs=Bound(1, 10**6), lr=Bound(0, 10, lo_open=True))
@dataclass
class DemoOutlierExposure:
    """The anomaly-aware stage: fine-tune the closed-set model (``model.init_from`` = its best checkpoint) for
    ``epochs`` at ``lr`` with outlier exposure (``settings``: the ``outlier_exposure:`` section of a training
    config); everything else as in ``training``. ``enabled: false`` skips the stage (post-hoc scorers only)."""

    enabled: bool = True
    epochs: int = 6
    lr: float = 5e-4
    settings: OutlierExposureConfig = field(default_factory=_oe_on)


@dataclass
class DemoConfig:
    """A demo run. ``training`` is a full training config (``anomalyseg train`` schema); the demo sets its
    ``data.root``, ``out_dir`` and ``run_name``. ``outlier_exposure`` fine-tunes the trained model."""

    data: DemoData = field(default_factory=DemoData)
    training: Config = field(default_factory=Config)
    outlier_exposure: DemoOutlierExposure = field(default_factory=DemoOutlierExposure)
    evaluate: DemoEvaluate = field(default_factory=DemoEvaluate)


_TRAINING: dict[str, Any] = {
    "data": {"crop_size": [144, 256], "scale_range": [0.8, 1.25], "hflip": True, "color_jitter": True,
             "blur": False, "val_size": None, "batch_size": 8, "val_batch_size": 8, "workers": 1},
    "model": {"name": "deeplabv3plus_efficientnet_lite0", "pretrained": True},
    "optim": {"name": "adamw", "lr": 2.0e-3, "weight_decay": 1.0e-4, "backbone_lr_mult": 0.5},
    "schedule": {"name": "poly", "power": 0.9, "warmup_iters": 20},
    "train": {"epochs": 7, "val_every": 2, "seed": 0, "device": "auto", "class_balance": "inverse_sqrt",
              "checkpoint_every_steps": 0, "log_every": 10, "num_vis_images": 2},
}

_OE: dict[str, Any] = {
    "enabled": True, "epochs": 6, "lr": 5.0e-4,  # 6: chosen on a selection set (benchmarks/outlier_exposure.py)
    "settings": {"enabled": True, "source": "procedural", "p": 0.5, "k": [1, 3], "scale_range": [0.05, 0.3],
                 "loss": "entropy", "weight": None},
}

#: Built-in settings; ``configs/demo/demo_<name>.yaml`` hold the same values (a test keeps them equal).
PRESETS: dict[str, dict[str, Any]] = {
    "default": {
        "data": {"train": 400, "val": 40, "test": 40, "size": [320, 180], "seed": 0, "workers": 2},
        "training": _TRAINING,
        "outlier_exposure": _OE,
        "evaluate": {"scorers": "all", "batch_size": 4, "workers": 1, "panels": 4, "panel_scorer": None},
    },
    "quick": {
        "data": {"train": 96, "val": 8, "test": 8, "size": [192, 108], "seed": 0, "workers": 2},
        "training": {**_TRAINING,
                     "data": {**_TRAINING["data"], "crop_size": [108, 192], "workers": 0},
                     "schedule": {"name": "poly", "power": 0.9, "warmup_iters": 5},
                     "train": {**_TRAINING["train"], "epochs": 3, "val_every": 3, "log_every": 5}},
        "outlier_exposure": {**_OE, "epochs": 1},
        "evaluate": {"scorers": "all", "batch_size": 4, "workers": 0, "panels": 2, "panel_scorer": None},
    },
}


def load_demo_config(preset: str = "default", path: str | Path | None = None,
                     overrides: Sequence[str] = ()) -> DemoConfig:
    """The demo settings: the built-in ``preset``, then a YAML file's keys on top (``path``), then
    ``key.sub=value`` overrides; unknown keys and wrong types are one-line :class:`UserError`."""
    if preset not in PRESETS:
        raise UserError(f"unknown demo preset {preset!r}; choose from {', '.join(PRESETS)}")
    data = _merge(PRESETS[preset], read_yaml(path)) if path is not None else PRESETS[preset]
    return config_from_dict(DemoConfig, apply_overrides(DemoConfig, data, overrides))


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``, section by section (a partial YAML file keeps the preset's other keys)."""
    out = dict(base)
    for key, value in over.items():
        both = isinstance(out.get(key), dict) and isinstance(value, dict)
        out[key] = _merge(out[key], value) if both else value
    return out


def finetune_config(cfg: DemoConfig, init_from: str | Path) -> Config:
    """The training config of the outlier-exposure stage: ``cfg.training`` starting from ``init_from``'s weights
    (no pretrained download), ``epochs`` at ``lr`` without warm-up, validated once at the end (its ``best.pt`` is
    the last epoch: nothing is chosen on the fine-tune), with the outlier-exposure settings switched on."""
    tuned = copy.deepcopy(cfg.training)
    oe = cfg.outlier_exposure
    tuned.model.pretrained, tuned.model.init_from = False, str(init_from)
    tuned.optim.lr = oe.lr
    tuned.schedule.warmup_iters, tuned.schedule.warmup_epochs = 0, 0.0
    tuned.train.epochs, tuned.train.val_every = oe.epochs, oe.epochs
    tuned.outlier_exposure = copy.deepcopy(oe.settings)
    tuned.outlier_exposure.enabled = True
    return tuned
