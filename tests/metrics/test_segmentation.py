"""SegmentationMetrics against sklearn's confusion matrix and numpy IoU formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix

from anomalyseg.metrics import SegmentationMetrics


def _random_batch(rng: np.random.Generator, b: int = 3, c: int = 5, h: int = 17, w: int = 23):
    target = rng.integers(0, c, size=(b, h, w))
    target[rng.random((b, h, w)) < 0.1] = 255
    pred = np.where(rng.random((b, h, w)) < 0.6, target, rng.integers(0, c, size=(b, h, w)))
    pred[pred == 255] = 0
    return torch.from_numpy(pred), torch.from_numpy(target)


def _reference(preds, targets, c):
    p = np.concatenate([x.numpy().ravel() for x in preds])
    t = np.concatenate([x.numpy().ravel() for x in targets])
    keep = t != 255
    cm = confusion_matrix(t[keep], p[keep], labels=list(range(c)))
    tp = np.diag(cm).astype(float)
    union = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        acc = np.where(cm.sum(1) > 0, tp / cm.sum(1), np.nan)
    return cm, iou, np.nanmean(iou), tp.sum() / cm.sum(), np.nanmean(acc)


def test_matches_sklearn_confusion_and_iou_formulas():
    rng = np.random.default_rng(0)
    batches = [_random_batch(rng) for _ in range(4)]
    m = SegmentationMetrics(5)
    for p, t in batches:
        m.update(p, t)
    cm, iou, miou, pa, mca = _reference([b[0] for b in batches], [b[1] for b in batches], 5)
    r = m.compute()
    assert np.array_equal(np.array(r["confusion_matrix"]), cm)
    np.testing.assert_allclose(r["per_class_iou"], iou, rtol=0, atol=1e-12)
    assert r["miou"] == pytest.approx(miou, abs=1e-12)
    assert r["pixel_accuracy"] == pytest.approx(pa, abs=1e-12)
    assert r["mean_class_accuracy"] == pytest.approx(mca, abs=1e-12)


def test_dataset_level_not_mean_of_per_image_iou():
    # image 1: class 1 tiny and wrong; image 2: class 1 large and right. Per-image mean != dataset IoU.
    t1 = torch.zeros(1, 10, 10, dtype=torch.long)
    t1[0, 0, 0] = 1
    p1 = torch.zeros_like(t1)
    t2 = torch.ones(1, 10, 10, dtype=torch.long)
    m = SegmentationMetrics(2)
    m.update(p1, t1)
    m.update(t2.clone(), t2)
    iou1 = 100 / 101  # class 1: tp 100, fn 1
    assert m.compute()["per_class_iou"][1] == pytest.approx(iou1)
    # class 0 (tp 99, fp 1): 0.99; mean of per-image mIoUs would differ
    assert m.compute()["miou"] == pytest.approx((99 / 100 + iou1) / 2)


def test_logits_input_equals_argmax_ids():
    rng = np.random.default_rng(1)
    logits = torch.from_numpy(rng.normal(size=(2, 4, 9, 11)).astype(np.float32))
    target = torch.from_numpy(rng.integers(0, 4, size=(2, 9, 11)))
    a, b = SegmentationMetrics(4), SegmentationMetrics(4)
    a.update(logits, target)
    b.update(logits.argmax(1), target)
    assert a.compute()["confusion_matrix"] == b.compute()["confusion_matrix"]


def test_absent_class_is_nan_and_miou_is_nanmean():
    target = torch.tensor([[[0, 0, 1, 1]]])
    pred = torch.tensor([[[0, 1, 1, 1]]])
    m = SegmentationMetrics(3)
    m.update(pred, target)
    r = m.compute()
    assert np.isnan(r["per_class_iou"][2])
    assert r["miou"] == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_split_merge_and_state_dict_give_identical_results():
    rng = np.random.default_rng(2)
    batches = [_random_batch(rng) for _ in range(6)]
    whole, a, b = SegmentationMetrics(5), SegmentationMetrics(5), SegmentationMetrics(5)
    for i, (p, t) in enumerate(batches):
        whole.update(p, t)
        (a if i % 2 else b).update(p, t)
    restored = SegmentationMetrics(5)
    restored.load_state_dict(a.state_dict())
    restored.merge(b)
    assert restored.compute()["confusion_matrix"] == whole.compute()["confusion_matrix"]
    whole.reset()
    assert whole.compute()["num_pixels"] == 0 and np.isnan(whole.compute()["miou"])


def test_rejects_unmapped_ids_and_mismatched_config():
    m = SegmentationMetrics(13)
    target = torch.full((1, 4, 4), 13)  # the anomaly id must be mapped to ignore first
    with pytest.raises(ValueError, match="ignore_index"):
        m.update(torch.zeros(1, 4, 4, dtype=torch.long), target)
    with pytest.raises(ValueError, match="cannot merge"):
        m.merge(SegmentationMetrics(12))
    with pytest.raises(ValueError, match="channels"):
        m.update(torch.zeros(1, 5, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    rng = np.random.default_rng(3)
    p, t = _random_batch(rng)
    cpu, gpu = SegmentationMetrics(5), SegmentationMetrics(5)
    cpu.update(p, t)
    gpu.update(p.cuda(), t.cuda())
    assert gpu.confusion.is_cuda
    assert gpu.compute()["confusion_matrix"] == cpu.compute()["confusion_matrix"]
