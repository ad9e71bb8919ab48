"""``anomalyseg sweep``: grid parsing, an interrupted sweep that resumes (fake runner injected), stale
results refused, and one tiny real sweep (training + evaluation) that skips its finished runs."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import pytest
import yaml
from tests.report.helpers import make_record

from anomalyseg.cli import sweep as commands
from anomalyseg.errors import UserError
from anomalyseg.report.results import read_results
from anomalyseg.workflows.sweep import (
    SweepPoint,
    SweepSpec,
    load_sweep,
    parse_grid,
    points,
    run_sweep,
    scorer_spec,
    split_values,
)


def base_yaml(path: Path, **sweep: object) -> Path:
    path.write_text(yaml.safe_dump({"train": {"epochs": 1}, "sweep": {"out": str(path.parent / "out"), **sweep}}))
    return path


def test_grid_values():
    assert split_values("1,2.5,abc") == ["1", "2.5", "abc"]
    assert split_values("[48,64],[96,128]") == ["[48,64]", "[96,128]"]
    assert split_values("none|scales=0.75,1.0,flip") == ["none", "scales=0.75,1.0,flip"]
    assert parse_grid(["a.b=1,2", "c.d=x"]) == [("a.b", ["1", "2"]), ("c.d", ["x"])]
    with pytest.raises(UserError, match="empty item"):
        split_values("1,,2")
    with pytest.raises(UserError, match="given twice"):
        parse_grid(["a.b=1", "a.b=2"])
    assert scorer_spec("max_logit,energy", {"energy": {"temperature": "2"}}) == "max_logit,energy:temperature=2"
    added = scorer_spec("max_logit", {"sml": {"boundary_suppression": "false"}})
    assert added == "max_logit,sml:boundary_suppression=false"


def test_points_and_key_checks(tmp_path):
    spec = load_sweep(base_yaml(tmp_path / "b.yaml"), ["data.hflip=true,false", "scorer.energy.temperature=1,2",
                                                        "eval.split=test"])
    pts = points(spec)
    assert [p.values for p in pts][:2] == [
        {"data.hflip": "true", "scorer.energy.temperature": "1", "eval.split": "test"},
        {"data.hflip": "true", "scorer.energy.temperature": "2", "eval.split": "test"}]
    assert len({p.name for p in pts}) == 4 and all("." not in p.name for p in pts)
    assert pts[0].train_name == pts[1].train_name == "data_hflip=true" != pts[2].train_name  # training shared
    assert pts[0].train_overrides == ["data.hflip=true"] and pts[1].scorer_params == {"energy": {"temperature": "2"}}
    with pytest.raises(UserError, match=r"data\.nothing"):
        load_sweep(tmp_path / "b.yaml", ["data.nothing=1,2"])
    with pytest.raises(UserError, match="expected true/false"):
        load_sweep(tmp_path / "b.yaml", ["data.hflip=maybe"])
    with pytest.raises(UserError, match=r"scorer\.NAME\.PARAM"):
        load_sweep(tmp_path / "b.yaml", ["scorer.energy=1"])
    with pytest.raises(UserError, match=r"sweep\.checkpoint is set"):
        load_sweep(base_yaml(tmp_path / "c.yaml", checkpoint="x.pt"), ["optim.lr=0.1,0.01"])


class FakeRunner:
    """Records the points it runs; raises KeyboardInterrupt (a user's Ctrl-C) at call number ``stop_at``."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.calls: list[dict[str, str]] = []
        self.stop_at = stop_at

    def __call__(self, point: SweepPoint, spec: SweepSpec) -> dict:
        self.calls.append(point.values)
        if self.stop_at is not None and len(self.calls) == self.stop_at:
            raise KeyboardInterrupt
        separation = float(point.values["scorer.energy.temperature"])
        return make_record({"energy": separation}, miou=0.3 if point.values["data.hflip"] == "true" else 0.4)


def test_interrupted_sweep_resumes(tmp_path):
    spec = load_sweep(base_yaml(tmp_path / "b.yaml"), ["data.hflip=true,false", "scorer.energy.temperature=1,2"])
    first = FakeRunner(stop_at=3)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, runner=first)
    assert len(first.calls) == 3
    assert len(list((spec.out / "results").glob("*.json"))) == 2
    second = FakeRunner()
    summary = run_sweep(spec, runner=second)
    assert second.calls == [*first.calls[2:], {"data.hflip": "false", "scorer.energy.temperature": "2"}]
    assert [r["status"] for r in summary["runs"]] == ["done", "done", "ran", "ran"]
    third = FakeRunner()
    assert [r["status"] for r in run_sweep(spec, runner=third)["runs"]] == ["done"] * 4 and third.calls == []
    rows = list(csv.DictReader((spec.out / "table.csv").open()))
    assert [(r["data.hflip"], r["scorer.energy.temperature"]) for r in rows] == [
        ("true", "1"), ("true", "2"), ("false", "1"), ("false", "2")]
    assert [float(r["mIoU"]) for r in rows] == [0.3, 0.3, 0.4, 0.4]
    record = read_results(spec.out / "results" / f"{points(spec)[3].name}.json")
    assert float(rows[3]["pooled AUPR"]) == record["scorers"]["energy"]["metrics"]["pooled"]["aupr"]
    assert record["sweep"]["point"] == {"data.hflip": "false", "scorer.energy.temperature": "2"}
    md = (spec.out / "table.md").read_text()
    assert "| data.hflip | scorer.energy.temperature | scorer | mIoU |" in md

    # the base config changed: the finished results are refused, not mixed into one table
    changed = tmp_path / "b.yaml"
    changed.write_text(changed.read_text().replace("epochs: 1", "epochs: 2"))
    spec2 = load_sweep(changed, ["data.hflip=true,false", "scorer.energy.temperature=1,2"])
    with pytest.raises(UserError, match="another base config"):
        run_sweep(spec2, runner=FakeRunner())


@pytest.mark.slow
def test_tiny_real_sweep(tmp_path):
    """Two real trainings (tiny model, 1 epoch on 64x48 synthetic images) and evaluations through the CLI;
    the re-run skips both."""
    from tests.engine.helpers import TINY_MODEL

    from anomalyseg.data.synthetic import write_synthetic

    root = write_synthetic(tmp_path / "sh", train=4, val=2, test=2, size=(64, 48), seed=5)
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({
        "data": {"root": str(root), "crop_size": [48, 64], "batch_size": 2, "workers": 0, "val_batch_size": 2},
        "model": {"name": TINY_MODEL, "options": {"width": 4}},
        "train": {"epochs": 1, "progress": False, "device": "cpu", "checkpoint_every_steps": 0, "num_vis_images": 0},
        "sweep": {"out": str(tmp_path / "sweep"), "evaluate": {"scorers": "max_logit,energy", "workers": 0}},
    }))
    parser = argparse.ArgumentParser(prog="anomalyseg")
    commands.register(parser.add_subparsers())
    args = parser.parse_args(["sweep", str(base), "--grid", "optim.lr=0.01,0.001", "--device", "cpu"])
    assert args.func(args) == 0
    results = sorted((tmp_path / "sweep" / "results").glob("*.json"))
    assert [p.stem for p in results] == ["optim_lr=0_001", "optim_lr=0_01"]
    for path in results:
        record = read_results(path)
        lr = float(record["sweep"]["point"]["optim.lr"])
        ckpt = Path(record["checkpoint"]["path"])
        assert ckpt.parent.parent.parent == tmp_path / "sweep" / "runs" and ckpt.is_file()
        config = yaml.safe_load((ckpt.parent.parent / "config.yaml").read_text())
        assert config["optim"]["lr"] == lr and set(record["scorers"]) == {"max_logit", "energy"}
    stamps = [p.stat().st_mtime_ns for p in results]
    args = parser.parse_args(["sweep", str(base), "--grid", "optim.lr=0.01,0.001", "--device", "cpu"])
    assert args.func(args) == 0
    assert [p.stat().st_mtime_ns for p in results] == stamps
    assert "optim.lr" in (tmp_path / "sweep" / "table.md").read_text()


@pytest.mark.slow
def test_sweep_continues_an_interrupted_training(tmp_path):
    """A training folder left with last.pt at epoch 1 of 2 (as a killed sweep leaves it) is resumed, not
    restarted; a folder without any checkpoint is moved aside and trained from scratch."""
    from tests.engine.helpers import TINY_MODEL

    from anomalyseg.checkpoints.io import load_checkpoint
    from anomalyseg.config import Config
    from anomalyseg.configio import apply_overrides, config_from_dict
    from anomalyseg.data.synthetic import write_synthetic
    from anomalyseg.workflows.sweep import _train
    from anomalyseg.workflows.train import train

    root = write_synthetic(tmp_path / "sh", train=4, val=2, test=1, size=(64, 48), seed=6)
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({
        "data": {"root": str(root), "crop_size": [48, 64], "batch_size": 2, "workers": 0, "val_batch_size": 2},
        "model": {"name": TINY_MODEL, "options": {"width": 4}},
        "train": {"epochs": 2, "progress": False, "device": "cpu", "checkpoint_every_steps": 0, "num_vis_images": 0},
        "sweep": {"out": str(tmp_path / "sweep")},
    }))
    spec = load_sweep(base, ["optim.lr=0.01", "train.seed=0,1"])
    first, second = points(spec)
    runs = spec.out / "runs"
    killed = apply_overrides(Config, spec.base, [*first.train_overrides, "train.epochs=1", f"out_dir={runs}",
                                                 f"run_name={first.train_name}"])
    train(config_from_dict(Config, killed))  # stands for a sweep killed after epoch 1 of 2
    history = load_checkpoint(runs / first.train_name / "checkpoints" / "last.pt")["loop"]["history"]
    (runs / second.train_name).mkdir(parents=True)  # killed before its first checkpoint
    ckpt = _train(first, spec)
    last = load_checkpoint(runs / first.train_name / "checkpoints" / "last.pt")
    assert ckpt.parent == runs / first.train_name / "checkpoints"
    assert last["epoch"] == 2 and last["loop"]["history"][:1] == history  # continued: epoch 1 kept
    _train(second, spec)
    assert load_checkpoint(runs / second.train_name / "checkpoints" / "last.pt")["epoch"] == 2
    assert len(list(runs.glob(f"{second.train_name}.incomplete-*"))) == 1
