"""Concurrent runs: the lock file (PID + host, stale takeover), stale temporary files, the directory fsync of
atomic writes, two ``fit-scorers`` into one states file, two ``train --resume`` of one run, and a resumed
epoch's ``train_loss``."""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tests.engine.helpers import REPO_ROOT, assert_same_weights, subprocess_env, tiny_overrides, train_until_crash
from tests.engine.test_evaluate import make_checkpoint, make_tree

from anomalyseg import files
from anomalyseg.checkpoints.io import load_checkpoint
from anomalyseg.cli import main as cli_main
from anomalyseg.config import load_config
from anomalyseg.errors import UserError
from anomalyseg.files import FileLock, atomic_write, pid_alive, remove_stale_tmp
from anomalyseg.workflows.train import train


def _dead_pid() -> int:
    """The PID of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_lock(path: Path, pid: int, host: str | None = None) -> None:
    path.write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "started": "2020-01-01T00:00:00"}))


# ---------------------------------------------------------------------------------------------------
# The lock, stale temporary files, fsync of the folder
# ---------------------------------------------------------------------------------------------------
def test_lock_is_exclusive_and_released(tmp_path):
    path = tmp_path / ".lock"
    with FileLock(path, "thing") as lock:
        record = json.loads(path.read_text())
        assert record["pid"] == os.getpid() and record["host"] == socket.gethostname() and record["started"]
        with pytest.raises(UserError, match=f"thing is in use by process {os.getpid()} "):
            FileLock(path, "thing").acquire()
        assert lock.held
    assert not path.exists()
    with FileLock(path, "thing"):  # free again
        pass


def test_live_holder_is_refused_in_one_line_naming_its_pid(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        path = tmp_path / ".lock"
        _write_lock(path, holder.pid)
        with pytest.raises(UserError) as err:
            FileLock(path, "run folder r", wait=0.2).acquire()
        msg = str(err.value)
        assert f"process {holder.pid} on {socket.gethostname()}" in msg and "\n" not in msg
        assert json.loads(path.read_text())["pid"] == holder.pid  # untouched
    finally:
        holder.kill()
        holder.wait()


def test_another_hosts_lock_counts_as_live(tmp_path):
    path = tmp_path / ".lock"
    _write_lock(path, _dead_pid(), host="some-other-host")
    with pytest.raises(UserError, match="on some-other-host"):
        FileLock(path, "x").acquire()


def test_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(tmp_path, caplog):
    path, dead = tmp_path / ".lock", _dead_pid()
    _write_lock(path, dead)
    with caplog.at_level(logging.WARNING, logger="anomalyseg"), FileLock(path, "run folder r"):
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert f"stale lock {path} of process {dead}" in caplog.text
    assert not path.exists() and not list(tmp_path.iterdir())  # nothing left aside


def test_zombie_and_garbage_locks_are_stale(tmp_path):
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])  # exits; not reaped until wait() below
    try:
        deadline = time.monotonic() + 30
        while pid_alive(zombie.pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not pid_alive(zombie.pid)  # kill(pid, 0) still succeeds on a zombie
        _write_lock(tmp_path / "z.lock", zombie.pid)
        with FileLock(tmp_path / "z.lock", "z"):
            pass
    finally:
        zombie.wait()
    garbage = tmp_path / "g.lock"
    garbage.write_text("")  # a writer died between O_EXCL create and write
    with pytest.raises(UserError, match="being created"):
        FileLock(garbage, "g").acquire()  # fresh: waited for a second, then refused
    os.utime(garbage, (time.time() - 60, time.time() - 60))
    with FileLock(garbage, "g"):  # old: stale
        pass


def test_lock_naming_our_pid_but_not_taken_here_is_stale(tmp_path):
    """A restarted container can reuse the PID of the process that left the lock (PID 1)."""
    path = tmp_path / ".lock"
    _write_lock(path, os.getpid())
    with FileLock(path, "x"):
        pass


def test_stale_tmp_files_of_dead_writers_are_removed(tmp_path):
    dead, live = _dead_pid(), os.getpid()
    stale = tmp_path / f".last.pt.{dead}-0123abcd.tmp"
    mine = tmp_path / f".last.pt.{live}-0123abcd.tmp"
    other = tmp_path / f".best.pt.{dead}-89abcdef.tmp"
    keep = tmp_path / "last.pt"
    for p in (stale, mine, other, keep):
        p.write_bytes(b"x")
    assert remove_stale_tmp(tmp_path, "last.pt") == [stale]
    assert remove_stale_tmp(tmp_path) == [other]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, keep.name])


def test_atomic_write_fsyncs_the_folder_after_the_rename(tmp_path, monkeypatch):
    synced: list[tuple[bool, bool]] = []  # (is a folder, target exists yet)
    target = tmp_path / "sub" / "f.txt"
    real = os.fsync

    def spy(fd):
        synced.append((stat.S_ISDIR(os.fstat(fd).st_mode), target.exists()))
        return real(fd)

    monkeypatch.setattr(files.os, "fsync", spy)
    atomic_write(target, "hello")
    assert target.read_text() == "hello"
    assert synced == [(False, False), (True, True)]  # the data before the rename, the folder after it


# ---------------------------------------------------------------------------------------------------
# fit-scorers: two processes into one states file
# ---------------------------------------------------------------------------------------------------
#: A fit-scorers child that, once fitted, waits for the other child to have fitted too: both have read the
#: states file before either writes it (the lost-update window, made certain).
_FIT_CHILD = """
import pathlib, sys, time
import anomalyseg.engine.fit as F
fit = F.fit_scorers
def fit_then_meet(*a, **k):
    out = fit(*a, **k)
    pathlib.Path(sys.argv[1]).touch()
    deadline = time.time() + 120
    while not pathlib.Path(sys.argv[2]).exists() and time.time() < deadline:
        time.sleep(0.02)
    return out
F.fit_scorers = fit_then_meet
from anomalyseg.cli import main
sys.exit(main(sys.argv[3:]))
"""


def _fit_both(tmp_path: Path, tree: Path, ckpt: Path, scorers: tuple[str, str]) -> list[tuple[int, str]]:
    meet = [tmp_path / f"fitted.{i}" for i in range(2)]
    procs = []
    for i, name in enumerate(scorers):
        args = ["fit-scorers", "--checkpoint", str(ckpt), "--data-root", str(tree), "--workers", "0", "--no-progress",
                "--device", "cpu", "--scorers", name]
        procs.append(subprocess.Popen([sys.executable, "-c", _FIT_CHILD, str(meet[i]), str(meet[1 - i]), *args],
                                      cwd=REPO_ROOT, env=subprocess_env(), stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True))
    return [(p.wait(timeout=300), p.stdout.read()) for p in procs]


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_tree(tmp_path_factory.mktemp("conc") / "sh")


@pytest.mark.slow
def test_two_fits_of_different_scorers_both_land_in_the_states_file(tree, tmp_path):
    ckpt = make_checkpoint(tmp_path / "m.pt")
    results = _fit_both(tmp_path, tree, ckpt, ("sml", "mahalanobis"))
    assert [rc for rc, _ in results] == [0, 0], [out[-1500:] for _, out in results]
    states = torch.load(tmp_path / "m.scorers.pt", map_location="cpu", weights_only=True)
    assert set(states["scorers"]) == {"sml", "mahalanobis"}  # before: one of them, the last writer's
    assert not (tmp_path / "m.scorers.pt.lock").exists()
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.slow
def test_two_fits_of_the_same_scorer_one_is_refused(tree, tmp_path):
    ckpt = make_checkpoint(tmp_path / "m.pt")
    results = _fit_both(tmp_path, tree, ckpt, ("sml", "sml"))
    assert sorted(rc for rc, _ in results) == [0, 2], [out[-1500:] for _, out in results]
    refused = next(out for rc, out in results if rc == 2)
    assert "already holds fitted states for sml; pass --force" in refused.strip().splitlines()[-1]
    states = torch.load(tmp_path / "m.scorers.pt", map_location="cpu", weights_only=True)
    assert set(states["scorers"]) == {"sml"}


# ---------------------------------------------------------------------------------------------------
# train --resume: two processes on one run
# ---------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_two_resumes_of_one_run_one_is_refused(synth_root, tmp_path):
    out = tmp_path / "runs"
    # one finished epoch; the model sleeps in training forwards, so a resume holds the run for a while
    run_dir = train(load_config(None, tiny_overrides(synth_root, out, "r", **{"train.epochs": 1,
                                                                             "model.options": "{delay: 0.05}"})),
                    device="cpu")
    assert not (run_dir / ".lock").exists()
    cmd = [sys.executable, "-m", "anomalyseg", "train", "--resume", str(run_dir), "--device", "cpu", "train.epochs=3"]
    procs = [subprocess.Popen(cmd, cwd=REPO_ROOT, env=subprocess_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stdout.read()) for p in procs]
    assert sorted(rc for rc, _ in results) == [0, 2], [o[-1500:] for _, o in results]
    winner = procs[[rc for rc, _ in results].index(0)]
    refusal = next(o for rc, o in results if rc == 2).strip().splitlines()[-1]
    assert refusal.startswith(f"anomalyseg: error: run folder {run_dir} is in use by process {winner.pid} ")
    epochs = [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]  # before: [1, 2, 2, 3, 3]
    assert len(list((run_dir / "tb").glob("events.*"))) == 2  # the first run's and one resume's
    assert not (run_dir / ".lock").exists()


def test_resume_of_a_live_run_is_refused_before_reading_it(synth_root, tmp_path, capsys):
    run_dir = train(load_config(None, tiny_overrides(synth_root, tmp_path, "r", **{"train.epochs": 1})), device="cpu")
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _write_lock(run_dir / ".lock", holder.pid)
        before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()}
        assert cli_main(["train", "--resume", str(run_dir), "train.epochs=2"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"is in use by process {holder.pid}" in err[0]
        assert {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()} == before
    finally:
        holder.kill()
        holder.wait()


# ---------------------------------------------------------------------------------------------------
# Resume after a crash: stale lock and .tmp files, and the resumed epoch's train_loss
# ---------------------------------------------------------------------------------------------------

def test_resume_after_crash_takes_over_cleans_up_and_train_loss_covers_the_epoch(synth_root, tmp_path, monkeypatch,
                                                                                caplog):
    out = tmp_path / "runs"
    # 16 samples / batch 4 = 4 steps per epoch; a mid-epoch checkpoint every 3 steps: step 3 (epoch 1) and
    # step 6 (epoch 2, batch 2), so the epoch the run resumes in has 2 batches before the checkpoint
    extra = {"train.checkpoint_every_steps": 3}
    ref_dir = train(load_config(None, tiny_overrides(synth_root, out, "ref", **extra)), device="cpu")
    ref = load_checkpoint(ref_dir / "checkpoints" / "last.pt")

    train_until_crash(monkeypatch, load_config(None, tiny_overrides(synth_root, out, "crashed", **extra)),
                      lambda run: run.state.step == 6 and run.state.batch_in_epoch == 2)
    run_dir = out / "crashed"
    partial = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert (partial["epoch"], partial["batch_in_epoch"], partial["step"]) == (1, 2, 6)
    assert partial["loop"]["loss_count"] == 2 and partial["loop"]["loss_sum"] > 0

    # what a SIGKILL would leave: its lock and a half-written checkpoint
    dead = _dead_pid()
    _write_lock(run_dir / ".lock", dead)
    tmp_file = run_dir / "checkpoints" / f".last.pt.{dead}-0123abcd.tmp"
    tmp_file.write_bytes(b"half a checkpoint")
    with caplog.at_level(logging.INFO, logger="anomalyseg"):
        assert cli_main(["train", "--resume", str(run_dir)]) == 0
    assert f"stale lock {run_dir / '.lock'} of process {dead}" in caplog.text
    assert not tmp_file.exists() and not (run_dir / ".lock").exists()

    final = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert_same_weights(final["model"], ref["model"])
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    ref_history = [json.loads(line) for line in (ref_dir / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]
    assert [h["train_loss"] for h in history] == [h["train_loss"] for h in ref_history]  # bit-identical
    assert final["loop"]["loss_sum"] == 0.0 and final["loop"]["loss_count"] == 0  # reset at the epoch's end


def test_checkpoint_of_an_older_version_without_loss_sum_still_resumes(synth_root, tmp_path):
    run_dir = train(load_config(None, tiny_overrides(synth_root, tmp_path, "r", **{"train.epochs": 1})), device="cpu")
    last = run_dir / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(last)
    for key in ("loss_sum", "loss_count"):
        del ckpt["loop"][key]
    torch.save(ckpt, last)
    cfg = load_config(None, tiny_overrides(synth_root, tmp_path, "r", **{"train.epochs": 2}))
    assert train(cfg, device="cpu", resume=run_dir) == run_dir
    assert load_checkpoint(last)["epoch"] == 2
