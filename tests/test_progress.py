"""Progress output: tqdm on a terminal, one log line per N % when stderr is a file or a pipe (no carriage
returns in logs), and every loop of the package goes through the one helper."""

from __future__ import annotations

import io
import logging
import re
import subprocess
import sys
from pathlib import Path

from tqdm.auto import tqdm

from anomalyseg.progress import LogProgress, progress_bar

SRC = Path(__file__).resolve().parents[1] / "src"


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_not_a_terminal_logs_one_line_per_ten_percent(caplog):
    caplog.set_level(logging.INFO, logger="anomalyseg.progress")
    bar = progress_bar(range(500), desc="epoch 1", unit="batch", stream=io.StringIO(), dynamic_ncols=True)
    assert isinstance(bar, LogProgress)
    assert sum(1 for _ in bar) == 500
    lines = [r.getMessage() for r in caplog.records if r.name == "anomalyseg.progress"]
    assert len(lines) == 10, lines
    assert lines[0].startswith("epoch 1:  10 % (50/500 batch") and lines[-1].startswith("epoch 1: 100 % (500/500")
    assert not any("\r" in line for line in lines)


def test_manual_updates_postfix_initial_and_early_close(caplog):
    caplog.set_level(logging.INFO, logger="anomalyseg.progress")
    with progress_bar(total=40, initial=10, desc="epoch 2", unit="batch", stream=io.StringIO()) as bar:
        bar.set_postfix(loss="0.5000")
        for _ in range(10):
            bar.update(1)
    lines = [r.getMessage() for r in caplog.records]
    # 25 % at the start (resume), then 30 %, 40 %, 50 % and a closing line where it stopped
    assert [re.match(r"epoch 2: +(\d+) %", line).group(1) for line in lines] == ["30", "40", "50", "50"], lines
    assert lines[0].endswith("loss=0.5000")


def test_bytes_without_total_and_scaled_units(caplog):
    caplog.set_level(logging.INFO, logger="anomalyseg.progress")
    bar = LogProgress(total=4 * 1024**2, unit="B", unit_scale=True, unit_divisor=1024, desc="x.zip", percent=50)
    bar.update(2 * 1024**2)
    bar.update(2 * 1024**2)
    bar.close()
    assert [r.getMessage().split(", ")[0] for r in caplog.records] == ["x.zip:  50 % (2.0M/4.0M B)",
                                                                          "x.zip: 100 % (4.0M/4.0M B)"]


def test_terminal_and_disabled_give_tqdm():
    assert isinstance(progress_bar(range(3), stream=_Tty()), tqdm)
    assert isinstance(progress_bar(range(3), disable=True), tqdm)


def test_percent_from_environment(monkeypatch):
    monkeypatch.setenv("ANOMALYSEG_PROGRESS_PERCENT", "25")
    assert LogProgress(total=8).percent == 25
    monkeypatch.setenv("ANOMALYSEG_PROGRESS_PERCENT", "nonsense")
    assert LogProgress(total=8).percent == 10


def test_every_loop_uses_the_helper():
    offenders = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py")
                 if p.name != "progress.py" and re.search(r"\btqdm\(|from tqdm", p.read_text())]
    assert offenders == []


def test_piped_stderr_has_no_carriage_returns(tmp_path):
    code = ("import logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stderr);"
            "from anomalyseg.progress import progress_bar\n"
            "for _ in progress_bar(range(300), desc='fit', unit='batch'): pass")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr and len(done.stderr.splitlines()) == 10, done.stderr
