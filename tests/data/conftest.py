"""Fixtures for the data tests: one small synthetic tree shared by the read-only tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from anomalyseg.data.synthetic import write_synthetic

SIZE = (160, 96)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only synthetic tree (6 train, 3 val, 4 test images at 160x96). Do not modify: copy it."""
    return write_synthetic(tmp_path_factory.mktemp("synth") / "sh", train=6, val=3, test=4, size=SIZE, seed=7)


@pytest.fixture
def synth_copy(synth_root: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the synthetic tree."""
    return Path(shutil.copytree(synth_root, tmp_path / "sh"))
