"""Training with outlier exposure and ``model.init_from`` (``train --init-from``) through the workflow.

Pasted outliers come from a stand-in here: the training transform marks a square of every crop as
OUTLIER_LABEL (the real paster lives in the data layer)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.engine.helpers import assert_same_weights, tiny_overrides

import anomalyseg.workflows.train as train_workflow
from anomalyseg.checkpoints.io import file_sha256, load_checkpoint, resolve_checkpoint, save_checkpoint
from anomalyseg.config import load_config
from anomalyseg.constants import OUTLIER_LABEL
from anomalyseg.data.transforms import TrainTransform
from anomalyseg.errors import UserError
from anomalyseg.models.outputs import SegOutput
from anomalyseg.scoring import get_scorer
from anomalyseg.workflows.train import train


@pytest.fixture
def pasted_squares(monkeypatch):
    """Every training crop gets a 12x12 square of OUTLIER_LABEL pixels."""
    original = TrainTransform.__call__

    def call(self, image, label):
        image, label = original(self, image, label)
        label = label.clone()
        label[..., 4:16, 8:20] = OUTLIER_LABEL
        return image, label

    monkeypatch.setattr(TrainTransform, "__call__", call)


@pytest.fixture(scope="module")
def closed_set_run(synth_root, tmp_path_factory):
    """A 1-epoch closed-set tiny run to fine-tune from."""
    out = tmp_path_factory.mktemp("closed")
    cfg = load_config(None, tiny_overrides(synth_root, out, "closed", **{"train.epochs": 1,
                                                                         "data.max_train_samples": 8}))
    return train(cfg, device="cpu")


def test_fine_tune_with_outlier_exposure_starts_from_the_checkpoint_and_logs_each_term(
        synth_root, tmp_path, closed_set_run, pasted_squares, monkeypatch):
    started: dict[str, dict[str, torch.Tensor]] = {}
    run_epochs = train_workflow.run_epochs

    def capture(run):  # the weights the first step starts from
        started["model"] = {k: v.clone() for k, v in run.parts.bare.state_dict().items()}
        run_epochs(run)

    monkeypatch.setattr(train_workflow, "run_epochs", capture)
    cfg = load_config(None, tiny_overrides(synth_root, tmp_path, "oe", **{
        "train.epochs": 1, "data.max_train_samples": 8, "model.init_from": str(closed_set_run),
        "outlier_exposure.enabled": "true", "outlier_exposure.loss": "energy", "outlier_exposure.margin_out": 0,
        "train.checkpoint_every_steps": 0}))
    run = train(cfg, device="cpu")

    source = resolve_checkpoint(closed_set_run)  # a run folder resolves to its best checkpoint
    assert_same_weights(started["model"], load_checkpoint(source)["model"])
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["init_from"]["path"] == str(source.resolve())
    assert ckpt["init_from"]["sha256"] == file_sha256(source)
    assert (ckpt["epoch"], ckpt["step"]) == (1, 2)  # a fresh count: 8 samples / batch 4
    assert ckpt["outlier_exposure"] == {"loss": "energy", "weight": 0.1, "margin_in": -12.0, "margin_out": 0.0,
                                        "paper_defaults": ["weight", "margin_in"],
                                        "source": ckpt["outlier_exposure"]["source"], "auto": {}}
    log_text = (run / "train.log").read_text()
    assert "outlier loss energy: weight 0.1, margin_in -12, margin_out 0 (paper default: weight, margin_in" in log_text
    assert f"weights from {source.resolve()}" in log_text

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb"), size_guidance={"images": 0}).Reload()
    scalars = {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    parts = ("loss_ce", "loss_outlier", "loss_outlier_in", "loss_outlier_out", "outlier_fraction")
    assert {f"train/{p}" for p in parts} <= set(scalars)
    assert len(scalars["train/loss"]) == 2  # log_every 1: each step, one batch per window
    for total, ce, out, frac in zip(scalars["train/loss"], scalars["train/loss_ce"], scalars["train/loss_outlier"],
                                    scalars["train/outlier_fraction"]):
        assert total == pytest.approx(ce + 0.1 * out, rel=1e-5)
        assert 0 < frac < 1
    # an untrained net's energies (~ -3) lie between the margins: both hinges active
    assert all(v > 0 for v in scalars["train/loss_outlier_in"] + scalars["train/loss_outlier_out"])

    # a resumed fine-tuning run keeps the record of where its weights started
    resumed = train(load_config(run / "config.yaml", ["train.epochs=2"]), device="cpu", resume=run)
    assert load_checkpoint(resumed / "checkpoints" / "last.pt")["init_from"] == ckpt["init_from"]


def test_auto_margins_come_from_the_starting_model_on_val_are_stored_and_reused_on_resume(
        synth_root, tmp_path, closed_set_run, pasted_squares, monkeypatch):
    started = {}
    run_epochs = train_workflow.run_epochs

    def capture(run):  # the model the calibration saw: the init_from weights, before the first step
        started["model"] = {k: v.clone() for k, v in run.parts.bare.state_dict().items()}
        started["val"] = [run.data.sets.val[i] for i in range(len(run.data.sets.val))]
        run_epochs(run)

    monkeypatch.setattr(train_workflow, "run_epochs", capture)
    common = {"train.epochs": 1, "data.max_train_samples": 8, "model.init_from": str(closed_set_run),
              "outlier_exposure.enabled": "true", "outlier_exposure.loss": "rba", "train.checkpoint_every_steps": 0}
    auto = train(load_config(None, tiny_overrides(synth_root, tmp_path, "auto", **common, **{
        "outlier_exposure.margin_in": "auto", "outlier_exposure.margin_out": "auto"})), device="cpu")
    stored = load_checkpoint(auto / "checkpoints" / "last.pt")["outlier_exposure"]

    # independent reference: the registry's rba scorer on the starting model's eval-mode logits, numpy quantile
    model = load_checkpoint(resolve_checkpoint(closed_set_run))
    from tests.engine.tiny_model import TinySeg
    net = TinySeg(model["num_classes"])
    net.load_state_dict(started["model"])
    net.eval()
    with torch.no_grad():
        ref = np.concatenate([get_scorer("rba").score(SegOutput(net(s["image"][None]).logits))[0].numpy()[
            s["label"].numpy() < model["num_classes"]] for s in started["val"]])
    assert stored["margin_in"] == pytest.approx(float(np.quantile(ref, 0.95)), rel=1e-5, abs=1e-5)
    assert stored["margin_out"] == pytest.approx(stored["margin_in"] + 5.0)
    assert stored["auto"]["margin_in"] == f"auto: q0.95 of val inlier RbA score over {ref.size} pixels of 6 images"
    log_text = (auto / "train.log").read_text()
    assert f"margin_in {stored['margin_in']:g} (auto: q0.95 of val inlier RbA score over {ref.size}" in log_text

    # the same margins as numbers: bit-identical weights (calibrating drew nothing from the run's RNGs)
    numeric = train(load_config(None, tiny_overrides(synth_root, tmp_path, "numeric", **common, **{
        "outlier_exposure.margin_in": repr(stored["margin_in"]),
        "outlier_exposure.margin_out": repr(stored["margin_out"])})), device="cpu")
    assert_same_weights(load_checkpoint(numeric / "checkpoints" / "last.pt")["model"],
                        load_checkpoint(auto / "checkpoints" / "last.pt")["model"])

    def no_calibration(*args, **kwargs):
        raise AssertionError("a resumed run must reuse its stored margins")

    monkeypatch.setattr(train_workflow, "calibrate_margins", no_calibration)
    train(load_config(auto / "config.yaml", ["train.epochs=2"]), device="cpu", resume=auto)
    resumed = load_checkpoint(auto / "checkpoints" / "last.pt")
    assert resumed["step"] == 4 and resumed["outlier_exposure"] == stored


def test_init_from_refuses_other_models_and_missing_files(synth_root, tmp_path, closed_set_run):
    def attempt(init_from, **extra):
        overrides = tiny_overrides(synth_root, tmp_path, "bad", **{"train.epochs": 1, "data.max_train_samples": 4,
                                                                   "model.init_from": str(init_from), **extra})
        with pytest.raises(UserError) as exc:
            train(load_config(None, overrides), device="cpu")
        assert "\n" not in str(exc.value)
        return str(exc.value)

    assert "model.init_from: checkpoint not found" in attempt(tmp_path / "nowhere.pt")
    assert "shape mismatch" in attempt(closed_set_run, **{"model.options": "{width: 4}"})
    other = load_checkpoint(resolve_checkpoint(closed_set_run))
    other["model_name"] = "enet"
    renamed = save_checkpoint(tmp_path / "enet.pt", other)
    assert "holds a 'enet' model, not 'tiny'" in attempt(renamed)
    assert not (tmp_path / "bad").exists()  # refused before the run folder
