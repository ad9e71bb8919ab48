"""Benchmark: wall time of short ``anomalyseg`` invocations, each in a fresh interpreter.

The root help and ``--version`` import no stage (see :mod:`anomalyseg.cli`); a command imports only the
module that registers it. The last row builds the full parser (every stage imported), which is what every
invocation cost before the command table existed: the yardstick.

Run: .venv/bin/python benchmarks/cli_startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = Path(sys.executable).with_name("anomalyseg")

CASES: tuple[tuple[str, list[str]], ...] = (
    ("anomalyseg --version", [str(SCRIPT), "--version"]),
    ("anomalyseg --help", [str(SCRIPT), "--help"]),
    ("anomalyseg report --help", [str(SCRIPT), "report", "--help"]),
    ("anomalyseg train --help", [str(SCRIPT), "train", "--help"]),
    ("anomalyseg evaluate --help", [str(SCRIPT), "evaluate", "--help"]),
    ("full parser (every stage)", [sys.executable, "-c", "from anomalyseg.cli import build_parser; build_parser()"]),
)


def _seconds(cmd: list[str], repeats: int) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run(cmd, capture_output=True, env=env, check=True)  # warm the file cache
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, env=env, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case (median shown)")
    args = parser.parse_args()
    if not SCRIPT.is_file():
        raise SystemExit(f"console script not found beside this Python: {SCRIPT}")
    print(f"{'invocation':<30} {'median s':>9}   ({args.repeats} runs each, fresh interpreter)")
    for label, cmd in CASES:
        print(f"{label:<30} {_seconds(cmd, args.repeats):9.2f}")


if __name__ == "__main__":
    main()
