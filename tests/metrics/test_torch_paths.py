"""Both sides of every "numpy on CPU / torch elsewhere" branch of the metrics, checked on CPU tensors.

The torch side is what CUDA tensors take; :func:`anomalyseg.metrics.backend.torch_path_on_cpu` runs it on CPU
tensors, so each test below runs once per side and compares with an independent reference (sklearn, a numpy
formula), on data with ties, ignored pixels and edge values.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_curve
from tests.metrics.paths import PATHS, on_path
from tests.metrics.reference import reference_metrics

from anomalyseg.metrics import AnomalyMetrics, SegmentationMetrics
from anomalyseg.metrics.anomaly import check_finite
from anomalyseg.metrics.backend import numpy_path, torch_path_on_cpu
from anomalyseg.metrics.curves import FPR_RULES, curve_metrics, exact_counts
from anomalyseg.metrics.histogram import BlockHistogram, order_bins


def test_dispatch_switches_and_restores():
    t = torch.zeros(3)
    assert numpy_path(t)
    with torch_path_on_cpu():
        assert not numpy_path(t)
        with torch_path_on_cpu():
            assert not numpy_path(t)
        assert not numpy_path(t)  # the inner context restores the outer one's setting
    assert numpy_path(t)
    with pytest.raises(RuntimeError), torch_path_on_cpu():
        raise RuntimeError
    assert numpy_path(t)  # restored after an exception too
    assert not numpy_path(torch.zeros(3, device="meta"))  # any other device takes torch


# ---- histogram ------------------------------------------------------------------------------------
def _reference_bins(x: np.ndarray, bits: int) -> np.ndarray:
    """Textbook order key of float32 values (sign set: flip every bit, else set the sign bit), top ``bits``."""
    x = np.where(x == 0, np.float32(0.0), x.astype(np.float32))  # -0.0 and +0.0 are one value
    u = x.view(np.uint32).astype(np.int64)
    key = np.where(u >> 31 == 1, 0xFFFFFFFF - u, u + 0x80000000)
    return key >> (32 - bits)


_EDGE = np.array([-0.0, 0.0, 1e-45, -1e-45, 1.1754944e-38, -1.1754944e-38, 3.4028235e38, -3.4028235e38,
                  np.inf, -np.inf, 1.0, -1.0, np.nextafter(np.float32(1), np.float32(2)), 0.5, -0.5], np.float32)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("bits", [16, 27, 30])
def test_order_bins_equal_the_textbook_key(path, bits):
    rng = np.random.default_rng(0)
    x = np.concatenate([_EDGE, (rng.normal(size=2000) * 10).astype(np.float32), np.full(5, 2.5, np.float32)])
    got = on_path(path, lambda: order_bins(torch.from_numpy(x), bits))
    assert got.dtype == torch.int32
    np.testing.assert_array_equal(got.numpy().astype(np.int64), _reference_bins(x, bits))
    assert got[0] == got[1]  # -0.0 and +0.0 share a bin


@pytest.mark.parametrize("path", PATHS)
def test_histogram_bins_and_totals_equal_a_numpy_count(path):
    rng = np.random.default_rng(1)
    batches = []
    for scale in (1.0, 1e4):  # the second batch reaches blocks the first did not allocate
        s = rng.normal(0.0, scale, 6000).astype(np.float32)
        s[:800] = np.round(s[:800])  # heavy ties
        s[800] = -0.0
        batches.append((s, rng.random(6000) < 0.1))

    def run():
        h = BlockHistogram(bits=20, block_bits=8)
        for s, y in batches:
            h.add(torch.from_numpy(s), torch.from_numpy(y))
        parts = list(h.descending(blocks_per_chunk=3))
        return h.totals(), [np.concatenate(c) for c in zip(*parts)]

    (neg_total, pos_total), (neg, pos, ids) = on_path(path, run)
    s = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    keys = _reference_bins(s, 20)
    want_ids, inverse = np.unique(keys, return_inverse=True)
    np.testing.assert_array_equal(ids, want_ids[::-1])
    np.testing.assert_array_equal(pos, np.bincount(inverse, weights=y, minlength=want_ids.size)[::-1])
    np.testing.assert_array_equal(neg, np.bincount(inverse, weights=~y, minlength=want_ids.size)[::-1])
    assert (neg_total, pos_total) == (int((~y).sum()), int(y.sum()))


# ---- segmentation ---------------------------------------------------------------------------------
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("ignore_index", [255, None])
def test_confusion_equals_a_numpy_count(path, ignore_index):
    rng = np.random.default_rng(2)
    C = 5
    t = rng.integers(0, C, size=(3, 9, 11))
    p = rng.integers(0, C, size=(3, 9, 11))
    if ignore_index is not None:
        t[:, :2] = 255
        p[0, 0] = 9  # out of range, but only on ignored pixels: not counted, not an error
    m = SegmentationMetrics(C, ignore_index=ignore_index)
    on_path(path, lambda: m.update(torch.from_numpy(p), torch.from_numpy(t)))
    keep = t != 255
    want = np.zeros((C, C), np.int64)
    np.add.at(want, (t[keep], p[keep]), 1)
    np.testing.assert_array_equal(m.confusion.numpy(), want)


@pytest.mark.parametrize("path", PATHS)
def test_segmentation_rejects_bad_ids(path):
    m = SegmentationMetrics(5)
    zeros = torch.zeros(1, 4, 4, dtype=torch.long)
    t = zeros.clone()
    t[0, 0, 0], t[0, 0, 1], t[0, 1, 1] = 7, -1, 255
    with pytest.raises(ValueError, match=r"values \[-1, 7\]"):
        on_path(path, lambda: m.update(zeros, t))
    t[0, 0, 0], t[0, 0, 1] = 5, 4  # exactly num_classes: the first id outside
    with pytest.raises(ValueError, match=r"values \[5\]"):
        on_path(path, lambda: m.update(zeros, t))
    p = zeros.clone()
    p[0, 2, 2] = 5
    with pytest.raises(ValueError, match="pred holds class ids outside"):
        on_path(path, lambda: m.update(p, zeros))
    p[0, 2, 2] = -1
    with pytest.raises(ValueError, match="pred holds class ids outside"):
        on_path(path, lambda: m.update(p, zeros))
    assert int(m.confusion.sum()) == 0


# ---- anomaly metrics ------------------------------------------------------------------------------
@pytest.mark.parametrize("path", PATHS)
def test_non_finite_scores_and_bad_targets_raise(path):
    s = torch.rand(2, 4, 4)
    t = torch.zeros(2, 4, 4, dtype=torch.long)
    t[0, 0, 0], t[1, 1, 1] = 1, 255
    on_path(path, lambda: check_finite(s))  # finite: no error
    on_path(path, lambda: AnomalyMetrics().update(s, t))
    for bad in (float("nan"), float("inf"), float("-inf")):
        s_bad = s.clone()
        s_bad[1, 2, 3] = s_bad[0, 0, 1] = bad
        with pytest.raises(ValueError, match="2 non-finite"):
            on_path(path, lambda s_bad=s_bad: check_finite(s_bad))
        with pytest.raises(ValueError, match="2 non-finite"):
            on_path(path, lambda s_bad=s_bad: AnomalyMetrics().update(s_bad, t))
    t_bad = t.clone()
    t_bad[0, 3, 3] = 2
    with pytest.raises(ValueError, match=r"found \[2\]"):
        on_path(path, lambda: AnomalyMetrics().update(s, t_bad))
    with pytest.raises(ValueError, match=r"found \[255\]"):
        on_path(path, lambda: AnomalyMetrics(ignore_index=None).update(s, t))


def _maps() -> tuple[np.ndarray, np.ndarray]:
    """4 images: tied (quantised) scores, ignored pixels except in image 2, image 3 without anomalies."""
    rng = np.random.default_rng(3)
    t = np.zeros((4, 20, 24), np.int64)
    t[:3, 5:11, 6:14] = 1
    t[[0, 1, 3], :, :3] = 255
    s = rng.normal(size=t.shape) + 1.5 * (t == 1)
    s = (np.round(s * 8) / 8).astype(np.float32)
    s[0, 0, 5] = -0.0
    return s, t


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(("protocol", "rule"), [("pooled", "first"), ("pooled", "interp"), ("per_image", "closest"),
                                                ("per_image", "first")])
def test_anomaly_metrics_equal_sklearn(path, protocol, rule):
    s, t = _maps()
    m = AnomalyMetrics(protocol, fpr_rule=rule)
    for part in (slice(0, 1), slice(1, 4)):
        on_path(path, lambda part=part: m.update(torch.from_numpy(s[part]), torch.from_numpy(t[part])))
    r = m.compute()
    keep = t != 255
    assert (r["num_positive"], r["num_negative"]) == (int((t == 1).sum()), int((t == 0).sum()))
    assert r["num_images"] == 4
    if protocol == "pooled":
        want = reference_metrics(t[keep], s[keep], rule)
    else:
        per = [reference_metrics(t[i][keep[i]], s[i][keep[i]], rule) for i in range(3)]
        want = {k: float(np.mean([p[k] for p in per])) for k in per[0]}
        assert r["num_images_skipped"] == 1
        assert [rec["num_positive"] for rec in m.per_image] == [int((t[i] == 1).sum()) for i in range(4)]
        assert [rec["num_negative"] for rec in m.per_image] == [int((t[i] == 0).sum()) for i in range(4)]
    for key, value in want.items():
        assert r[key] == pytest.approx(value, abs=1e-9), key


@pytest.mark.parametrize("path", PATHS)
def test_streethazards_preset_counts_every_pixel(path):
    """ignore_index=None: no pixel is masked (the branch without a mask)."""
    s, t = _maps()
    t = np.where(t == 255, 0, t)
    m = AnomalyMetrics.streethazards()
    on_path(path, lambda: m.update(torch.from_numpy(s), torch.from_numpy(t)))
    per = [reference_metrics(t[i].ravel(), s[i].ravel(), "closest") for i in range(3)]
    r = m.compute()
    assert r["num_negative"] == int((t == 0).sum())
    for key in ("auroc", "aupr", "fpr95"):
        assert r[key] == pytest.approx(np.mean([p[key] for p in per]), abs=1e-9)


# ---- exact curve ----------------------------------------------------------------------------------
def _curve_cases() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(4)
    y = rng.random(3000) < 0.05
    gauss = (rng.normal(size=3000) + 2 * y).astype(np.float32)
    tied = np.round(gauss * 2) / 2  # positives and negatives share scores
    lone = np.zeros(50, bool)
    lone[7] = True  # one positive, negatives on both sides and equal to it
    lone_s = np.r_[np.linspace(-1, 1, 50)].astype(np.float32)
    lone_s[8] = lone_s[7]
    signed = np.array([-0.0, 0.0, 0.0, -0.0, 1.0, -1.0], np.float32)
    return [(y, gauss), (y, tied.astype(np.float32)), (lone, lone_s), (np.array([1, 0, 1, 0, 0, 1], bool), signed)]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("thresholds", [True, False])
def test_exact_counts_are_points_of_sklearns_curve(path, thresholds):
    for y, s in _curve_cases():
        tps, fps, thr = on_path(path, lambda y=y, s=s: exact_counts(torch.from_numpy(s), torch.from_numpy(y),
                                                                    thresholds=thresholds))
        fpr, tpr, full_thr = roc_curve(y, s + np.float32(0.0), drop_intermediate=False)
        P, N = int(y.sum()), int((~y).sum())
        full = set(zip(np.rint(tpr * P).astype(int).tolist(), np.rint(fpr * N).astype(int).tolist(),
                       full_thr.astype(np.float32).tolist()))
        points = {(a, b) for a, b, _ in full}
        assert (tps[-1], fps[-1]) == (P, N)
        assert all((int(a), int(b)) in points for a, b in zip(tps, fps))
        if thresholds:
            assert all((int(a), int(b), float(c)) in full for a, b, c in zip(tps, fps, thr))
        else:
            assert thr is None
        for rule in FPR_RULES:
            got = curve_metrics(tps, fps, rule)
            for key, value in reference_metrics(y, s, rule).items():
                assert got[key] == pytest.approx(value, abs=1e-12), (rule, key)
