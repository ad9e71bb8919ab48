"""The reduced exact curve and the chunked curve scan against sklearn's full curve."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_curve

from anomalyseg.metrics.curves import CurveScan, curve_metrics, exact_counts

RULES = ("first", "closest", "interp")


def _full_curve(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every distinct threshold, descending, from sklearn (the point at +inf dropped)."""
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    return tpr[1:] * y.sum(), fpr[1:] * (y.size - y.sum()), thr[1:]


def _cases(rng: np.random.Generator):
    for n, kind, share in [(3000, "normal", 0.01), (2000, "ties", 0.3), (1500, "round", 0.1), (800, "pow", 0.6),
                           (50, "ties", 0.9), (400, "normal", 0.5)]:
        s = {"normal": rng.normal(size=n), "ties": rng.integers(0, 5, n).astype(float),
             "round": np.round(rng.normal(size=n), 1), "pow": rng.random(n) ** 8}[kind].astype(np.float32)
        y = rng.random(n) < share
        y[:2] = [True, False]
        yield y, s


@pytest.mark.parametrize("rule", RULES)
def test_reduced_exact_curve_equals_the_full_curve(rule):
    """Metrics AND operating thresholds on the reduced curve equal those on sklearn's every-threshold curve."""
    rng = np.random.default_rng(3)
    for y, s in _cases(rng):
        tps, fps, thr = exact_counts(torch.from_numpy(s), torch.from_numpy(y))
        assert tps.size <= 2 * np.unique(s[y]).size + 1  # ~2 points per distinct positive score
        full_tps, full_fps, full_thr = _full_curve(y, s)
        full = curve_metrics(full_tps, full_fps, rule, thresholds=full_thr.astype(np.float32))
        reduced = curve_metrics(tps, fps, rule, thresholds=thr)
        for key, value in full.items():
            assert reduced[key] == pytest.approx(value, abs=1e-12), key


def test_scan_in_chunks_equals_one_pass():
    rng = np.random.default_rng(4)
    y, s = next(_cases(rng))
    tps, fps, thr = _full_curve(y, s)
    for rule in RULES:
        whole = CurveScan(tps[-1], fps[-1], rule, max_points=64)
        whole.add(tps, fps, thr)
        parts = CurveScan(tps[-1], fps[-1], rule, max_points=64)
        cuts = np.sort(rng.choice(np.arange(1, tps.size), 7, replace=False))
        for a, b in zip(np.r_[0, cuts], np.r_[cuts, tps.size]):
            parts.add(tps[a:b], fps[a:b], thr[a:b])
        for key, value in whole.result().items():
            assert parts.result()[key] == pytest.approx(value, abs=1e-12), key
        assert parts.downsampled() == whole.downsampled()


def test_downsampled_curve_keeps_the_ends_and_follows_tpr_and_fpr():
    rng = np.random.default_rng(5)
    y, s = next(_cases(rng))
    tps, fps, thr = _full_curve(y, s)
    scan = CurveScan(tps[-1], fps[-1], max_points=40)
    scan.add(tps, fps, thr)
    c = scan.downsampled()
    assert c["tpr"][-1] == 1.0 and c["fpr"][-1] == 1.0 and c["thresholds"][0] == thr[0]
    assert len(c["tpr"]) <= 41 and np.all(np.diff(c["tpr"]) >= 0) and np.all(np.diff(c["fpr"]) >= 0)
    assert np.max(np.diff(c["tpr"])) <= 1 / 19 + 1 / y.sum()  # no gap wider than one grid step (+ one point)


def test_one_class_curves():
    s = torch.tensor([0.3, 0.1, 0.2])
    tps, fps, _ = exact_counts(s, torch.zeros(3, dtype=torch.bool))
    assert tps.tolist() == [0.0] and fps.tolist() == [3.0]
    tps, fps, _ = exact_counts(s, torch.ones(3, dtype=torch.bool))
    assert tps.tolist() == [1.0, 2.0, 3.0] and fps.tolist() == [0.0, 0.0, 0.0]


def test_fast_counts_without_thresholds_equal_the_sorted_path():
    """The coarse-bin count path (CPU, no thresholds) gives the same curve as one full sort."""
    rng = np.random.default_rng(6)
    cases = list(_cases(rng))
    s = rng.normal(0, 1, 20000).astype(np.float32)
    s[:50] = [0.0, -0.0] * 25  # signed zeros tie
    s[50:3000] = np.float32(1.0) + np.arange(2950, dtype=np.float32) * np.float32(1e-7)  # one coarse bin, many values
    cases.append((rng.random(s.size) < 0.05, s))
    cases.append((rng.random(s.size) < 0.002, (s * 1e30).astype(np.float32)))  # huge magnitudes
    for y, s in cases:
        st, yt = torch.from_numpy(s), torch.from_numpy(y)
        tps, fps, _ = exact_counts(st, yt)
        tps2, fps2, thr2 = exact_counts(st, yt, thresholds=False)
        assert thr2 is None
        np.testing.assert_array_equal(tps2, tps)
        np.testing.assert_array_equal(fps2, fps)


def test_device_path_equals_the_numpy_path():
    """The torch path that GPU tensors take (run here on CPU tensors) gives the numpy path's runs."""
    from anomalyseg.metrics.curves import _positive_runs_numpy, _positive_runs_torch

    rng = np.random.default_rng(7)
    for y, s in _cases(rng):
        st = torch.from_numpy(s) + 0.0
        a = _positive_runs_torch(st, torch.from_numpy(y))
        b = _positive_runs_numpy(st.numpy(), y, thresholds=True)
        for x, z in zip(a[:-1], b[:-1]):
            np.testing.assert_array_equal(np.asarray(x, np.float64), np.asarray(z, np.float64))
        assert a[-1] == b[-1]
