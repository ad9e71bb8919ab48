"""Binary-classification curves from counts: AUROC, AUPR, FPR at 95 % TPR (three rules), best F1.

Everything here starts from one representation: for each distinct threshold, in DESCENDING order, the
cumulative true-positive and false-positive counts (``tps``, ``fps``) of "score >= threshold". That is
exactly what ``sklearn.metrics._ranking._binary_clf_curve`` builds, so the formulas below reproduce
sklearn's ``roc_auc_score`` / ``average_precision_score`` on the same thresholds. The per-image protocol
feeds exact thresholds (every distinct score); the pooled protocol feeds histogram bins
(:func:`float_order_key`).

Why our own code: sklearn needs every score in memory and a full sort; torchmetrics' exact mode stores all
scores and its binned mode needs a known score range. Neither implements the official StreetHazards
"closest" FPR rule.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

FprRule = Literal["first", "closest", "interp"]
FPR_RULES: tuple[str, ...] = ("first", "closest", "interp")
TARGET_TPR = 0.95


def float_order_key(scores: torch.Tensor) -> torch.Tensor:
    """Map float32 scores to int64 keys in ``[0, 2**32)`` with the same order (and equal keys for equal scores).

    The IEEE-754 bit pattern of a float, read as a signed int32 and with the low 31 bits flipped for
    negative numbers, sorts like the float itself. ``-0.0`` is folded onto ``+0.0`` first so that equal
    floats always get equal keys (sklearn treats them as a tie).
    """
    x = scores.to(torch.float32).contiguous() + 0.0  # -0.0 + 0.0 == +0.0
    i = x.view(torch.int32)
    k = i ^ ((i >> 31) & 0x7FFFFFFF)
    return k.to(torch.int64) + 2**31


def key_to_float(keys: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`float_order_key` (for bin edges: the smallest float a key range contains)."""
    k = (keys.to(torch.int64) - 2**31).to(torch.int32)
    return (k ^ ((k >> 31) & 0x7FFFFFFF)).view(torch.float32)


def exact_counts(scores: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cumulative (tps, fps) at every distinct score, descending, like sklearn's ``_binary_clf_curve``.

    Args:
        scores: 1-D float scores (already filtered to counted pixels).
        labels: 1-D bool/int, 1 = positive (anomaly).

    Returns:
        ``(tps, fps, thresholds)``, float64 / float64 / float32, on the scores' device.
    """
    if scores.device.type == "cpu":
        return _exact_counts_numpy(scores, labels)
    s = scores.to(torch.float32) + 0.0
    s, order = torch.sort(s, descending=True, stable=True)
    y = labels.reshape(-1)[order].to(torch.float64)
    last = torch.ones(1, dtype=torch.bool, device=s.device)
    distinct = torch.cat([s[1:] != s[:-1], last])
    idx = torch.nonzero(distinct).squeeze(1)
    tps = torch.cumsum(y, 0)[idx]
    fps = (idx + 1).to(torch.float64) - tps
    return tps, fps, s[idx]


def _exact_counts_numpy(scores: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """CPU path: one numpy sort of ``key * 2 + label`` (no argsort, no gather), about 3x faster than torch here."""
    keys = float_order_key(scores).numpy()
    packed = keys * 2 + labels.reshape(-1).numpy().astype(np.int64)
    packed.sort()
    packed = packed[::-1]
    k = packed >> 1
    idx = np.flatnonzero(np.r_[k[1:] != k[:-1], True])
    tps = np.cumsum(packed & 1)[idx].astype(np.float64)
    fps = (idx + 1).astype(np.float64) - tps
    thresholds = key_to_float(torch.from_numpy(np.ascontiguousarray(k[idx])))
    return torch.from_numpy(tps), torch.from_numpy(fps), thresholds


def _first_at_target(tpr: torch.Tensor) -> int:
    """Index of the highest threshold whose TPR >= 0.95."""
    i = torch.searchsorted(tpr, torch.tensor([TARGET_TPR], dtype=tpr.dtype, device=tpr.device))
    return min(int(i.item()), tpr.numel() - 1)


def _fpr_first(tpr: torch.Tensor, fpr: torch.Tensor) -> tuple[torch.Tensor, int]:
    """FPR at the highest threshold whose TPR >= 0.95 (fewest false positives at that TPR)."""
    i = _first_at_target(tpr)
    return fpr[i], i


def _fpr_closest(tps: torch.Tensor, fpr: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The official StreetHazards rule (hendrycks/anomaly-seg ``fpr_and_fdr_at_recall``).

    Candidates are the thresholds from the highest one that reaches TPR 1 upward; the one with TPR
    closest to 0.95 wins, ties (equal distance, or equal TPR) going to the LOWEST threshold, because the
    original scans from low to high thresholds and keeps the first ``argmin``.
    """
    recall = tps / tps[-1]
    last = int(torch.searchsorted(tps, tps[-1:]).item())  # highest threshold with full recall
    dist = torch.abs(recall[: last + 1] - TARGET_TPR)
    best = dist.min()
    i = int(torch.nonzero(dist == best).max().item())
    return fpr[i], i


def _fpr_interp(tpr: torch.Tensor, fpr: torch.Tensor) -> torch.Tensor:
    """``ood_metrics.fpr_at_95_tpr``: ``np.interp(0.95, tpr, fpr)`` on sklearn's ROC (origin included).

    numpy's ``interp`` takes the last point whose x <= 0.95; an exact hit returns that point's y.
    """
    tpr0 = torch.cat([tpr.new_zeros(1), tpr])
    fpr0 = torch.cat([fpr.new_zeros(1), fpr])
    if bool((tpr0 < TARGET_TPR).all()):
        return fpr0.new_zeros(())
    if bool((tpr0 >= TARGET_TPR).all()):  # only reachable without the origin; kept for parity
        return fpr0.min()
    x = torch.tensor([TARGET_TPR], dtype=tpr0.dtype, device=tpr0.device)
    j = int(torch.searchsorted(tpr0, x, right=True).item()) - 1
    if tpr0[j] == TARGET_TPR or j + 1 >= tpr0.numel():
        return fpr0[j]
    slope = (fpr0[j + 1] - fpr0[j]) / (tpr0[j + 1] - tpr0[j])
    return slope * (TARGET_TPR - tpr0[j]) + fpr0[j]


def curve_metrics(
    tps: torch.Tensor,
    fps: torch.Tensor,
    fpr_rule: FprRule = "first",
    thresholds: torch.Tensor | None = None,
) -> dict[str, float]:
    """AUROC, AUPR (average precision, anomaly positive), FPR95 and best F1 from cumulative counts.

    ``tps`` / ``fps`` are cumulative counts at distinct thresholds in descending order; both classes
    must be present (``tps[-1] > 0`` and ``fps[-1] > 0``). With ``thresholds`` the result also names the
    score thresholds of the FPR95 operating point (for "interp": the first point at TPR >= 0.95) and of
    the best F1 (detections are ``score >= threshold``).
    """
    if fpr_rule not in FPR_RULES:
        raise ValueError(f"fpr_rule must be one of {FPR_RULES}, got {fpr_rule!r}")
    tps = tps.to(torch.float64)
    fps = fps.to(torch.float64)
    P, N = tps[-1], fps[-1]
    tpr, fpr = tps / P, fps / N
    tpr0 = torch.cat([tpr.new_zeros(1), tpr])
    fpr0 = torch.cat([fpr.new_zeros(1), fpr])
    auroc = torch.sum((fpr0[1:] - fpr0[:-1]) * (tpr0[1:] + tpr0[:-1])) / 2
    precision = tps / (tps + fps)
    aupr = torch.sum((tpr0[1:] - tpr0[:-1]) * precision)
    f1 = 2 * tps / (tps + fps + P)
    if fpr_rule == "first":
        fpr95, op = _fpr_first(tpr, fpr)
    elif fpr_rule == "closest":
        fpr95, op = _fpr_closest(tps, fpr)
    else:
        fpr95, op = _fpr_interp(tpr, fpr), _first_at_target(tpr)
    best_f1, f1_idx = f1.max(0)
    vals = torch.stack([auroc, aupr, fpr95, best_f1]).tolist()  # one host transfer
    out = {"auroc": vals[0], "aupr": vals[1], "fpr95": vals[2], "best_f1": vals[3]}
    if thresholds is not None:
        out["threshold_fpr95"] = float(thresholds[op])
        out["threshold_best_f1"] = float(thresholds[f1_idx])
    return out


def downsample_curve(
    tps: torch.Tensor, fps: torch.Tensor, thresholds: torch.Tensor, max_points: int = 1024
) -> dict[str, list[float]]:
    """A plotting copy of the curve: points spread evenly in TPR and in FPR, ends included."""
    tps64, fps64 = tps.to(torch.float64).cpu().numpy(), fps.to(torch.float64).cpu().numpy()
    thr = thresholds.to(torch.float64).cpu().numpy()
    tpr, fpr = tps64 / tps64[-1], fps64 / fps64[-1]
    grid = np.linspace(0.0, 1.0, max(2, max_points // 2))
    idx = np.unique(np.concatenate([
        np.searchsorted(tpr, grid).clip(0, len(tpr) - 1),
        np.searchsorted(fpr, grid).clip(0, len(fpr) - 1),
        [0, len(tpr) - 1],
    ]))
    precision = tps64[idx] / np.maximum(tps64[idx] + fps64[idx], 1)
    return {
        "thresholds": thr[idx].tolist(),
        "tpr": tpr[idx].tolist(),
        "fpr": fpr[idx].tolist(),
        "precision": precision.tolist(),
        "recall": tpr[idx].tolist(),
    }
