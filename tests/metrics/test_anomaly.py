"""AnomalyMetrics against sklearn, ood_metrics and the official StreetHazards FPR code."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score
from tests.metrics.reference import FPR_REFERENCES, fpr_first, fpr_official_streethazards, reference_metrics

from anomalyseg.metrics import AnomalyMetrics
from anomalyseg.metrics.curves import float_order_key, key_to_float

RULES = ("first", "closest", "interp")


def _images(rng: np.random.Generator, n: int = 6, h: int = 24, w: int = 32, quantize: float | None = None):
    """Score maps with 1-10 % anomalies, ignore pixels, one image without anomaly, one all-anomaly."""
    scores, targets = [], []
    for i in range(n):
        t = (rng.random((h, w)) < rng.uniform(0.01, 0.1)).astype(np.int64)
        if i == 1:
            t[:] = 0
        if i == 2:
            t[:] = 1
        s = rng.normal(0, 1, (h, w)) + 1.2 * t
        if quantize:
            s = np.round(s / quantize) * quantize
        t[rng.random((h, w)) < 0.05] = 255
        scores.append(s.astype(np.float32))
        targets.append(t)
    return np.stack(scores), np.stack(targets)


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("quantize", [None, 0.25])
def test_per_image_matches_sklearn_loop(rule, quantize):
    rng = np.random.default_rng(10)
    s, t = _images(rng, quantize=quantize)
    m = AnomalyMetrics("per_image", fpr_rule=rule)
    m.update(torch.from_numpy(s[:4]), torch.from_numpy(t[:4]))
    m.update(torch.from_numpy(s[4:]), torch.from_numpy(t[4:]))
    refs = []
    for si, ti in zip(s, t):
        keep = ti != 255
        y, x = ti[keep], si[keep]
        if 0 < y.sum() < y.size:
            refs.append(reference_metrics(y, x, rule))
    r = m.compute()
    assert r["num_images"] == 6 and r["num_images_skipped"] == 2
    for key in ("auroc", "aupr", "fpr95"):
        assert abs(r[key] - np.mean([ref[key] for ref in refs])) < 1e-9, key
    assert r["num_positive"] == int((t == 1).sum()) and r["num_negative"] == int((t == 0).sum())
    assert len(m.per_image) == 6 and "auroc" not in m.per_image[1]


def _pooled_reference_check(scores: np.ndarray, labels: np.ndarray, tol_auroc: float, tol_rest: float):
    ref_auroc, ref_aupr = roc_auc_score(labels, scores), average_precision_score(labels, scores)
    for rule in RULES:
        m = AnomalyMetrics("pooled", fpr_rule=rule)
        for chunk_s, chunk_t in zip(np.array_split(scores, 7), np.array_split(labels, 7)):
            m.update(torch.from_numpy(chunk_s).view(1, -1), torch.from_numpy(chunk_t).view(1, -1))
        r = m.compute()
        ref_fpr = FPR_REFERENCES[rule](labels, scores)
        assert abs(r["auroc"] - ref_auroc) <= tol_auroc, (rule, r["auroc"], ref_auroc)
        assert abs(r["aupr"] - ref_aupr) <= tol_rest, (rule, r["aupr"], ref_aupr)
        assert abs(r["fpr95"] - ref_fpr) <= tol_rest, (rule, r["fpr95"], ref_fpr)


def test_pooled_realistic_overlapping_gaussians_one_percent_positives():
    rng = np.random.default_rng(11)
    n = 1_500_000
    y = (rng.random(n) < 0.01).astype(np.int64)
    s = np.where(y == 1, rng.normal(1.5, 1.0, n), rng.normal(0.0, 1.0, n)).astype(np.float32)
    _pooled_reference_check(s, y, 1e-6, 1e-5)


def test_pooled_unbounded_energy_like_scores():
    rng = np.random.default_rng(12)
    n = 600_000
    y = (rng.random(n) < 0.02).astype(np.int64)
    logits = rng.normal(0, 2, (n, 13))
    logits[np.arange(n), rng.integers(0, 13, n)] += np.where(y == 1, rng.normal(6, 3, n), rng.normal(14, 3, n))
    energy = -np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) - logits.max(1)
    s = energy.astype(np.float32)  # -T*logsumexp(z), T=1: values around -14, no fixed range
    assert s.min() < -20 and s.max() < 0  # outside any [0, 1] range
    _pooled_reference_check(s, y, 1e-6, 1e-5)


def test_pooled_heavy_ties_saturated_msp_are_exact():
    rng = np.random.default_rng(13)
    n = 400_000
    y = (rng.random(n) < 0.03).astype(np.int64)
    logits = rng.normal(0, 1, (n, 4)) * np.where(y == 1, 2.0, 40.0)[:, None]
    p = np.exp(logits - logits.max(1, keepdims=True))
    msp = (p / p.sum(1, keepdims=True)).max(1).astype(np.float32)
    s = -msp  # higher = more anomalous; many pixels exactly -1.0
    assert (s == -1.0).mean() > 0.3
    # exact ties share a bin: values with few distinct levels are reproduced to float precision
    q = np.round(s * 64) / 64
    _pooled_reference_check(q.astype(np.float32), y, 1e-12, 1e-12)
    _pooled_reference_check(s, y, 1e-6, 1e-5)


def test_first_and_closest_rules_differ_as_specified():
    # 19 positives at 10, 1 at 0; negatives: 5 at 5, 5 at 0. TPR 0.95 is reached at thresholds 10 and 5.
    s = np.array([10.0] * 19 + [0.0] + [5.0] * 5 + [0.0] * 5, dtype=np.float32)
    y = np.array([1] * 20 + [0] * 10)
    assert fpr_first(y, s) == 0.0 and fpr_official_streethazards(y, s) == 0.5
    results = {}
    for rule in ("first", "closest"):
        for protocol in ("pooled", "per_image"):
            m = AnomalyMetrics(protocol, fpr_rule=rule)
            m.update(torch.from_numpy(s).view(1, -1), torch.from_numpy(y).view(1, -1))
            results[rule, protocol] = m.compute()["fpr95"]
    assert results["first", "pooled"] == results["first", "per_image"] == 0.0
    assert results["closest", "pooled"] == results["closest", "per_image"] == 0.5


def test_closest_rule_among_equal_tpr_takes_lowest_threshold():
    # TPR 0.975 (closest to 0.95) is reached at thresholds 8 and 7: the official rule takes 7 (more FPs).
    s = np.array([9.0] * 36 + [8.0] * 3 + [1.0] + [8.5] * 3 + [7.0] * 7 + [0.5] * 10, dtype=np.float32)
    y = np.array([1] * 40 + [0] * 20)
    ref = fpr_official_streethazards(y, s)
    m = AnomalyMetrics("per_image", fpr_rule="closest")
    m.update(torch.from_numpy(s).view(1, -1), torch.from_numpy(y).view(1, -1))
    assert m.compute()["fpr95"] == ref == 10 / 20


def test_streethazards_preset_counts_every_pixel():
    m = AnomalyMetrics.streethazards()
    assert (m.protocol, m.fpr_rule, m.ignore_index) == ("per_image", "closest", None)
    with pytest.raises(ValueError, match="ignore_index=None"):
        m.update(torch.zeros(1, 2, 2), torch.tensor([[[0, 1], [255, 0]]]))


def test_split_and_merge_invariance_and_state_dict():
    rng = np.random.default_rng(14)
    s, t = _images(rng, n=8)
    for protocol in ("pooled", "per_image"):
        whole, a, b = (AnomalyMetrics(protocol, fpr_rule="closest") for _ in range(3))
        whole.update(torch.from_numpy(s), torch.from_numpy(t))
        a.update(torch.from_numpy(s[:3]), torch.from_numpy(t[:3]))
        b.update(torch.from_numpy(s[3:]), torch.from_numpy(t[3:]))
        c = AnomalyMetrics(protocol, fpr_rule="closest")
        c.load_state_dict(a.state_dict())
        c.merge(b)
        rw, rc = whole.compute(), c.compute()
        for key in ("auroc", "aupr", "fpr95", "num_images", "num_images_skipped", "num_positive"):
            assert rw[key] == pytest.approx(rc[key], abs=1e-12), (protocol, key)
    with pytest.raises(ValueError, match="cannot merge"):
        AnomalyMetrics("pooled").merge(AnomalyMetrics("pooled", fpr_rule="interp"))


def test_histogram_widens_before_int32_overflow_and_stays_sparse():
    m = AnomalyMetrics("pooled")
    assert m.hist.pool.dtype == torch.int32
    m.hist.pixels_bound = 2**31 - 10
    m.update(torch.randn(1, 64, 64), torch.randint(0, 2, (1, 64, 64)))
    assert m.hist.pool.dtype == torch.int64 and int(m.hist.pool.sum()) == 64 * 64
    # 4096 N(0,1) scores touch a few thousand of the 131072 blocks: 8 KB each, not the whole key range
    assert m.hist.used <= 4096 and m.hist.nbytes() < 40e6


def test_invalid_inputs_raise_and_undefined_metrics_are_nan():
    m = AnomalyMetrics("pooled")
    bad = torch.zeros(1, 2, 2)
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        m.update(bad, torch.zeros(1, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="found \\[7\\]"):
        m.update(torch.zeros(1, 2, 2), torch.full((1, 2, 2), 7))
    m.update(torch.randn(1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))
    r = m.compute()
    assert np.isnan(r["auroc"]) and r["num_positive"] == 0 and r["num_negative"] == 16
    p = AnomalyMetrics("per_image")
    p.update(torch.randn(2, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long))
    assert np.isnan(p.compute()["aupr"]) and p.compute()["num_images_skipped"] == 2


def test_curve_export_and_operating_threshold():
    rng = np.random.default_rng(15)
    n = 200_000
    y = (rng.random(n) < 0.05).astype(np.int64)
    s = np.where(y == 1, rng.normal(2, 1, n), rng.normal(0, 1, n)).astype(np.float32)
    m = AnomalyMetrics("pooled")
    m.update(torch.from_numpy(s).view(1, -1), torch.from_numpy(y).view(1, -1))
    r = m.compute()
    detected = s >= r["threshold_fpr95"]
    assert detected[y == 1].mean() >= 0.95
    assert detected[y == 0].mean() == pytest.approx(r["fpr95"], abs=1e-12)
    c = m.curve(max_points=256)
    assert len(c["tpr"]) <= 300 and c["tpr"][-1] == 1.0 and c["fpr"][-1] == 1.0
    assert all(np.diff(c["tpr"]) >= 0) and all(np.diff(c["fpr"]) >= 0) and all(np.diff(c["thresholds"]) <= 0)
    with pytest.raises(ValueError, match="pooled"):
        AnomalyMetrics("per_image").curve()


def test_float_order_key_preserves_order_and_inverts():
    rng = np.random.default_rng(16)
    x = np.concatenate([rng.normal(0, 1e3, 5000), rng.normal(0, 1e-30, 100), [0.0, -0.0, 1e38, -1e38, 1e-45]])
    x = x.astype(np.float32)
    k = float_order_key(torch.from_numpy(x)).numpy()
    order = np.argsort(x, kind="stable")
    assert np.all(np.diff(k[order]) >= 0)
    assert np.array_equal(np.sign(np.subtract.outer(x[:300], x[:300])),
                          np.sign(np.subtract.outer(k[:300], k[:300]).astype(np.float64)))
    assert k[-4] == k[-5]  # -0.0 and +0.0 are one key
    back = key_to_float(torch.from_numpy(k)).numpy()
    assert np.array_equal(back, x + np.float32(0.0))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu_both_protocols():
    rng = np.random.default_rng(17)
    s, t = _images(rng)
    for protocol in ("pooled", "per_image"):
        cpu, gpu = AnomalyMetrics(protocol), AnomalyMetrics(protocol)
        cpu.update(torch.from_numpy(s), torch.from_numpy(t))
        gpu.update(torch.from_numpy(s).cuda(), torch.from_numpy(t).cuda())
        rc, rg = cpu.compute(), gpu.compute()
        for key in ("auroc", "aupr", "fpr95"):
            assert rc[key] == pytest.approx(rg[key], abs=1e-12)
