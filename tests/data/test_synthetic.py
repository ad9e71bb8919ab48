"""Synthetic StreetHazards-format data: official layout, label values, anomalies in test only, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tests.conftest import SHARED

from anomalyseg.data import STREETHAZARDS, StreetHazards
from anomalyseg.data.synthetic import ANOMALY_SHARE, render, write_synthetic
from anomalyseg.errors import UserError

ODGT_KEYS = {"fpath_img", "fpath_segm", "width", "height", "dbName"}


def test_official_layout(synth_root: Path) -> None:
    train_dir = synth_root / "streethazards_train" / "train"
    test_dir = synth_root / "streethazards_test" / "test"
    for path in ("train.odgt", "validation.odgt", "images/training/t1-3", "annotations/training/t1-3",
                 "images/validation/t4", "annotations/validation/t4"):
        assert (train_dir / path).exists(), path
    for path in ("test.odgt", "images/test/t5", "annotations/test/t5"):
        assert (test_dir / path).exists(), path
    records = json.loads((test_dir / "test.odgt").read_text())
    assert isinstance(records, list) and all(set(r) == ODGT_KEYS for r in records)
    assert [r["fpath_img"] for r in records] == sorted(r["fpath_img"] for r in records)
    assert all(r["fpath_segm"] == r["fpath_img"].replace("images/", "annotations/", 1) for r in records)
    assert {(r["width"], r["height"]) for r in records} == {(160, 96)}
    real = SHARED / "data" / "streethazards" / "streethazards_test" / "test" / "test.odgt"
    if real.exists():  # same fields as the official lists
        assert set(json.loads(real.read_text())[0]) == ODGT_KEYS


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_label_values_and_anomalies(synth_root: Path, split: str) -> None:
    ds = StreetHazards(synth_root, split)
    for entry in ds.entries:
        raw = np.array(Image.open(entry.label))
        assert raw.dtype == np.uint8 and raw.shape == (96, 160)
        assert Image.open(entry.label).mode == "L"
        assert raw.min() >= 1 and raw.max() <= 14
        share = float((raw == 14).mean())
        if split == "test":
            assert ANOMALY_SHARE[0] <= share <= ANOMALY_SHARE[1]
        else:
            assert share == 0
        assert len(np.unique(raw)) >= 6  # a scene, not a blank


def test_every_known_class_is_drawn() -> None:
    seen: set[int] = set()
    for i in range(12):
        _, lab = render(3, "train", i, (160, 96))
        seen |= set(np.unique(lab).tolist())
    assert seen == set(range(1, 14))


def test_anomalies_look_unlike_known_classes() -> None:
    """Anomaly pixels are saturated colours that known classes almost never have (an out-of-distribution cue),
    and they are textured, not one flat colour."""
    known_sat, anomaly_sat, spreads = [], [], []
    for i in range(8):
        rgb, lab = render(5, "test", i, (240, 135))
        hsv = np.array(Image.fromarray(rgb).convert("HSV")).astype(np.float64)
        sat = hsv[..., 1] * hsv[..., 2] / 255
        known_sat.append(sat[lab != 14])
        anomaly_sat.append(sat[lab == 14])
        spreads.append(rgb[lab == 14].std(axis=0).max())
    assert np.median(np.concatenate(anomaly_sat)) > 2 * np.median(np.concatenate(known_sat))
    assert np.median(spreads) > 20


def test_deterministic_and_extendable(tmp_path: Path) -> None:
    a = write_synthetic(tmp_path / "a", train=2, val=1, test=2, size=(96, 64), seed=11)
    b = write_synthetic(tmp_path / "b", train=3, val=1, test=2, size=(96, 64), seed=11, workers=2)
    c = write_synthetic(tmp_path / "c", train=2, val=1, test=2, size=(96, 64), seed=12)
    for rel in ("streethazards_train/train/images/training/t1-3/2.png",
                "streethazards_test/test/annotations/test/t5/1.png"):
        assert np.array_equal(np.array(Image.open(a / rel)), np.array(Image.open(b / rel)))
        assert not np.array_equal(np.array(Image.open(a / rel)), np.array(Image.open(c / rel)))
    assert len(StreetHazards(b, "train")) == 3


def test_refuses_non_empty_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        write_synthetic(out, train=1, val=1, test=1, size=(64, 48))
    write_synthetic(out, train=1, val=0, test=1, size=(64, 48), overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"  # only the dataset folders are replaced
    assert len(StreetHazards(out, "test")) == 1
    with pytest.raises(UserError, match=r"no val samples|no StreetHazards val"):
        StreetHazards(out, "val")
    assert STREETHAZARDS.splits["val"].odgt == "validation.odgt"
