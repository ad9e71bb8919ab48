"""Independent reference implementations the metric tests compare against (sklearn, ood_metrics, the
official StreetHazards FPR code re-typed from hendrycks/anomaly-seg)."""

from __future__ import annotations

import numpy as np
from ood_metrics import fpr_at_95_tpr
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve


def fpr_first(y: np.ndarray, s: np.ndarray) -> float:
    """FPR at the highest threshold with TPR >= 0.95, on sklearn's full ROC (no dropped points)."""
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return float(fpr[np.searchsorted(tpr, 0.95)])


def fpr_official_streethazards(y: np.ndarray, s: np.ndarray, recall_level: float = 0.95) -> float:
    """hendrycks/anomaly-seg ``fpr_and_fdr_at_recall`` (anomaly = positive), as published."""
    desc = np.argsort(s, kind="mergesort")[::-1]
    s, y = s[desc], y[desc].astype(np.float64)
    distinct = np.where(np.diff(s))[0]
    threshold_idxs = np.r_[distinct, y.size - 1]
    tps = np.cumsum(y)[threshold_idxs]
    fps = 1 + threshold_idxs - tps
    recall = tps / tps[-1]
    last_ind = tps.searchsorted(tps[-1])
    sl = slice(last_ind, None, -1)
    recall, fps = np.r_[recall[sl], 1], np.r_[fps[sl], 0]
    cutoff = np.argmin(np.abs(recall - recall_level))
    return float(fps[cutoff] / np.sum(np.logical_not(y)))


FPR_REFERENCES = {
    "first": fpr_first,
    "closest": fpr_official_streethazards,
    "interp": lambda y, s: float(fpr_at_95_tpr(s, y)),  # ood_metrics: (preds, labels)
}


def reference_metrics(y: np.ndarray, s: np.ndarray, rule: str) -> dict[str, float]:
    fpr = FPR_REFERENCES[rule](y, s)
    return {"auroc": roc_auc_score(y, s), "aupr": average_precision_score(y, s), "fpr95": fpr}
