"""Training any registered dataset through its DatasetSpec (``data.dataset``): a tiny Cityscapes tree trains on
CPU with 19 classes and Cityscapes colours; unknown / untrainable names and held-out splits are one line."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tests.engine.helpers import tiny_overrides

from anomalyseg.checkpoints.io import load_checkpoint
from anomalyseg.cli import main as cli_main
from anomalyseg.config import load_config
from anomalyseg.data.cityscapes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE
from anomalyseg.engine.factory import balanced_class_weights
from anomalyseg.errors import UserError
from anomalyseg.workflows.train import train

H, W = 48, 64
#: Official label ids -> train ids used below (cityscapesscripts labels.py): road, sidewalk, building, car.
LABEL_IDS = {7: 0, 8: 1, 11: 2, 26: 13}


def _cityscapes_tree(root: Path, train: int = 8, val: int = 2) -> Path:
    """``leftImg8bit`` / ``gtFine`` in the official layout; val labels are all road (label id 7)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("val", val)):
        for i in range(n):
            city = ("aachen", "bochum")[i % 2] if split == "train" else "frankfurt"
            stem = f"{city}_{i:06d}_000019"
            (root / "leftImg8bit" / split / city).mkdir(parents=True, exist_ok=True)
            (root / "gtFine" / split / city).mkdir(parents=True, exist_ok=True)
            ids = (rng.choice([*LABEL_IDS, 0], size=(H, W), p=[0.5, 0.25, 0.1, 0.05, 0.1]) if split == "train"
                   else np.full((H, W), 7))
            rgb = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
            Image.fromarray(rgb).save(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
            Image.fromarray(ids.astype(np.uint8)).save(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png")
    return root


@pytest.fixture(scope="module")
def cityscapes_root(tmp_path_factory) -> Path:
    return _cityscapes_tree(tmp_path_factory.mktemp("cs") / "cityscapes")


def _overrides(root: Path, out: Path, name: str, **extra: object) -> list[str]:
    return tiny_overrides(root, out, name, **{"data.dataset": "cityscapes", "train.epochs": 1, **extra})


def test_cityscapes_trains_one_epoch_with_its_classes_and_colours(cityscapes_root, tmp_path):
    run = train(load_config(None, _overrides(cityscapes_root, tmp_path, "cs")), device="cpu")
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["class_names"] == list(CITYSCAPES_CLASSES) and len(ckpt["class_names"]) == 19
    assert ckpt["num_classes"] == 19 and ckpt["model"]["classifier.weight"].shape[0] == 19
    assert ckpt["dataset"] == "cityscapes" and ckpt["anomaly_id"] is None
    assert ckpt["epoch"] == 1 and ckpt["step"] == 2  # 8 samples / batch 4
    assert ckpt["config"]["data"]["dataset"] == "cityscapes"
    record = json.loads((run / "metrics.jsonl").read_text())
    assert len(record["per_class_iou"]) == 19 and 0.0 <= record["miou"] <= 1.0  # mIoU on val, 19 classes
    log_text = (run / "train.log").read_text()
    assert "8 train / 2 val samples, 2 steps/epoch" in log_text
    assert "label scan" not in log_text  # no anomaly ids: nothing to scan for, and no balancing asked

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb"), size_guidance={"images": 0}).Reload()
    assert "val_iou/sidewalk" in events.Tags()["scalars"]  # a Cityscapes class name, not StreetHazards'
    panel = np.array(Image.open(io.BytesIO(events.Images("val/0")[0].encoded_image_string)).convert("RGB"))
    assert panel.shape == (H, 3 * W, 3)
    truth = panel[:, W: 2 * W].reshape(-1, 3)
    assert (truth == CITYSCAPES_PALETTE[0]).all()  # every val pixel is road, drawn in Cityscapes' road colour


def test_cityscapes_class_balance_counts_untransformed_labels(cityscapes_root, tmp_path, caplog):
    caplog.set_level("INFO", logger="anomalyseg")
    train(load_config(None, _overrides(cityscapes_root, tmp_path, "bal",
                                             **{"train.class_balance": "inverse_sqrt"})), device="cpu")
    from anomalyseg.data.cityscapes import Cityscapes

    ds = Cityscapes(cityscapes_root, "train")
    counts = np.zeros(256, dtype=np.int64)
    for i in range(len(ds)):
        counts += np.bincount(ds.read_label(i).ravel(), minlength=256)
    expected = balanced_class_weights(counts[:19], "inverse_sqrt")
    line = re.search(r"class weights \(inverse_sqrt\): (.*)", caplog.text).group(1)
    logged = [float(w) for w in line.split(", ")]
    assert len(logged) == 19 and logged == pytest.approx(expected, abs=0.006)
    assert sum(w > 0 for w in logged) == len(LABEL_IDS)  # only the classes present get a weight
    assert logged[13] > logged[2] > logged[0]  # rarer classes weigh more: counts are the labels' own


def test_unknown_and_untrainable_datasets_are_one_line(cityscapes_root, tmp_path, capsys):
    with pytest.raises(UserError, match=r"^unknown dataset 'nope'; known: streethazards, cityscapes"):
        load_config(None, ["data.dataset=nope"])
    config = tmp_path / "c.yaml"
    config.write_text("data:\n  dataset: nope\n")
    assert cli_main(["train", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("anomalyseg: error: unknown dataset 'nope'; known:") and "\n" not in err
    assert load_config(None, ["data.dataset=CityScapes"]).data.dataset == "CityScapes"  # same rule as the registry

    cfg = load_config(None, _overrides(cityscapes_root, tmp_path, "ra", **{"data.dataset": "road_anomaly"}))
    with pytest.raises(UserError, match=r"Road Anomaly has no class labels to train on; trainable: "
                                        r"streethazards, cityscapes$"):
        train(cfg, device="cpu")
    assert not (tmp_path / "ra").exists()


def test_held_out_splits_are_refused_per_dataset(cityscapes_root, tmp_path):
    cfg = load_config(None, _overrides(cityscapes_root, tmp_path, "t", **{"data.val_split": "test"}))
    with pytest.raises(UserError, match=r"^the 'test' split is held out for testing and is never used for "
                                        r"validation \(choosing checkpoints\); use 'train' / 'val'$"):
        train(cfg, device="cpu")
    cfg = load_config(None, _overrides(cityscapes_root, tmp_path, "v", **{"data.train_split": "val",
                                                                        "data.batch_size": 2}))
    run = train(cfg, device="cpu")  # Cityscapes' evaluation split holds no anomalies: it may be trained on
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 1  # 2 val images, batch 2


def test_cityscapes_labels_are_counted_without_transform_or_images(cityscapes_root):
    from torch.utils.data import Subset

    from anomalyseg.data.cityscapes import Cityscapes
    from anomalyseg.data.transforms import TrainTransform
    from anomalyseg.engine import guards

    ds = Cityscapes(cityscapes_root, "train", transform=TrainTransform(crop_size=(16, 16)))
    sub = Subset(Subset(ds, [5, 1, 2]), [2, 0])  # -> samples 2 and 5
    assert isinstance(guards._count_source(sub, None), guards._ReadLabelCounts)
    expected = sum(np.bincount(ds.read_label(i).ravel(), minlength=256) for i in (2, 5))
    counts = guards.scan_labels(sub, "train", anomaly_ids=(), use_cache=False)
    np.testing.assert_array_equal(counts, expected)
    assert counts.sum() == 2 * H * W  # native labels, not 16x16 crops


def test_cityscapes_evaluates_through_the_same_engine(cityscapes_root, tmp_path):
    """``evaluate --dataset cityscapes``: mIoU on val over 19 classes (no anomaly labels: no scorer runs), equal to
    an independent confusion matrix of the checkpoint's own predictions; its weights are refused for StreetHazards."""
    import torch

    from anomalyseg.checkpoints.reload import load_model
    from anomalyseg.data.cityscapes import Cityscapes
    from anomalyseg.data.transforms import EvalTransform
    from anomalyseg.report.results import read_results

    run = train(load_config(None, _overrides(cityscapes_root, tmp_path, "cs_eval")), device="cpu")
    out = tmp_path / "city.json"
    assert cli_main(["evaluate", "--checkpoint", str(run), "--dataset", "cityscapes", "--data-root",
                     str(cityscapes_root), "--workers", "0", "--no-progress", "--out", str(out)]) == 0
    record = read_results(out)
    assert record["dataset"]["key"] == "cityscapes" and record["dataset"]["split"] == "val"
    assert record["scorers"] == {} and record["protocols"] == {}
    seg = record["segmentation"]
    assert list(seg["per_class_iou"]) == list(CITYSCAPES_CLASSES)

    model = load_model(run, "cpu").model
    conf = np.zeros((19, 19), dtype=np.int64)
    for sample in Cityscapes(cityscapes_root, "val", transform=EvalTransform()):
        with torch.no_grad():
            pred = model(sample["image"][None]).logits.argmax(1)[0].numpy()
        label = sample["label"].numpy()
        keep = label != 255
        conf += np.bincount(19 * label[keep] + pred[keep], minlength=19 * 19).reshape(19, 19)
    inter, union = np.diag(conf), conf.sum(0) + conf.sum(1) - np.diag(conf)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / union, np.nan)
    assert seg["miou"] == pytest.approx(float(np.nanmean(iou)), abs=1e-9)

    from anomalyseg.data import STREETHAZARDS

    with pytest.raises(UserError, match="predicts 19 classes but the dataset has 13 known classes"):
        load_model(run, "cpu", class_names=STREETHAZARDS.class_names)
