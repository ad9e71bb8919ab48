"""Process-level CPU tuning applied once by the command-line entry point (never on library import).

glibc serves every allocation above its mmap threshold (at most 32 MiB by default) with a fresh ``mmap``
and returns it on free, so each large torch CPU tensor (a 13x720x1280 float logit map is 48 MB) pays one
page fault per 4 KiB page on first write. On this project's 2-core machine that made torch element-wise
ops 5-8x slower than the arithmetic (``x - y`` on 12 M floats: 36 ms vs 4.4 ms) and a DeepLabV3+-R18
forward at 1280x720 23 % slower (small timing scripts); end to end, ``benchmarks/evaluate.py`` with and without
``--no-malloc-tuning`` measured 1.19 vs 1.50 s per image for six scorers. Raising the mmap and trim
thresholds keeps freed buffers in the heap for reuse, the effect PyTorch's CPU performance guide gets from
jemalloc / tcmalloc, without a dependency. The cost: the process keeps its high-water heap.
Opt out with ``ANOMALYSEG_MALLOC_TUNING=0``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # glibc mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3


def tune_cpu_allocator(mmap_threshold: int = 2**30, trim_threshold: int = 2**31 - 1) -> bool:
    """Keep large CPU buffers in the glibc heap (see the module docstring); True when applied.

    A no-op returning False outside Linux/glibc or when ``ANOMALYSEG_MALLOC_TUNING=0``.
    """
    if os.environ.get("ANOMALYSEG_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or an unusual libc: leave the allocator alone
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))
    log.debug("glibc malloc tuning %s", "applied" if ok else "refused")
    return ok
