"""Shared helpers for the engine tests: a tiny synthetic StreetHazards tree and tiny-run overrides."""

from __future__ import annotations

import os
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
#: The tiny net's model name: an ``anomalyseg.models`` entry point of the fake distribution in tests/plugins.
TINY_MODEL = "tiny"
PLUGINS = REPO_ROOT / "tests" / "plugins"


def tiny_overrides(root: Path, out_dir: Path, run_name: str, **extra: object) -> list[str]:
    """Overrides for a ~1 s CPU run: 64x48 images, the tiny model, deterministic."""
    values: dict[str, object] = {
        "data.root": str(root), "data.crop_size": "[48,64]", "data.scale_range": "[0.75,1.25]",
        "data.batch_size": 4, "data.workers": 0, "model.name": TINY_MODEL, "train.epochs": 2,
        "train.deterministic": "true", "train.checkpoint_every_steps": 2, "train.log_every": 1,
        "train.progress": "false", "train.num_vis_images": 2, "optim.lr": 0.01,
        "schedule.warmup_iters": 2, "out_dir": str(out_dir), "run_name": run_name,
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def subprocess_env() -> dict[str, str]:
    """Environment for ``python -m anomalyseg`` children: repo and tests/plugins on the path (the tiny model's
    entry point), offline."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), str(PLUGINS), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())
    return env


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"tensors differ: {different}"


class CrashError(Exception):
    """Raised by :func:`train_until_crash` right after a checkpoint is saved: a run killed at that point."""


def train_until_crash(monkeypatch, cfg, when) -> None:
    """Train ``cfg`` on CPU and "kill" it right after the checkpoint save at which ``when(run)`` holds (the save
    completes, nothing after it runs); the real save is restored afterwards."""
    import pytest

    from anomalyseg.workflows import train_loop
    from anomalyseg.workflows.train import train

    real_save = train_loop.save

    def save_then_crash(run, name):
        real_save(run, name)
        if when(run):
            raise CrashError

    monkeypatch.setattr(train_loop, "save", save_then_crash)
    try:
        with pytest.raises(CrashError):
            train(cfg, device="cpu")
    finally:
        monkeypatch.setattr(train_loop, "save", real_save)
