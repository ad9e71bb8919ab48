"""Outlier exposure in the training data path: ``build_datasets(cfg.data, outliers=...)`` pastes into training
crops only, pastes are exactly resumable and worker-independent, label 254 never reaches the label scan, and
the guard refuses a source that is, holds or copies the held-out test split (path and content)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tests.engine.helpers import REPO_ROOT, tiny_overrides

from anomalyseg.cli import main as cli_main
from anomalyseg.config import DataConfig, OutlierExposureConfig
from anomalyseg.constants import OUTLIER_LABEL
from anomalyseg.data.registry import dataset_spec
from anomalyseg.data.synthetic import write_synthetic
from anomalyseg.data.transforms import EvalTransform
from anomalyseg.engine.guards import cache_dir, check_outlier_source, scan_labels
from anomalyseg.engine.loaders import SeededSamples, build_datasets, make_train_loader
from anomalyseg.errors import UserError

SPEC = dataset_spec("streethazards")


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """A private synthetic tree (6 train, 2 val, 2 test at 64x48) the guard tests may put files into."""
    return write_synthetic(tmp_path_factory.mktemp("oe") / "sh", train=6, val=2, test=2, size=(64, 48), seed=5)


def _data(root: Path, **kw) -> DataConfig:
    return DataConfig(root=str(root), crop_size=(32, 40), workers=0, **kw)


def _oe(**kw) -> OutlierExposureConfig:
    return OutlierExposureConfig(**{"enabled": True, "p": 1.0, "k": (2, 3), "scale_range": (0.2, 0.5), **kw})


def _cutouts(folder: Path, n: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rgba = np.zeros((20, 24, 4), np.uint8)
        rgba[3:17, 4:20] = (30 * i, 200, 90, 255)
        Image.fromarray(rgba, "RGBA").save(folder / f"c{i}.png")
    return folder


def _test_images(root: Path) -> list[Path]:
    return sorted((root / "streethazards_test" / "test" / "images").rglob("*.png"))


def test_training_crops_get_pastes_the_validation_split_never(tree):
    plain, pasted = build_datasets(_data(tree)), build_datasets(_data(tree), outliers=_oe())
    assert plain.outliers is None and build_datasets(_data(tree), outliers=_oe(enabled=False)).outliers is None
    assert type(pasted.outliers).__name__ == "ProceduralSource"
    assert "PasteOutliers" in repr(pasted.train.transform) and isinstance(pasted.val.transform, EvalTransform)
    sample = SeededSamples(pasted.train)[(0, 11)]
    assert sample["image"].shape == (3, 32, 40) and sample["label"].shape == (32, 40)
    assert (sample["label"] == OUTLIER_LABEL).any()
    for i in range(len(pasted.val)):
        a, b = plain.val[i], pasted.val[i]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
        assert not (b["label"] == OUTLIER_LABEL).any()


def test_pastes_are_part_of_the_resumable_sample_state(tree):
    sets = build_datasets(_data(tree), outliers=_oe(p=0.7))
    wrapped = SeededSamples(sets.train)
    first, again = wrapped[(2, 99)], wrapped[(2, 99)]
    assert torch.equal(first["image"], again["image"]) and torch.equal(first["label"], again["label"])
    assert not torch.equal(first["image"], wrapped[(2, 98)]["image"])

    def epoch(workers: int, start: int = 0) -> list[dict]:
        loader, sampler = make_train_loader(sets.train, batch_size=2, workers=workers, seed=4)
        sampler.set_epoch(1)
        sampler.set_start(start)
        return list(loader)

    full = epoch(0)
    assert sum(int((b["label"] == OUTLIER_LABEL).any()) for b in full) >= 2
    for got, want in zip(epoch(0, start=2), full[1:], strict=True):  # resumed after the first batch
        assert torch.equal(got["image"], want["image"]) and torch.equal(got["label"], want["label"])
    for got, want in zip(epoch(2), full, strict=True):  # the worker that draws a sample does not matter
        assert torch.equal(got["image"], want["image"]) and torch.equal(got["label"], want["label"])


def test_outlier_label_never_reaches_the_label_scan_or_its_cache(tree):
    sets = build_datasets(_data(tree), outliers=_oe())
    counts = scan_labels(sets.train, "train", spec=SPEC)
    assert counts[OUTLIER_LABEL] == 0 and counts[:13].sum() == 6 * 64 * 48
    [cached] = (cache_dir() / "leakage").glob("*.json")
    assert json.loads(cached.read_text())["counts"][OUTLIER_LABEL] == 0


def test_guard_refuses_a_source_inside_or_holding_the_test_split_by_path(tree):
    inside = _cutouts(tree / "streethazards_test" / "test" / "cutouts")
    try:
        with pytest.raises(UserError, match="is inside the held-out StreetHazards") as exc:
            build_datasets(_data(tree), outliers=_oe(source="folder", root=str(inside)))
        assert "\n" not in str(exc.value)
    finally:
        shutil.rmtree(inside)
    _cutouts(tree / "extra_cutouts")
    with pytest.raises(UserError, match="holds the held-out"):  # the data root holds the test split
        build_datasets(_data(tree), outliers=_oe(source="folder", root=str(tree)))


def test_guard_refuses_copies_of_test_files_by_content(tree, tmp_path):
    class Files:
        name, roots = "stub", (tmp_path,)

        def __init__(self, files):
            self.files = files

    images = _test_images(tree)
    copy = tmp_path / "innocent.png"
    shutil.copyfile(images[1], copy)
    others = _cutouts(tmp_path / "mine", n=3)
    with pytest.raises(UserError, match="is a copy of the held-out evaluation file") as exc:
        check_outlier_source(Files([*sorted(others.glob("*.png")), copy]), spec=SPEC, root=tree)
    assert images[1].name in str(exc.value)
    link = tmp_path / "link.png"
    link.symlink_to(images[0])
    with pytest.raises(UserError, match="is the held-out evaluation file"):
        check_outlier_source(Files([link]), spec=SPEC, root=tree)
    check_outlier_source(Files(sorted(others.glob("*.png"))), spec=SPEC, root=tree)  # clean: passes
    # the same copy reached through a COCO source, end to end
    pytest.importorskip("pycocotools")
    (tmp_path / "coco").mkdir()
    shutil.copyfile(images[1], tmp_path / "coco" / "x.png")
    poly = [[2.0, 2.0, 60.0, 2.0, 60.0, 44.0, 2.0, 44.0]]
    (tmp_path / "instances_x.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "x.png", "height": 48, "width": 64}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": poly, "bbox": [2, 2, 58, 42],
                         "area": 2436, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "kite"}]}))
    oe = _oe(source="coco", root=str(tmp_path / "coco"), annotations=str(tmp_path / "instances_x.json"))
    with pytest.raises(UserError, match="is a copy of the held-out"):
        build_datasets(_data(tree), outliers=oe)


def test_guard_refuses_an_anomaly_set_folder_and_passes_a_clean_one(tree, tmp_path):
    source = _cutouts(tmp_path / "RoadAnomaly" / "objects")
    with pytest.raises(UserError, match="anomaly evaluation set 'RoadAnomaly'"):
        build_datasets(_data(tree), outliers=_oe(source="folder", root=str(source)))
    clean = _cutouts(tmp_path / "cutouts")
    sets = build_datasets(_data(tree), outliers=_oe(source="folder", root=str(clean)))
    assert sets.outliers.files == sorted(clean.glob("*.png"))
    assert (SeededSamples(sets.train)[(0, 1)]["label"] == OUTLIER_LABEL).any()


def test_train_with_an_empty_outlier_folder_is_one_line(tree, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    config = REPO_ROOT / "configs" / "demo" / "synthetic_cpu.yaml"
    code = cli_main(["train", str(config), *tiny_overrides(tree, tmp_path / "runs", "oe"),
                     "outlier_exposure.enabled=true", "outlier_exposure.source=folder",
                     f"outlier_exposure.root={tmp_path / 'empty'}", "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "no *.png cutouts" in err[0], err
    assert not (tmp_path / "runs" / "oe").exists()
