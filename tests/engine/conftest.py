"""Fixtures for the engine tests."""

from __future__ import annotations

import pytest

from anomalyseg.data.synthetic import write_synthetic


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """A tiny synthetic StreetHazards tree (64x48): 16 train, 6 val, 2 test images."""
    return write_synthetic(tmp_path_factory.mktemp("synth") / "sh", train=16, val=6, test=2, size=(64, 48), seed=3)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Leakage-check cache in the test's tmp folder, not in the user's home."""
    monkeypatch.setenv("ANOMALYSEG_CACHE_DIR", str(tmp_path / "cache"))
