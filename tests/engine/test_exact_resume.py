"""`anomalyseg train --resume` after SIGKILL mid-epoch ends with the same weights as an uninterrupted run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
from tests.engine.helpers import REPO_ROOT, assert_same_weights, subprocess_env, tiny_overrides, train_until_crash

from anomalyseg.checkpoints.io import load_checkpoint
from anomalyseg.cli import main as cli_main
from anomalyseg.config import load_config
from anomalyseg.configio import dump_config
from anomalyseg.workflows.train import train


def _wait_for(proc: subprocess.Popen, log_file, needle: str, timeout: float = 60.0) -> None:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if log_file.is_file() and needle in log_file.read_text():
            return
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"training exited early with {proc.returncode}: {out[-2000:]}")
        time.sleep(0.01)
    proc.kill()
    pytest.fail(f"no {needle!r} in {log_file} after {timeout} s")


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(synth_root, tmp_path, capsys):
    out = tmp_path / "runs"
    # uninterrupted reference, in this process, loading in the main process (workers=0)
    ref_dir = train(load_config(None, tiny_overrides(synth_root, out, "ref")), device="cpu")
    ref = load_checkpoint(ref_dir / "checkpoints" / "last.pt")
    assert ref["epoch"] == 2 and ref["step"] == 8

    # the same run in a child process with 2 loader workers, slowed down so it is killed mid-epoch
    config = tmp_path / "tiny.yaml"
    dump_config(load_config(None, tiny_overrides(synth_root, out, "unused")), config)
    cmd = [sys.executable, "-m", "anomalyseg", "train", str(config), "run_name=killed", "data.workers=2",
           "model.options={delay: 0.2}"]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    run_dir = out / "killed"
    _wait_for(proc, run_dir / "train.log", "saved mid-epoch checkpoint at step 2")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    partial = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert (partial["epoch"], partial["batch_in_epoch"], partial["step"]) == (0, 2, 2)  # mid-epoch 1

    # resume with the run's own config (no CONFIG argument) through the CLI; the loader worker count may change
    # (it does not touch the numbers), the model may not
    assert cli_main(["train", "--resume", str(run_dir), "model.options={delay: 0.0}"]) == 2
    assert "model.options.delay" in capsys.readouterr().err
    assert cli_main(["train", "--resume", str(run_dir), "data.workers=1"]) == 0
    final = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert final["step"] == 8 and final["epoch"] == 2
    assert_same_weights(final["model"], ref["model"])
    assert final["optimizer"]["state"][0]["exp_avg"].equal(ref["optimizer"]["state"][0]["exp_avg"])
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    ref_history = [json.loads(line) for line in (ref_dir / "metrics.jsonl").read_text().splitlines()]
    assert [h["miou"] for h in history] == [h["miou"] for h in ref_history]
    # the resumed epoch's loss covers the batches before the checkpoint too (their sum is in the checkpoint)
    assert [h["train_loss"] for h in history] == [h["train_loss"] for h in ref_history]
    assert not (run_dir / ".lock").exists()  # the killed run's lock was taken over as stale, then released
    assert "resuming at epoch 1, batch 2 (step 2)" in (run_dir / "train.log").read_text()



def _logged_losses(run_dir) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0}).Reload()
    return [(e.step, e.value) for e in events.Scalars("train/loss")]


def test_resume_mid_window_logs_the_same_train_loss_points(synth_root, tmp_path, monkeypatch):
    """A crash after a mid-epoch checkpoint that falls inside a logging window (log every 3 steps, saved at step 6
    of 8): the resumed run's first ``train/loss`` point averages steps 5-7 like the uninterrupted run's, from the
    window sum saved in the checkpoint, not only step 7."""
    extra = {"train.log_every": 3, "train.num_vis_images": 0}
    ref_dir = train(load_config(None, tiny_overrides(synth_root, tmp_path, "ref", **extra)), device="cpu")
    reference = _logged_losses(ref_dir)
    assert [step for step, _ in reference] == [3, 7]  # 4 steps per epoch: step 3 of each epoch

    train_until_crash(monkeypatch, load_config(None, tiny_overrides(synth_root, tmp_path, "crashed", **extra)),
                      lambda run: run.state.step == 6)
    run_dir = tmp_path / "crashed"
    partial = load_checkpoint(run_dir / "checkpoints" / "last.pt")["loop"]
    assert (partial["batch_in_epoch"], partial["loss_window_count"]) == (2, 2) and partial["loss_window_sum"] > 0
    assert train(load_config(None, tiny_overrides(synth_root, tmp_path, "crashed", **extra)), device="cpu",
                 resume=run_dir) == run_dir
    assert _logged_losses(run_dir) == reference
    final = load_checkpoint(run_dir / "checkpoints" / "last.pt")["loop"]
    assert (final["loss_window_sum"], final["loss_window_count"], final["loss_window_terms"]) == (0.0, 0, {})
