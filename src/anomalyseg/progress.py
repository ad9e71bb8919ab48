"""Progress bars that suit where the output goes: tqdm on a terminal (or in Jupyter), a log line per N % elsewhere.

A tqdm bar writing to a file or a pipe (a CI log, ``nohup``, ``2> run.log``) leaves hundreds of carriage-return
updates in it. :func:`progress_bar` is the one constructor every loop of the package uses: when stderr is not
an interactive terminal it returns a :class:`LogProgress`, which logs one line (``anomalyseg.progress``, INFO)
each time another ``ANOMALYSEG_PROGRESS_PERCENT`` % (default 10) is done, and a last line when it closes.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

from anomalyseg.limits import env_number

log = logging.getLogger("anomalyseg.progress")

DEFAULT_PERCENT = 10.0
UNKNOWN_TOTAL_SECONDS = 30.0  # without a total: one line per this many seconds


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None or "ipykernel" not in sys.modules:
        return False
    try:
        return shell.get_ipython() is not None  # type: ignore[attr-defined]
    except Exception:  # pragma: no cover - an IPython without get_ipython
        return False


def interactive(stream: Any = None) -> bool:
    """Whether a tqdm bar on ``stream`` (default stderr) reaches a person: a terminal or a Jupyter kernel."""
    stream = sys.stderr if stream is None else stream
    try:
        tty = bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        tty = False
    return tty or _in_notebook()


def step_percent() -> float:
    """The logging step in % (``ANOMALYSEG_PROGRESS_PERCENT``, clamped to 1..100; default 10)."""
    return env_number("ANOMALYSEG_PROGRESS_PERCENT", DEFAULT_PERCENT, 1.0, 100.0)


def _amount(value: float, unit: str, unit_scale: bool, divisor: int) -> str:
    if not unit_scale:
        return f"{int(value)}"
    for prefix in ("", "k", "M", "G", "T"):
        if abs(value) < divisor or prefix == "T":
            return f"{value:.0f}{prefix}" if prefix == "" else f"{value:.1f}{prefix}"
        value /= divisor
    return f"{value:.1f}"  # pragma: no cover


class LogProgress:
    """The part of tqdm's interface the package uses (iterate, ``update``, ``set_postfix``, ``close``, context
    manager), reporting as log lines: one per ``percent`` % of ``total`` (per 30 s when the total is unknown)."""

    def __init__(
        self, iterable: Iterable | None = None, total: float | None = None, desc: str = "", unit: str = "it",
        initial: float = 0, unit_scale: bool = False, unit_divisor: int = 1000, percent: float | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        if total is None and iterable is not None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.iterable = iterable
        self.total = total if total else None
        self.desc = desc
        self.unit = unit
        self.n = initial
        self.unit_scale = unit_scale
        self.unit_divisor = unit_divisor
        self.percent = step_percent() if percent is None else percent
        self.log = logger or log
        self.postfix: dict[str, Any] = {}
        self.start = time.monotonic()
        self.last_time = self.start
        self.next_step = self._step_after(initial)
        self.closed = False

    def _step_after(self, n: float) -> float:
        if self.total is None:
            return float("inf")
        done = 100.0 * n / self.total
        return (int(done // self.percent) + 1) * self.percent

    def _line(self) -> str:
        elapsed = time.monotonic() - self.start
        amount = _amount(self.n, self.unit, self.unit_scale, self.unit_divisor)
        if self.total is not None:
            total = _amount(self.total, self.unit, self.unit_scale, self.unit_divisor)
            head = f"{100.0 * self.n / self.total:3.0f} % ({amount}/{total} {self.unit})"
        else:
            head = f"{amount} {self.unit}"
        extra = "".join(f", {k}={v}" for k, v in self.postfix.items())
        prefix = f"{self.desc}: " if self.desc else ""
        return f"{prefix}{head}, {elapsed:.1f} s{extra}"

    def update(self, n: float = 1) -> None:
        self.n += n
        now = time.monotonic()
        if self.total is not None:
            if 100.0 * self.n / self.total >= self.next_step - 1e-9:
                self.next_step = self._step_after(self.n)
                self.last_time = now
                self.log.info(self._line())
        elif now - self.last_time >= UNKNOWN_TOTAL_SECONDS:
            self.last_time = now
            self.log.info(self._line())

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        self.postfix = {**(ordered_dict or {}), **kwargs}

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        self.desc = desc or ""

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        reached = self.total is not None and self.n >= self.total
        if not reached and self.n:  # the last line already said 100 %; otherwise say where it stopped
            self.log.info(self._line())

    def __iter__(self) -> Iterator:
        if self.iterable is None:
            raise TypeError("LogProgress without an iterable is not iterable")
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return int(self.total or 0)


def progress_bar(iterable: Iterable | None = None, *, disable: bool = False, stream: Any = None, **kwargs: Any):
    """tqdm when stderr is a terminal (or in Jupyter), else a :class:`LogProgress` (a log line per N %).

    Takes tqdm's keyword arguments (``total``, ``desc``, ``unit``, ``initial``, ``leave``, ``unit_scale``,
    ``unit_divisor``, ``dynamic_ncols``, ...); ``disable=True`` gives a silent tqdm as before.
    """
    if disable or interactive(stream):
        from tqdm.auto import tqdm

        return tqdm(iterable, disable=disable, **kwargs)
    keep = ("total", "desc", "unit", "initial", "unit_scale", "unit_divisor")
    return LogProgress(iterable, **{k: v for k, v in kwargs.items() if k in keep})
