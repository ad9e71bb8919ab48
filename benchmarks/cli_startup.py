"""Benchmark: wall time of short ``anomalyseg`` invocations, each in a fresh interpreter.

The root help and ``--version`` import no stage (see :mod:`anomalyseg.cli`); a command imports only the
module that registers it, and ``COMMAND --help`` imports no torch (the stage modules import it inside
their handlers). One row per command of :data:`anomalyseg.cli.COMMANDS`, plus the nested ``data`` and
``models`` actions. ``full parser`` imports every stage's commands module (what every invocation did before
the command table); the last row imports torch, torchvision and the data loaders, what each ``COMMAND
--help`` cost while the commands modules imported them at module level: the yardstick. The last column says
whether the invocation imported torch (from ``python -X importtime``, one extra run per case).

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

from anomalyseg.cli import build_parser

SCRIPT = Path(sys.executable).with_name("anomalyseg")
NESTED: tuple[tuple[str, ...], ...] = (("data", "check"), ("data", "synth"), ("models", "list"))


def _cases() -> list[tuple[str, list[str]]]:
    cases = [("anomalyseg --version", [str(SCRIPT), "--version"]), ("anomalyseg --help", [str(SCRIPT), "--help"])]
    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    for words in [(c,) for c in commands] + list(NESTED):
        cases.append((f"anomalyseg {' '.join(words)} --help", [str(SCRIPT), *words, "--help"]))
    cases.append(("full parser (every stage)",
                  [sys.executable, "-c", "from anomalyseg.cli import build_parser; build_parser()"]))
    cases.append(("import torch + loaders (yardstick)",
                  [sys.executable, "-c", "import anomalyseg.data.streethazards, anomalyseg.models.registry"]))
    return cases


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1"}


def _seconds(cmd: list[str], repeats: int) -> float:
    subprocess.run(cmd, capture_output=True, env=_env(), check=True)  # warm the file cache
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, env=_env(), check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _imports_torch(cmd: list[str]) -> bool:
    """``-X importtime`` lists every module imported, on stderr."""
    python = [sys.executable, "-X", "importtime"]
    full = python + (["-c", "import sys; from anomalyseg.cli import main; sys.exit(main())", *cmd[1:]]
                     if cmd[0] == str(SCRIPT) else cmd[1:])
    res = subprocess.run(full, capture_output=True, text=True, env=_env(), check=True)
    return any(line.rsplit("|", 1)[-1].strip() == "torch" for line in res.stderr.splitlines())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per case (median shown)")
    args = parser.parse_args()
    if not SCRIPT.is_file():
        raise SystemExit(f"console script not found beside this Python: {SCRIPT}")
    print(f"{'invocation':<40} {'median s':>9}  {'torch':>5}   ({args.repeats} runs each, fresh interpreter)")
    for label, cmd in _cases():
        seconds = _seconds(cmd, args.repeats)
        print(f"{label:<40} {seconds:9.2f}  {'yes' if _imports_torch(cmd) else 'no':>5}")


if __name__ == "__main__":
    main()
