"""Fixtures for the real-photo tests: the real anomaly sets and the real Cityscapes ENet in ``../shared``."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import shared_path

from anomalyseg.checkpoints.contract import parse_contract
from anomalyseg.checkpoints.foreign import import_checkpoint
from anomalyseg.cli import main
from anomalyseg.models import SegmentationModel, build_model

ENET_CONTRACT = "size=512x1024,norm=none,void=19,classes=cityscapes"


@pytest.fixture
def road_anomaly_root() -> Path:
    """The "Validation_Dataset" package with RoadAnomaly, RoadAnomaly21, RoadObsticle21, fs_static."""
    return shared_path("data", "road_anomaly")


@pytest.fixture(scope="session")
def enet_checkpoint_path() -> Path:
    return shared_path("models", "enet_cityscapes_void20.pth")


@pytest.fixture(scope="session")
def enet_imported(enet_checkpoint_path: Path) -> dict:
    """The real checkpoint converted to an anomalyseg checkpoint (in memory)."""
    return import_checkpoint(enet_checkpoint_path, "enet", parse_contract(ENET_CONTRACT))


@pytest.fixture(scope="session")
def enet_real(enet_imported: dict) -> SegmentationModel:
    """The real ENet in eval mode on CPU."""
    model = build_model("enet", enet_imported["num_classes"], **enet_imported["config"]["model"]["options"])
    model.load_state_dict(enet_imported["model"])
    return model.eval()


@pytest.fixture(scope="session")
def enet_file(tmp_path_factory, enet_checkpoint_path: Path) -> Path:
    """The real checkpoint imported through the command line into an anomalyseg checkpoint file."""
    out = tmp_path_factory.mktemp("enet") / "enet.pt"
    assert main(["import-checkpoint", str(enet_checkpoint_path), "--arch", "enet", "--contract", ENET_CONTRACT,
                 "--out", str(out)]) == 0
    return out


def evaluate_cli(ckpt: Path, root: Path, out: Path, *extra: str) -> int:
    """``anomalyseg evaluate`` in-process, quiet and without worker processes; returns the exit code."""
    return main(["evaluate", "--checkpoint", str(ckpt), "--data-root", str(root), "--out", str(out),
                 "--workers", "0", "--no-progress", *extra])
