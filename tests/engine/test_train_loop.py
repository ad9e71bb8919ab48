"""train_one_epoch / evaluate_segmentation on in-memory data, the loss, and train() bookkeeping."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import confusion_matrix
from tests.engine.helpers import tiny_overrides
from tests.engine.tiny_model import build
from torch import nn
from torch.utils.data import DataLoader

from anomalyseg.checkpoints.io import load_checkpoint, save_checkpoint
from anomalyseg.config import load_config
from anomalyseg.data.info import STREETHAZARDS
from anomalyseg.data.samples import collate_samples
from anomalyseg.engine.factory import SegLoss
from anomalyseg.engine.rundir import create_run_dir
from anomalyseg.engine.train import evaluate_segmentation, train_one_epoch
from anomalyseg.errors import UserError
from anomalyseg.models.outputs import SegOutput
from anomalyseg.workflows.train import train

CPU = torch.device("cpu")


def samples(n: int, h: int = 12, w: int = 16, classes: int = 3, seed: int = 0) -> list[dict]:
    """Images whose first channel encodes the class: learnable by a 1x1 conv."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        label = torch.randint(0, classes, (h, w), generator=g)
        image = torch.randn(3, h, w, generator=g) * 0.1
        image[0] += label.float()
        out.append({"image": image, "label": label, "id": str(i)})
    return out


class Constant:
    """Never-changing schedule (train_one_epoch only calls step())."""

    def step(self) -> None:
        pass


def test_loss_decreases_and_grad_accumulation_equals_big_batch():
    data = samples(8)
    torch.manual_seed(0)
    model = build(3, aux=True, bn=False, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    crit = SegLoss(3, aux_weight=0.4)
    loader = DataLoader(data, batch_size=4, collate_fn=collate_samples)
    first = train_one_epoch(model, crit, opt, loader, Constant(), CPU, 0, num_batches=2, progress=False)
    for epoch in range(1, 20):
        last = train_one_epoch(model, crit, opt, loader, Constant(), CPU, epoch, num_batches=2, progress=False)
    assert last < first * 0.5

    # one step on batch 4 == one step of 2 accumulated batches of 2 (no BN / dropout: same maths)
    torch.manual_seed(1)
    a = build(3, aux=True, bn=False, dropout=0.0)
    b = build(3, aux=True, bn=False, dropout=0.0)
    b.load_state_dict(a.state_dict())
    opt_a, opt_b = torch.optim.SGD(a.parameters(), lr=0.1), torch.optim.SGD(b.parameters(), lr=0.1)
    calls = []
    train_one_epoch(a, crit, opt_a, DataLoader(data[:4], batch_size=4, collate_fn=collate_samples), Constant(), CPU,
                    0, num_batches=1, progress=False)
    train_one_epoch(b, crit, opt_b, DataLoader(data[:4], batch_size=2, collate_fn=collate_samples), Constant(), CPU,
                    0, num_batches=2, grad_accum=2, progress=False, on_step=lambda n, loss, terms: calls.append(n))
    assert calls == [2]  # one optimizer step after two batches
    for (name, pa), pb in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6, msg=name)


def test_seg_loss_matches_cross_entropy_with_weights_aux_and_empty_crops():
    g = torch.Generator().manual_seed(0)
    logits, aux = torch.randn(2, 4, 5, 6, generator=g), torch.randn(2, 4, 5, 6, generator=g)
    target = torch.randint(0, 4, (2, 5, 6), generator=g)
    target[0, :2] = 255
    weights = [1.0, 2.0, 0.5, 3.0]
    loss = SegLoss(4, aux_weight=0.4, class_weights=weights)(SegOutput(logits, aux), target)
    w = torch.tensor(weights)
    expected = F.cross_entropy(logits, target, weight=w, ignore_index=255) + 0.4 * F.cross_entropy(
        aux, target, weight=w, ignore_index=255)
    torch.testing.assert_close(loss, expected)
    empty = SegLoss(4)(SegOutput(logits.requires_grad_()), torch.full((2, 5, 6), 255))
    assert empty.item() == 0.0  # not NaN
    empty.backward()
    assert torch.isfinite(logits.grad).all()


class FixedPredictor(nn.Module):
    """Returns given logits at half the label resolution (so evaluation must upsample)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, images: torch.Tensor) -> SegOutput:
        idx = images[:, 0, 0, 0].long()
        return SegOutput(self.logits[idx])


def test_evaluate_against_sklearn_confusion():
    g = torch.Generator().manual_seed(0)
    n, C = 5, 4
    low = torch.randn(n, C, 6, 8, generator=g)
    labels = torch.randint(0, C, (n, 12, 16), generator=g)
    labels[labels == 2] = torch.where(torch.rand(int((labels == 2).sum()), generator=g) < 0.5, 255, 2)
    labels[0, 0, :5] = 13  # an "anomaly" id, excluded below
    data = [{"image": torch.full((3, 6, 8), float(i)), "label": labels[i]} for i in range(n)]
    loader = DataLoader(data, batch_size=2, collate_fn=collate_samples)
    shown: list = []
    result = evaluate_segmentation(FixedPredictor(low), loader, CPU, C, exclude_ids=(13,), progress=False,
                                   collect=shown, max_collect=3)
    pred = F.interpolate(low, size=(12, 16), mode="bilinear", align_corners=False).argmax(1).numpy().ravel()
    y = labels.numpy().ravel()
    keep = (y != 255) & (y != 13)
    cm = confusion_matrix(y[keep], pred[keep], labels=list(range(C)))
    iou = np.diag(cm) / (cm.sum(0) + cm.sum(1) - np.diag(cm))
    assert result["miou"] == pytest.approx(np.nanmean(iou))
    assert result["per_class_iou"] == pytest.approx(list(iou))
    assert len(shown) == 3 and shown[0][2].shape == (12, 16)


def test_train_writes_run_and_never_overwrites(synth_root, tmp_path):
    out = tmp_path / "runs"
    overrides = tiny_overrides(synth_root, out, "same", **{"train.epochs": 1, "data.max_train_samples": 12})
    cfg = load_config(None, overrides)
    first = train(cfg, device="cpu")
    before = (first / "checkpoints" / "last.pt").read_bytes()
    second = train(cfg, device="cpu")
    assert first.name == "same" and second.name == "same_1"
    assert (first / "checkpoints" / "last.pt").read_bytes() == before
    assert create_run_dir(out, "same", "x").name == "same_2"
    for name in ("config.yaml", "train.log", "metrics.jsonl", "checkpoints/best.pt", "checkpoints/last.pt"):
        assert (first / name).is_file(), name
    assert load_config(first / "config.yaml") == cfg  # the resolved config reloads to the same schema
    assert "12 train / 6 val samples, 3 steps/epoch" in (first / "train.log").read_text()
    ckpt = load_checkpoint(first / "checkpoints" / "last.pt")
    assert ckpt["dataset"] == "streethazards" and ckpt["anomaly_id"] == 13
    assert ckpt["class_names"] == list(STREETHAZARDS.class_names) and len(ckpt["class_names"]) == 13

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(first / "tb"), size_guidance={"images": 0}).Reload()
    tags = events.Tags()
    assert {"train/loss", "train/lr", "val/miou", "val_iou/road"} <= set(tags["scalars"])
    assert {"val/0", "val/1"} <= set(tags["images"])
    record = json.loads((first / "metrics.jsonl").read_text())
    assert events.Scalars("val/miou")[0].value == pytest.approx(record["miou"])


def test_early_stopping_stops_after_patience(synth_root, tmp_path):
    # lr 1e-12 (0 is refused) and no BatchNorm: updates vanish in float32 rounding, so mIoU never improves
    cfg = load_config(None, tiny_overrides(synth_root, tmp_path, "es", **{
        "train.epochs": 6, "train.early_stop_patience": 2, "optim.lr": 1e-12, "model.options": "{bn: false}"}))
    run = train(cfg, device="cpu")
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert len({h["miou"] for h in history}) == 1
    assert "early stop" in (run / "train.log").read_text()


def test_a_run_from_before_data_dataset_existed_resumes(synth_root, tmp_path):
    """Checkpoints written before ``data.dataset`` was added hold no such key: resuming must not count the new
    key's default as a change of config."""
    cfg = load_config(None, tiny_overrides(synth_root, tmp_path, "old", **{"train.epochs": 1}))
    run = train(cfg, device="cpu")
    last = run / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(last)
    del ckpt["config"]["data"]["dataset"]
    save_checkpoint(last, ckpt)
    longer = load_config(None, tiny_overrides(synth_root, tmp_path, "old", **{"train.epochs": 2}))
    assert train(longer, device="cpu", resume=run) == run
    resumed = load_checkpoint(last)
    assert resumed["epoch"] == 2 and resumed["config"]["data"]["dataset"] == "streethazards"
    changed = load_config(None, tiny_overrides(synth_root, tmp_path, "old", **{"train.epochs": 3,
                                                                             "data.dataset": "cityscapes"}))
    with pytest.raises(UserError, match=r"differs from the run's in data.dataset"):
        train(changed, device="cpu", resume=run)
