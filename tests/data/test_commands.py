"""``anomalyseg data check | synth | info`` through the real CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anomalyseg.cli import main
from anomalyseg.data import StreetHazards
from anomalyseg.data.check import check_split


def test_check_clean_tree(synth_root: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["data", "check", "--root", str(synth_root), "--workers", "2", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "train: 6 samples decoded" in out and "test: 4 samples decoded" in out
    assert "images with anomaly: 4 / 4" in out and "images with anomaly: 0 / 3" in out


def test_check_names_every_bad_file(synth_copy: Path, capsys: pytest.CaptureFixture) -> None:
    ds = StreetHazards(synth_copy, "train")
    truncated = ds.entries[0].image
    truncated.write_bytes(truncated.read_bytes()[:300])
    bad_values = ds.entries[1].label
    raw = np.array(Image.open(bad_values))
    raw[0, :3] = [0, 20, 255]
    Image.fromarray(raw).save(bad_values)
    small = ds.entries[2].label
    Image.new("L", (10, 10), 3).save(small)
    leaked = StreetHazards(synth_copy, "val").entries[0].label
    raw = np.array(Image.open(leaked))
    raw[5, 5] = 14
    Image.fromarray(raw).save(leaked)
    code = main(["data", "check", "--root", str(synth_copy), "--workers", "2", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 1
    out = captured.out
    assert f"BAD {truncated}: cannot decode image" in out
    assert f"BAD {bad_values}: 3 pixels with values outside 1..14 [0, 20, 255]" in out
    assert f"BAD {small}: size 10x10 differs from the listed 160x96" in out
    assert f"BAD {ds.entries[2].image}: image is 160x96 but label" in out
    assert f"BAD {leaked}: anomaly value 14 in the val split" in out
    assert "FAILED: 5 problems" in captured.err


def test_check_counts_match_numpy(synth_root: Path) -> None:
    report = check_split(synth_root, "test", workers=0, progress=False, keep_per_file=True)
    ds = StreetHazards(synth_root, "test")
    total = np.zeros(14, np.int64)
    for entry in ds.entries:
        raw = np.array(Image.open(entry.label))
        counts = np.array([(raw == v).sum() for v in range(1, 15)])
        assert np.array_equal(report.per_file[entry.id][1:], counts)
        total += counts
    assert np.allclose(report.class_share, total / total.sum())
    assert report.images_with_anomaly == 4 and not report.bad


def test_check_missing_listed_files_and_bad_root(synth_copy: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    ds = StreetHazards(synth_copy, "test")
    ds.entries[3].image.unlink()
    assert main(["data", "check", "--root", str(synth_copy), "--split", "test", "--no-progress"]) == 1
    assert f"BAD {ds.entries[3].image}: listed but missing on disk" in capsys.readouterr().out
    assert main(["data", "check", "--root", str(tmp_path / "nope"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("anomalyseg: error: StreetHazards root not found") and err.count("\n") == 1


def test_synth_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "syn"
    args = ["data", "synth", "--out", str(out), "--train", "2", "--val", "1", "--test", "1", "--size", "64x48",
            "--seed", "3"]
    assert main(args) == 0
    assert "wrote 4 synthetic images (64x48)" in capsys.readouterr().out
    assert json.loads((out / "SYNTHETIC.json").read_text())["seed"] == 3
    before = (out / "streethazards_train/train/images/training/t1-3/1.png").read_bytes()
    assert main(args) == 2  # not empty: refused
    assert "not empty" in capsys.readouterr().err
    assert main([*args[:-1], "4", "--force"]) == 0
    assert (out / "streethazards_train/train/images/training/t1-3/1.png").read_bytes() != before
    with pytest.raises(SystemExit):
        main(["data", "synth", "--out", str(out), "--size", "big"])


def test_info_and_help(capsys: pytest.CaptureFixture) -> None:
    assert main(["data", "info"]) == 0
    out = capsys.readouterr().out
    assert "streethazards_test.tar  md5 8c547c1346b00c21b2483887110bfea7" in out and "13 anomaly" in out
    for action in ("download", "check", "synth"):
        with pytest.raises(SystemExit):
            main(["data", action, "--help"])
        assert "examples:" in capsys.readouterr().out
    assert main(["data"]) == 2
