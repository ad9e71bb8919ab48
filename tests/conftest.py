"""Shared fixtures: offline hub settings, the optional real data in ``../shared``, small helpers."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# smp / timm / transformers otherwise retry a hub download for ~20 s before failing.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Idle OpenMP threads sleep instead of spinning: with several test processes (DDP, torchrun) on 2 cores,
# spinning threads made small forwards up to 100x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO_ROOT = Path(__file__).resolve().parents[1]
#: A folder holding a fake installed distribution that declares the engine tests' tiny net as the
#: ``anomalyseg.models`` entry point ``tiny`` (model names are a closed registry: no ``module:attr``).
PLUGINS = REPO_ROOT / "tests" / "plugins"
if str(PLUGINS) not in sys.path:
    sys.path.append(str(PLUGINS))
SHARED = Path(os.environ.get("ANOMALYSEG_SHARED", REPO_ROOT.parent / "shared"))


def shared_path(*parts: str) -> Path:
    """A path inside ``../shared``; the calling test is skipped when it is absent (a user's clone)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path}")
    return path


@pytest.fixture
def streethazards_root() -> Path:
    """Root of the real StreetHazards annotations (official tar layout)."""
    return shared_path("data", "streethazards")
