"""Sample choice (seeded, explicit, worst / best by per-image AUPR) and detection thresholds."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_curve

from anomalyseg.errors import UserError
from anomalyseg.viz.samples import image_threshold, results_threshold, safe_name, select_samples

IDS = [f"t5/{i}" for i in range(1, 21)]


def records(values: dict[str, float | None], scorer: str = "max_logit") -> list[dict]:
    return [{"index": i, "id": sid, "metrics": {scorer: {"aupr": v, "auroc": v, "fpr95": None if v is None else 1 - v}}}
            for i, (sid, v) in enumerate(values.items())]


def test_random_choice_is_seeded_and_sorted():
    a = select_samples(IDS, 5, seed=3)
    assert a == select_samples(IDS, 5, seed=3) == sorted(a)
    assert len(set(a)) == 5 and all(0 <= i < len(IDS) for i in a)
    assert any(select_samples(IDS, 5, seed=s) != a for s in range(4, 10))
    assert select_samples(IDS, 50, seed=0) == list(range(len(IDS)))  # more than there are: all of them


def test_explicit_ids_keep_their_order():
    assert select_samples(IDS, 1, wanted=["t5/7", "t5/2", "t5/7"]) == [6, 1]
    with pytest.raises(UserError, match="unknown sample id"):
        select_samples(IDS, 1, wanted=["t9/1"])


def test_worst_and_best_by_per_image_aupr():
    rng = np.random.default_rng(1)
    values = {sid: float(rng.uniform()) for sid in IDS}
    values["t5/4"] = None  # an image without both classes has no value
    values["t5/9"] = values["t5/10"]  # a tie goes to the earlier image
    per_image = records(values)
    ranked = sorted((v, i) for i, v in enumerate(values.values()) if v is not None)
    worst = select_samples(IDS, 4, select="worst", per_image=per_image, scorer="max_logit")
    best = select_samples(IDS, 4, select="best", per_image=per_image, scorer="max_logit")
    assert worst == [i for _, i in ranked[:4]]
    assert best == [i for _, i in sorted(ranked, key=lambda vi: (-vi[0], vi[1]))[:4]]
    assert 3 not in select_samples(IDS, 30, select="worst", per_image=per_image, scorer="max_logit")
    # FPR95: lower is better, so the worst images have the highest FPR95
    by_fpr = select_samples(IDS, 3, select="worst", per_image=per_image, scorer="max_logit", metric="fpr95")
    assert by_fpr == worst[:3]


def test_worst_needs_results():
    with pytest.raises(UserError, match="--results"):
        select_samples(IDS, 3, select="worst")
    with pytest.raises(UserError, match="no per-image AUPR of scorer 'msp'"):
        select_samples(IDS, 3, select="worst", per_image=records({"t5/1": 0.5}), scorer="msp")


def test_thresholds_from_results():
    results = {"scorers": {"msp": {"metrics": {"pooled": {"threshold_fpr95": 0.25, "threshold_best_f1": 0.75,
                                                          "fpr_rule": "first"}}}}}
    assert results_threshold(results, "msp", "tpr95")[0] == 0.25
    assert results_threshold(results, "msp", "best_f1")[0] == 0.75
    assert results_threshold(results, "msp", "0.4") == (0.4, "fixed threshold")
    assert results_threshold(None, "msp", "tpr95") == (None, "tpr95 of this image")
    with pytest.raises(UserError, match="not in the results"):
        results_threshold(results, "energy", "tpr95")
    with pytest.raises(UserError, match="tpr95, best_f1 or a number"):
        results_threshold(results, "msp", "median")


def test_image_threshold_against_sklearn():
    rng = np.random.default_rng(2)
    target = (rng.uniform(size=(24, 32)) < 0.1).astype(np.int64)
    score = (rng.normal(size=(24, 32)) + 1.5 * target).astype(np.float32)
    target[:2] = 255  # not counted
    keep = target != 255
    y, s = target[keep], score[keep]
    _, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    expected = thr[np.argmax(tpr >= 0.95)]  # highest threshold reaching TPR 95 %
    assert image_threshold(score, target, "tpr95") == pytest.approx(expected)
    t = image_threshold(score, target, "best_f1")
    cuts = np.unique(s)
    detected = s[None, :] >= cuts[:, None]  # every candidate threshold at once
    tp = (detected & (y == 1)).sum(1)
    f1 = 2 * tp / (detected.sum(1) + y.sum())
    assert f1_score(y, s >= t) == pytest.approx(f1.max())
    assert np.isnan(image_threshold(score, np.zeros_like(target), "tpr95"))


def test_safe_name():
    assert safe_name("t5/12") == "t5_12" and safe_name("a b:c") == "a_b_c"
