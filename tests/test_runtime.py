"""The CLI's glibc malloc tuning: applied on Linux/glibc, skipped when opted out."""

from __future__ import annotations

import subprocess
import sys

import pytest

PROBE = """
from anomalyseg.runtime import tune_cpu_allocator
print(tune_cpu_allocator())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")
def test_tuning_applies_and_can_be_switched_off():
    on = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    off = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                         env={"ANOMALYSEG_MALLOC_TUNING": "0", "PATH": ""})
    assert on.stdout.strip() == "True" and off.stdout.strip() == "False"
