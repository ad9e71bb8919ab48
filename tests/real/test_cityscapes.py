"""Cityscapes loader on a small tree in the official layout, built here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from anomalyseg.data.cityscapes import CITYSCAPES, CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, Cityscapes
from anomalyseg.data.samples import collate_samples
from anomalyseg.data.transforms import EvalTransform
from anomalyseg.errors import UserError

# The official table (cityscapesscripts labels.py), written out independently: label id -> train id.
OFFICIAL_TRAIN_IDS = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                      26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
H, W = 12, 20


def _frame(root: Path, split: str, city: str, n: int, label_ids: np.ndarray, train_ids: np.ndarray | None = None,
           ) -> str:
    stem = f"{city}_{n:06d}_000019"
    img_dir = root / "leftImg8bit" / split / city
    gt_dir = root / "gtFine" / split / city
    img_dir.mkdir(parents=True, exist_ok=True)
    gt_dir.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(n).integers(0, 255, (*label_ids.shape, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(img_dir / f"{stem}_leftImg8bit.png")
    Image.fromarray(label_ids.astype(np.uint8)).save(gt_dir / f"{stem}_gtFine_labelIds.png")
    if train_ids is not None:
        Image.fromarray(train_ids.astype(np.uint8)).save(gt_dir / f"{stem}_gtFine_labelTrainIds.png")
    return f"{city}/{stem}"


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    labels = {}
    for i, city in enumerate(["aachen", "bochum", "aachen"]):
        ids = rng.integers(0, 34, (H, W))  # every official label id 0..33
        labels[_frame(tmp_path, "train", city, i, ids)] = ids
    _frame(tmp_path, "val", "frankfurt", 0, np.full((H, W), 7))
    return tmp_path, labels


def test_label_ids_map_to_train_ids_with_the_official_table(tree) -> None:
    root, labels = tree
    ds = Cityscapes(root, "train")
    assert len(ds) == 3 and ds.ids == sorted(labels)  # sorted by city, then frame
    for i, sid in enumerate(ds.ids):
        sample = ds[i]
        expected = np.vectorize(lambda v: OFFICIAL_TRAIN_IDS.get(int(v), 255))(labels[sid])
        np.testing.assert_array_equal(sample["label"].numpy(), expected)
        assert sample["image"].dtype == torch.uint8 and sample["image"].shape == (3, H, W)
        assert sample["id"] == sid and sample["orig_size"] == (H, W)
        assert sample["label_path"].endswith("_gtFine_labelIds.png")
    assert len(Cityscapes(root, "val")) == 1 and (Cityscapes(root, "val")[0]["label"] == 0).all()  # 7 = road


def test_label_train_ids_files_are_preferred(tmp_path: Path) -> None:
    ids = np.full((H, W), 7)  # road by the label ids ...
    train = np.full((H, W), 5, dtype=np.uint8)  # ... but the train-id file says pole, plus ignore and a bad 19
    train[0, :3] = [255, 19, 18]
    _frame(tmp_path, "val", "lindau", 0, ids, train)
    auto = Cityscapes(tmp_path, "val")[0]["label"]
    assert auto[0, :4].tolist() == [255, 255, 18, 5] and (auto[1:] == 5).all()
    assert (Cityscapes(tmp_path, "val", label_source="labelIds")[0]["label"] == 0).all()


def test_metadata_and_batches(tree) -> None:
    root, _ = tree
    assert len(CITYSCAPES_CLASSES) == 19 == CITYSCAPES.num_classes and CITYSCAPES_CLASSES[0] == "road"
    assert CITYSCAPES_CLASSES[-1] == "bicycle" and CITYSCAPES_PALETTE[0] == (128, 64, 128)
    assert CITYSCAPES.ignore_index == 255 and len(CITYSCAPES.palette) == 20
    ds = Cityscapes(root, "train", transform=EvalTransform(size=(6, 10), keep_aspect=False))
    batch = next(iter(DataLoader(ds, batch_size=3, collate_fn=collate_samples)))
    assert batch["image"].shape == (3, 3, 6, 10) and batch["image"].dtype == torch.float32
    assert batch["label"].shape == (3, H, W)  # labels stay at native resolution for the metrics


def test_errors_are_one_line(tree, tmp_path: Path) -> None:
    root, _ = tree
    (root / "gtFine" / "train" / "bochum").rename(root / "gtFine" / "train" / "gone")
    checks = [
        (lambda: Cityscapes(root, "train"), "1 of 3 Cityscapes images have no label"),
        (lambda: Cityscapes(root, "training"), "split must be one of train, val, test"),
        (lambda: Cityscapes(tmp_path / "empty", "val"), "no Cityscapes images at"),
        (lambda: Cityscapes(root, "val", label_source="ids"), "label_source must be"),
    ]
    for make, message in checks:
        with pytest.raises(UserError) as info:
            make()
        assert message in str(info.value) and "\n" not in str(info.value)
