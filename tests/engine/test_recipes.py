"""Every shipped training recipe loads against the schema, names a registered model and never trains on the test
split. (Other files under configs/demo/ are ``anomalyseg demo`` settings with their own schema.)"""

from __future__ import annotations

import pytest
from tests.engine.helpers import REPO_ROOT

from anomalyseg.config import load_config
from anomalyseg.models import available_models

CONFIGS = [*sorted((REPO_ROOT / "configs/streethazards").glob("*.yaml")),
           REPO_ROOT / "configs/demo/synthetic_cpu.yaml", REPO_ROOT / "configs/demo/demo_oe.yaml"]


def test_expected_recipes_exist():
    names = {p.relative_to(REPO_ROOT / "configs").as_posix() for p in (REPO_ROOT / "configs").rglob("*.yaml")}
    assert {
        "streethazards/deeplabv3_r50_multiscale.yaml", "streethazards/deeplabv3_r50_plain.yaml",
        "streethazards/deeplabv3_r101_multiscale.yaml", "streethazards/segformer_b5_multiscale.yaml",
        "streethazards/deeplabv3plus_r101_recommended.yaml", "demo/synthetic_cpu.yaml",
    } <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_is_valid(path):
    cfg = load_config(path)
    assert cfg.model.name in available_models()
    assert "test" not in (cfg.data.train_split, cfg.data.val_split)
    assert cfg.run_name  # recipes name their runs


def test_seed_recipes_differ_only_where_they_should():
    ms = load_config(REPO_ROOT / "configs/streethazards/deeplabv3_r50_multiscale.yaml")
    plain = load_config(REPO_ROOT / "configs/streethazards/deeplabv3_r50_plain.yaml")
    assert ms.data.scale_range == (0.5, 2.0) and plain.data.scale_range == (1.0, 1.0)
    assert ms.model == plain.model and ms.model.aux_weight == 0.4 and ms.data.crop_size == (512, 512)
    assert ms.optim == plain.optim and ms.schedule == plain.schedule


def test_outlier_exposure_recipes_fine_tune_their_closed_set_models():
    demo = load_config(REPO_ROOT / "configs/demo/demo_oe.yaml")
    from anomalyseg.workflows.demo_settings import load_demo_config

    closed = load_demo_config().training
    assert demo.model.name == closed.model.name and demo.data.crop_size == closed.data.crop_size
    assert demo.optim.lr < closed.optim.lr and demo.train.epochs < closed.train.epochs
    assert (demo.outlier_exposure.enabled, demo.outlier_exposure.source, demo.outlier_exposure.loss) == (
        True, "procedural", "entropy")
    coco = load_config(REPO_ROOT / "configs/streethazards/deeplabv3plus_r101_oe_coco.yaml")
    r101 = load_config(REPO_ROOT / "configs/streethazards/deeplabv3plus_r101_recommended.yaml")
    assert coco.model.name == r101.model.name and coco.model.init_from == f"{r101.out_dir}/{r101.run_name}"
    assert coco.data == r101.data
    assert coco.outlier_exposure.enabled and coco.outlier_exposure.source == "coco"
    assert coco.outlier_exposure.root and coco.outlier_exposure.annotations
