"""Training / fitting refuse anomaly labels (message names the split) and the test split; scan results cache."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from tests.engine.helpers import tiny_overrides

from anomalyseg.cli import main as cli_main
from anomalyseg.config import load_config
from anomalyseg.constants import IGNORE_INDEX, OUTLIER_LABEL
from anomalyseg.data.streethazards import StreetHazards
from anomalyseg.engine import guards
from anomalyseg.errors import UserError
from anomalyseg.workflows.train import train


def test_test_split_is_refused_everywhere(synth_root, tmp_path, capsys):
    for key in ("data.train_split", "data.val_split"):
        cfg = load_config(None, tiny_overrides(synth_root, tmp_path, "x", **{key: "test"}))
        with pytest.raises(UserError, match=r"'test' split .* never used for"):
            train(cfg, device="cpu")
    assert not (tmp_path / "x").exists()  # refused before anything is written
    test_ds = StreetHazards(synth_root, "test")
    with pytest.raises(UserError, match="never used for fitting"):
        guards.assert_no_anomaly(test_ds, "test", purpose="fitting")
    config = tmp_path / "c.yaml"
    config.write_text("data:\n  train_split: test\n")
    assert cli_main(["train", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("anomalyseg: error: the 'test' split") and "\n" not in err


def test_anomaly_labels_in_val_are_refused_and_named(synth_root, tmp_path):
    root = tmp_path / "tree"
    shutil.copytree(synth_root, root)
    val = StreetHazards(root, "val")
    victim = val.entries[3].label
    raw = np.array(Image.open(victim))
    raw[5, 7] = 14  # one anomaly pixel (file value 14 = id 13)
    Image.fromarray(raw).save(victim)
    cfg = load_config(None, tiny_overrides(root, tmp_path / "runs", "leak"))
    with pytest.raises(UserError, match=r"the 'val' split contains anomaly pixels .*" + victim.name):
        train(cfg, device="cpu")
    guards.assert_no_anomaly(StreetHazards(root, "train"), "train")  # the train split itself is clean


def test_clean_scan_is_cached_and_invalidated_by_changes(synth_root, tmp_path, monkeypatch):
    root = tmp_path / "tree"
    shutil.copytree(synth_root, root)
    ds = StreetHazards(root, "train")
    reads = []
    real = guards._LabelCounts.__getitem__
    monkeypatch.setattr(guards._LabelCounts, "__getitem__", lambda self, i: reads.append(i) or real(self, i))
    guards.assert_no_anomaly(ds, "train")
    assert len(reads) == len(ds)
    guards.assert_no_anomaly(ds, "train")
    assert len(reads) == len(ds)  # second call: cache hit, no label decoded
    victim = ds.entries[0].label
    raw = np.array(Image.open(victim))
    raw[0, 0] = 14
    Image.fromarray(raw).save(victim)  # new size / mtime -> new fingerprint
    with pytest.raises(UserError, match="'train' split contains anomaly pixels"):
        guards.assert_no_anomaly(StreetHazards(root, "train"), "train")


def test_in_memory_dataset_fallback():
    clean = [{"label": torch.zeros(4, 4, dtype=torch.long)} for _ in range(3)]
    guards.assert_no_anomaly(clean, "mine")
    dirty = [*clean, {"label": torch.full((4, 4), 13)}]
    with pytest.raises(UserError, match=r"'mine' split contains anomaly pixels .*sample 3"):
        guards.assert_no_anomaly(dirty, "mine")


def test_in_memory_fallback_does_not_count_pasted_outliers():
    """Samples of a dataset without label files come transformed: outlier exposure's pasted pixels
    (OUTLIER_LABEL) are not dataset labels and are not counted; the other labels are."""
    label = torch.zeros(4, 4, dtype=torch.long)
    label[0], label[1, :2], label[3] = 2, OUTLIER_LABEL, IGNORE_INDEX
    counts = guards.scan_labels([{"label": label}, {"label": label.clone()}], "mine", anomaly_ids=(13,))
    expected = np.zeros(256, dtype=np.int64)
    expected[[0, 2, IGNORE_INDEX]] = [2 * 6, 2 * 4, 2 * 4]
    assert counts.tolist() == expected.tolist()


def test_scan_counts_match_a_direct_pixel_count(synth_root):
    ds = StreetHazards(synth_root, "train")
    counts = guards.scan_labels(ds, "train", use_cache=False)
    raw = np.concatenate([np.array(Image.open(e.label)).ravel() for e in ds.entries])
    expected = np.bincount(raw.astype(np.int64), minlength=16)
    assert counts[:13].tolist() == expected[1:14].tolist()  # file value k = id k - 1
    assert counts.sum() == raw.size and counts[13] == 0


def test_balanced_class_weights_formulas():
    from anomalyseg.engine.factory import balanced_class_weights

    counts = np.array([600, 300, 90, 10, 0])
    f = counts / counts.sum()
    w = np.array(balanced_class_weights(counts, "inverse_sqrt"))
    ref = np.where(f > 0, 1 / np.sqrt(np.where(f > 0, f, 1)), 0)
    np.testing.assert_allclose(w, ref / (f * ref).sum())
    assert (f * w).sum() == pytest.approx(1.0) and w[4] == 0 and w[3] > w[2] > w[1] > w[0]
    m = np.array(balanced_class_weights(counts, "median_freq"))
    med = np.median(f[:4])
    ref = np.where(f > 0, med / np.where(f > 0, f, 1), 0)
    np.testing.assert_allclose(m, ref / (f * ref).sum())


def test_the_dataset_spec_decides_held_out_splits_and_anomaly_ids():
    import dataclasses

    from anomalyseg.data.registry import dataset_spec

    sh, cs = dataset_spec("streethazards"), dataset_spec("cityscapes")
    with pytest.raises(UserError, match=r"^the 'test' split holds the anomaly ground truth .*; use 'train' / 'val'$"):
        guards.check_split_allowed("test", spec=sh)
    with pytest.raises(UserError, match=r"^the 'test' split is held out for testing"):
        guards.check_split_allowed("test", spec=cs)  # no anomalies in it, but still never trained on
    guards.check_split_allowed("val", spec=cs)  # Cityscapes' evaluation split holds no anomalies
    mine = dataclasses.replace(sh, name="mine", anomaly_ids=(5, 7), splits=("fit", "holdout"), eval_split="holdout",
                               fit_split="fit", train_split="fit")
    with pytest.raises(UserError, match=r"'holdout' split holds the anomaly ground truth .* use 'fit' / 'fit'"):
        guards.check_split_allowed("holdout", "training", spec=mine)

    has_13 = [{"label": torch.full((2, 2), 13)}]
    has_7 = [{"label": torch.tensor([[0, 1], [7, 255]])}]
    with pytest.raises(UserError, match=r"'a' split contains anomaly pixels \(label id 7\)"):
        guards.scan_labels(has_7, "a", spec=mine)
    assert guards.scan_labels(has_13, "a", spec=mine)[13] == 4  # 13 is a class of this dataset, not an anomaly
    assert guards.scan_labels(has_13, "a", spec=cs)[13] == 4  # no anomaly ids: only counted
    assert guards.scan_labels(has_13, "a", anomaly_ids=())[13] == 4
    with pytest.raises(UserError, match=r"label id 13"):
        guards.scan_labels(has_13, "a")  # no spec, no ids: StreetHazards' anomaly id, as before
    with pytest.raises(UserError, match=r"label id 13"):
        guards.assert_no_anomaly(has_13, "a", anomaly_ids=(13,), spec=mine)  # explicit ids win over the spec's


def test_scan_cache_is_keyed_by_the_anomaly_ids(synth_root):
    ds = StreetHazards(synth_root, "train")
    guards.scan_labels(ds, "train")  # clean for id 13: cached
    with pytest.raises(UserError, match=r"'train' split contains anomaly pixels \(label id 0\)"):
        guards.scan_labels(ds, "train", anomaly_ids=(0,))  # another id set: not answered from that cache


def _truncate(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_unreadable_label_follows_the_datasets_on_error(synth_root, tmp_path, caplog):
    """Before: a traceback from the scan (PIL's OSError) even with on_error=skip."""
    root = tmp_path / "tree"
    shutil.copytree(synth_root, root)
    bad = StreetHazards(root, "train").entries[2].label
    _truncate(bad)
    with pytest.raises(UserError, match=f"cannot read label {bad}.*split 'train'") as err:
        guards.scan_labels(StreetHazards(root, "train"), "train", workers=2)
    assert "\n" not in str(err.value)
    lenient = StreetHazards(root, "train", on_error="skip")
    with caplog.at_level("WARNING", logger="anomalyseg.engine.guards"):
        counts = guards.scan_labels(lenient, "train", workers=2)
    assert str(bad) in caplog.text and "skipping" in caplog.text
    assert counts.sum() == sum(np.array(Image.open(e.label)).size for e in lenient.entries if e.label != bad)
    caplog.clear()
    with caplog.at_level("WARNING", logger="anomalyseg.engine.guards"):
        guards.scan_labels(lenient, "train")  # not cached: reported again
    assert str(bad) in caplog.text


def test_training_skips_bad_labels_and_images_alike_and_counts_them_per_epoch(synth_root, tmp_path, caplog):
    root = tmp_path / "tree"
    shutil.copytree(synth_root, root)
    entries = StreetHazards(root, "train").entries
    _truncate(entries[3].label)
    _truncate(entries[9].image)
    cfg = load_config(None, tiny_overrides(root, tmp_path / "runs", "bad", **{
        "data.on_error": "skip", "data.workers": 2, "train.checkpoint_every_steps": 0}))
    with caplog.at_level("INFO", logger="anomalyseg"):
        train(cfg, device="cpu")
    epochs = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert len(epochs) == 2
    assert all("2 unreadable sample(s) skipped (data.on_error=skip)" in m for m in epochs), epochs
    assert str(entries[3].label) in caplog.text  # named by the scan (the workers name both as they skip them)
