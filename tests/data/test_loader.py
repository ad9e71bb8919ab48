"""StreetHazards loader on a synthetic tree: samples, layouts, errors, conversions, robust reading."""

from __future__ import annotations

import json
import logging
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from anomalyseg.data import STREETHAZARDS, SampleError, StreetHazards, anomaly_target, collate_samples
from anomalyseg.data import io as data_io
from anomalyseg.errors import UserError


def _odgt(root: Path, split: str) -> list[dict]:
    layout = STREETHAZARDS.splits[split]
    return json.loads((root / layout.archive_folder / layout.inner / layout.odgt).read_text())


def test_samples_match_files(synth_root: Path) -> None:
    ds = StreetHazards(synth_root, "test")
    records = _odgt(synth_root, "test")
    assert len(ds) == len(records) == 4
    assert [e.image.relative_to(ds.split_dir).as_posix() for e in ds.entries] == [r["fpath_img"] for r in records]
    sample = ds[1]
    assert set(sample) == {"image", "label", "id", "image_path", "label_path", "orig_size"}
    rgb = np.array(Image.open(sample["image_path"]).convert("RGB"))
    raw = np.array(Image.open(sample["label_path"]))
    assert sample["image"].dtype == torch.uint8 and sample["image"].shape == (3, 96, 160)
    assert torch.equal(sample["image"], torch.from_numpy(rgb).permute(2, 0, 1))
    assert sample["label"].dtype == torch.int64 and sample["label"].shape == (96, 160)
    assert np.array_equal(sample["label"].numpy(), raw.astype(np.int64) - 1)
    assert sample["orig_size"] == (96, 160)
    assert sample["id"] == Path(records[1]["fpath_img"]).relative_to("images/test").with_suffix("").as_posix()
    assert ds.info.num_classes == 13 and ds.info.anomaly_id == 13


@pytest.mark.parametrize("sub", ["", "streethazards_train", "streethazards_train/train"])
def test_root_may_be_any_level(synth_root: Path, sub: str) -> None:
    ds = StreetHazards(synth_root / sub if sub else synth_root, "validation")
    assert ds.split == "val" and len(ds) == 3
    assert ds.split_dir == synth_root / "streethazards_train" / "train"


def test_directory_walk_matches_odgt_order(synth_copy: Path) -> None:
    with_list = StreetHazards(synth_copy, "train")
    (synth_copy / "streethazards_train/train/train.odgt").unlink()
    walked = StreetHazards(synth_copy, "train")
    assert walked.source == "directory walk" and with_list.source.endswith("train.odgt")
    assert [e.image for e in walked.entries] == [e.image for e in with_list.entries]
    assert walked.ids == sorted(walked.ids)


def test_ndjson_odgt_is_read(synth_copy: Path) -> None:
    path = synth_copy / "streethazards_test/test/test.odgt"
    records = json.loads(path.read_text())
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    assert len(StreetHazards(synth_copy, "test")) == len(records)


def test_missing_root_and_wrong_layout(tmp_path: Path, synth_root: Path) -> None:
    with pytest.raises(UserError, match=r"root not found: .*nowhere"):
        StreetHazards(tmp_path / "nowhere", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"no StreetHazards train split under .*empty"):
        StreetHazards(tmp_path / "empty", "train")
    with pytest.raises(UserError, match="test part only"):
        StreetHazards(synth_root / "streethazards_test", "train")
    with pytest.raises(UserError, match="unknown split 'dev'"):
        StreetHazards(synth_root, "dev")


def test_image_without_label_is_named(synth_copy: Path) -> None:
    ds = StreetHazards(synth_copy, "val")
    ds.entries[2].label.unlink()
    with pytest.raises(UserError, match=rf"image without label .*: {re.escape(str(ds.entries[2].image))}"):
        StreetHazards(synth_copy, "val")


def test_partial_tree_is_logged(synth_copy: Path, caplog: pytest.LogCaptureFixture) -> None:
    full = StreetHazards(synth_copy, "train")
    for entry in full.entries[:2]:
        entry.image.unlink()
        entry.label.unlink()
    with caplog.at_level(logging.WARNING):
        part = StreetHazards(synth_copy, "train")
    assert len(part) == len(full) - 2
    assert "partial StreetHazards train split: 4 of 6" in caplog.text


def test_size_mismatch_is_named(synth_copy: Path) -> None:
    ds = StreetHazards(synth_copy, "val")
    Image.new("L", (50, 40), 8).save(ds.entries[0].label)
    image = re.escape(str(ds.entries[0].image))
    with pytest.raises(SampleError, match=rf"sizes differ: {image} is 160x96, .* is 50x40"):
        ds[0]


def test_rgba_palette_and_out_of_range_values(synth_copy: Path) -> None:
    ds = StreetHazards(synth_copy, "val")
    rgb = np.array(Image.open(ds.entries[0].image))
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)])
    Image.fromarray(rgba).save(ds.entries[0].image)
    pal = Image.fromarray(rgb).quantize(16)
    pal.save(ds.entries[1].image)
    raw = np.array(Image.open(ds.entries[2].label))
    raw[:5, :7] = 0
    raw[-3:, -2:] = 200
    Image.fromarray(raw).save(ds.entries[2].label)
    assert torch.equal(ds[0]["image"], torch.from_numpy(rgb).permute(2, 0, 1))
    expected = np.array(pal.convert("RGB"))
    assert torch.equal(ds[1]["image"], torch.from_numpy(expected).permute(2, 0, 1))
    label = ds[2]["label"].numpy()
    ref = np.where((raw >= 1) & (raw <= 14), raw.astype(np.int64) - 1, 255)
    assert np.array_equal(label, ref)
    assert ds.num_ignored_pixels == 5 * 7 + 3 * 2
    assert StreetHazards(synth_copy, "val", ignore_index=-1)[2]["label"].min() == -1


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_truncated_png_raise_and_skip(synth_copy: Path, caplog: pytest.LogCaptureFixture) -> None:
    strict = StreetHazards(synth_copy, "train", retry_wait=0)
    bad = strict.entries[3].image
    _truncate(bad)
    with pytest.raises(SampleError, match=f"cannot read image {re.escape(str(bad))}"):
        strict[3]
    lenient = StreetHazards(synth_copy, "train", on_error="skip", retry_wait=0)
    with caplog.at_level(logging.WARNING):
        sample = lenient[3]
    assert sample["id"] == lenient.entries[4].id  # replaced by the next one
    assert lenient.num_read_errors == 1
    assert str(bad) in caplog.text


def test_skip_counts_across_dataloader_workers(synth_copy: Path) -> None:
    ds = StreetHazards(synth_copy, "train", on_error="skip", retry_wait=0)
    _truncate(ds.entries[0].label)
    _truncate(ds.entries[3].image)
    loader = DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate_samples)
    ids = [i for batch in loader for i in batch["id"]]
    assert len(ids) == len(ds) and ds.entries[0].id not in ids and ds.entries[3].id not in ids
    assert ds.num_read_errors == 2


def test_transient_failure_is_retried(synth_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = data_io.read_image

    def flaky(path):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError("stale NFS handle")
        return real(path)

    monkeypatch.setattr(data_io, "read_image", flaky)  # what the loaders decode with
    ds = StreetHazards(synth_copy, "val", retry_wait=0)
    assert ds[0]["id"] == ds.entries[0].id and calls["n"] == 2 and ds.num_read_errors == 0


def test_collate_samples(synth_root: Path) -> None:
    ds = StreetHazards(synth_root, "test")
    batch = collate_samples([ds[0], ds[2]])
    assert batch["image"].shape == (2, 3, 96, 160) and batch["label"].shape == (2, 96, 160)
    assert batch["id"] == [ds.entries[0].id, ds.entries[2].id]
    assert batch["orig_size"] == [(96, 160), (96, 160)]
    small = dict(ds[1], image=ds[1]["image"][:, :10], label=ds[1]["label"][:10])
    with pytest.raises(ValueError, match="different shapes"):
        collate_samples([ds[0], small])


def test_anomaly_target_matches_numpy() -> None:
    rng = np.random.default_rng(0)
    label = rng.integers(0, 14, (20, 30))
    label[rng.random((20, 30)) < 0.1] = 255
    ref = np.where(label == 13, 1, 0)
    ref[label == 255] = 255
    assert np.array_equal(anomaly_target(label), ref)
    t = anomaly_target(torch.from_numpy(label))
    assert t.dtype == torch.int64 and np.array_equal(t.numpy(), ref)
    ref_drop = ref.copy()
    ref_drop[(label == 3) | (label == 0)] = 255
    assert np.array_equal(anomaly_target(torch.from_numpy(label), ignore_ids=(3, 0)).numpy(), ref_drop)
    with pytest.raises(ValueError, match="both anomaly and ignored"):
        anomaly_target(label, ignore_ids=(13,))


def test_dataset_pickles_for_spawned_workers(synth_root: Path) -> None:
    ds = StreetHazards(synth_root, "val", on_error="skip")
    ds._read_errors.add(2)
    copy = pickle.loads(pickle.dumps(ds))
    assert len(copy) == len(ds) and copy.info == ds.info and copy.num_read_errors == 2
    copy._read_errors.add(1)
    assert ds.num_read_errors == 2  # a plain copy gets its own counter
