"""The loader and ``data check`` on the REAL StreetHazards annotations (val t4, test t5/t6) from ../shared.

Only annotations (and one RGB frame, test t6/1028) are available, so the tree used here links the real label
files and lists and puts one grey 1280x720 placeholder image behind every other listed image path.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tests.conftest import shared_path

from anomalyseg.data import StreetHazards
from anomalyseg.data.check import SplitReport, check_split
from anomalyseg.errors import UserError

pytestmark = pytest.mark.shared

REAL_FRAME = "streethazards_test/test/images/test/t6/1028.png"


@pytest.fixture(scope="module")
def real_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = shared_path("data", "streethazards")
    root = tmp_path_factory.mktemp("real") / "sh"
    placeholder = root / "placeholder.png"
    root.mkdir()
    grey = Image.new("P", (1280, 720), 0)  # a palette image decodes ~5x faster than RGB: keeps the scan quick
    grey.putpalette([120, 120, 120])
    grey.save(placeholder)
    for archive, inner, lists in (("streethazards_train", "train", ("train.odgt", "validation.odgt")),
                                  ("streethazards_test", "test", ("test.odgt",))):
        split_dir = root / archive / inner
        split_dir.mkdir(parents=True)
        (split_dir / "annotations").symlink_to(src / archive / inner / "annotations")
        for name in lists:
            (split_dir / name).symlink_to(src / archive / inner / name)
    for split_dir, sub in ((root / "streethazards_train/train", "validation"), (root / "streethazards_test/test",
                                                                               "test")):
        for label in sorted((split_dir / "annotations" / sub).rglob("*.png")):
            image = split_dir / "images" / label.relative_to(split_dir / "annotations")
            image.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(placeholder, image)
    frame = root / REAL_FRAME
    frame.unlink()
    frame.symlink_to(src / REAL_FRAME)
    return root


@pytest.fixture(scope="module")
def reports(real_tree: Path) -> dict[str, SplitReport]:
    return {split: check_split(real_tree, split, workers=2, progress=False, keep_per_file=True)
            for split in ("val", "test")}


def test_counts(real_tree: Path, reports: dict[str, SplitReport]) -> None:
    assert len(StreetHazards(real_tree, "val")) == 1031
    assert len(StreetHazards(real_tree, "test")) == 1500
    assert reports["val"].num_checked == 1031 and reports["test"].num_checked == 1500
    assert reports["val"].bad == [] and reports["test"].bad == []


def test_values_and_anomaly_presence(reports: dict[str, SplitReport]) -> None:
    for report in reports.values():
        assert report.out_of_range_pixels == 0  # file values 1..14 only -> ids 0..13
    assert reports["test"].images_with_anomaly == 1500
    assert reports["val"].images_with_anomaly == 0
    assert reports["test"].class_pixels[4] == 0  # "pedestrian never occurs in test" (dataset README)
    share = reports["test"].class_share[13]
    assert 0.009 < share < 0.012  # "anomaly covers ~1.03% of test pixels"


@pytest.mark.parametrize("split", ["val", "test"])
def test_class_shares_match_direct_count(real_tree: Path, reports: dict[str, SplitReport], split: str) -> None:
    ds = StreetHazards(real_tree, split)
    rng = np.random.default_rng(0)
    subset = rng.choice(len(ds), 20, replace=False)
    direct = np.zeros(14, np.int64)
    mine = np.zeros(14, np.int64)
    for i in subset:
        raw = np.asarray(Image.open(ds.entries[i].label))
        counts = np.array([np.count_nonzero(raw == v) for v in range(1, 15)])
        direct += counts
        mine += reports[split].per_file[ds.entries[i].id][1:]
    assert np.array_equal(mine, direct)
    assert np.allclose(mine / mine.sum(), direct / direct.sum())
    label = ds[int(subset[0])]["label"]
    raw = np.asarray(Image.open(ds.entries[int(subset[0])].label))
    assert torch.equal(label, torch.from_numpy(raw.astype(np.int64) - 1))
    assert int(label.min()) >= 0 and int(label.max()) <= 13


def test_real_rgba_frame(real_tree: Path) -> None:
    ds = StreetHazards(real_tree, "test")
    index = ds.ids.index("t6/1028")
    sample = ds[index]
    rgba = Image.open(shared_path("data", "streethazards", REAL_FRAME))
    assert rgba.mode == "RGBA"
    expected = torch.from_numpy(np.array(rgba.convert("RGB"))).permute(2, 0, 1)
    assert sample["image"].shape == (3, 720, 1280) and torch.equal(sample["image"], expected)
    assert (sample["label"] == 13).any()  # the cat


def test_annotation_only_tree_is_partial(streethazards_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        ds = StreetHazards(streethazards_root, "test")
    assert ds.ids == ["t6/1028"]
    assert "partial StreetHazards test split: 1 of 1500" in caplog.text
    with pytest.raises(UserError, match=r"no val samples found under .*\(1031 listed"):
        StreetHazards(streethazards_root, "val")
