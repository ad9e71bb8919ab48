"""Both protocols on score maps built from the REAL StreetHazards test annotations, at native 1280x720."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import gaussian_filter
from sklearn.metrics import average_precision_score, roc_auc_score
from tests.metrics.reference import FPR_REFERENCES, reference_metrics

from anomalyseg.metrics import AnomalyMetrics

ANOMALY_VALUE = 14  # file value; id 13 after the -1 shift


def _annotations(root: Path, n: int, stride: int) -> list[np.ndarray]:
    folder = root / "streethazards_test" / "test" / "annotations" / "test" / "t5"
    files = sorted(folder.glob("*.png"), key=lambda p: int(p.stem))[::stride][:n]
    return [np.asarray(Image.open(f)) for f in files]


def _scores(ann: np.ndarray, rng: np.random.Generator, kind: str) -> tuple[np.ndarray, np.ndarray]:
    target = (ann == ANOMALY_VALUE).astype(np.int64)
    if kind == "noise":
        score = target * 1.0 + rng.normal(0, 0.6, ann.shape)
    else:  # a blurred mask: realistic soft boundaries, heavy ties far from objects
        score = gaussian_filter(target.astype(np.float64), sigma=6) + rng.normal(0, 0.02, ann.shape)
    return score.astype(np.float32), target


@pytest.mark.shared
@pytest.mark.parametrize("kind", ["noise", "blur"])
def test_both_protocols_match_sklearn_on_real_annotations(streethazards_root, kind):
    rng = np.random.default_rng(0)
    anns = _annotations(streethazards_root, n=2, stride=97)
    assert all(a.shape == (720, 1280) for a in anns)
    pairs = [_scores(a, rng, kind) for a in anns]
    s = np.stack([p[0] for p in pairs])
    t = np.stack([p[1] for p in pairs])
    assert all(tt.any() for tt in t), "every StreetHazards test label contains anomaly pixels"

    official = AnomalyMetrics.streethazards()
    pooled = AnomalyMetrics("pooled", fpr_rule="first")
    for i in range(len(s)):  # one image per update, as evaluation streams them
        official.update(torch.from_numpy(s[i : i + 1]), torch.from_numpy(t[i : i + 1]))
        pooled.update(torch.from_numpy(s[i : i + 1]), torch.from_numpy(t[i : i + 1]))

    per_image = [reference_metrics(t[i].ravel(), s[i].ravel(), "closest") for i in range(len(s))]
    r = official.compute()
    for key in ("auroc", "aupr", "fpr95"):
        assert abs(r[key] - np.mean([m[key] for m in per_image])) < 1e-9, key
    assert r["num_images"] == 2 and r["num_images_skipped"] == 0

    y, x = t.ravel(), s.ravel()
    p = pooled.compute()
    assert abs(p["auroc"] - roc_auc_score(y, x)) <= 1e-6
    assert abs(p["aupr"] - average_precision_score(y, x)) <= 1e-5
    assert abs(p["fpr95"] - FPR_REFERENCES["first"](y, x)) <= 1e-5
    assert p["num_positive"] == int(y.sum()) and p["num_negative"] == int((y == 0).sum())


@pytest.mark.shared
def test_pixel_counts_over_many_real_images(streethazards_root):
    anns = _annotations(streethazards_root, n=60, stride=17)
    m = AnomalyMetrics("pooled", keep_per_image=False)
    rng = np.random.default_rng(1)
    for a in anns:
        t = torch.from_numpy((a == ANOMALY_VALUE).astype(np.int64))[None]
        m.update(torch.from_numpy(rng.random(a.shape, dtype=np.float32))[None], t)
    r = m.compute()
    total_anomaly = sum(int((a == ANOMALY_VALUE).sum()) for a in anns)
    assert r["num_images"] == 60 and r["num_positive"] == total_anomaly
    assert r["num_positive"] + r["num_negative"] == 60 * 720 * 1280
    assert 0.45 < r["auroc"] < 0.55  # random scores carry no information
