"""Binary-classification curves from counts: AUROC, AUPR, FPR at 95 % TPR (three rules), best F1.

Everything here starts from one representation: thresholds in DESCENDING order with the cumulative
true-positive and false-positive counts (``tps``, ``fps``) of "score >= threshold" — what
``sklearn.metrics._ranking._binary_clf_curve`` builds, so the formulas reproduce sklearn's ``roc_auc_score`` /
``average_precision_score``. The per-image protocol feeds an exact curve reduced to the points that matter
(:func:`exact_counts`); the pooled protocol feeds histogram bins (:func:`float_order_key`) chunk by chunk, so
:class:`CurveScan` never holds the whole curve.

Why our own code: sklearn needs every score in memory and a full sort; torchmetrics' exact mode stores all
scores and its binned mode needs a known score range. Neither implements the official StreetHazards
"closest" FPR rule.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch

from anomalyseg.metrics.backend import numpy_path

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


_COARSE_SHIFT = 12  # coarse bins of the 32-bit order key: 2**20 bins, relative width 2**-11


def _order_key32(x: np.ndarray) -> np.ndarray:
    """uint32 keys ordered like the float32 values ``x`` (as :func:`float_order_key`)."""
    i = x.view(np.int32)
    return (i ^ ((i >> 31) & np.int32(0x7FFFFFFF))).view(np.uint32) ^ np.uint32(0x80000000)


def _negatives_above(neg: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(#neg >= u, #neg > u)`` for the distinct descending ``u``, without sorting every negative.

    Negatives in a coarse key bin that holds no ``u`` only need that bin's count (a cumulative bincount);
    only those sharing a bin with some ``u`` are sorted and searched. With anomalies a few % of the pixels
    that is a fraction of the negatives (~1/4 for overlapping Gaussians): ~2x faster than one full sort.
    """
    kn = _order_key32(neg) >> _COARSE_SHIFT
    ku = (_order_key32(u) >> _COARSE_SHIFT).astype(np.int64)
    shared = np.zeros(2 ** (32 - _COARSE_SHIFT), dtype=bool)
    shared[ku] = True
    near_mask = shared[kn]
    n_near = int(np.count_nonzero(near_mask))
    if n_near > 0.6 * neg.size:  # most negatives are near a positive (ties, narrow scores): one plain sort is cheaper
        neg = np.sort(neg)
        return neg.size - np.searchsorted(neg, u, "left"), neg.size - np.searchsorted(neg, u, "right")
    near = np.sort(neg[near_mask])
    far = np.bincount(kn[~near_mask], minlength=shared.size + 1)
    far_above = np.cumsum(far[::-1])[::-1]  # far negatives in bins >= b
    above = far_above[ku + 1] + near.size  # far ones strictly above u's bin, plus every near one ...
    return above - np.searchsorted(near, u, "left"), above - np.searchsorted(near, u, "right")  # ... >= / > u


_Runs = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]


def _positive_runs_numpy(s: np.ndarray, y: np.ndarray, thresholds: bool) -> _Runs:
    """``(u, tps_b, ge, gt, thr_a, lowest, n_neg)``: distinct positive scores ``u`` (descending), positives
    >= each, negatives >= and > each, the smallest negative > each (``thr_a``, only with ``thresholds``),
    the lowest negative (0 or 1 values) and the number of negatives."""
    pos, neg = np.sort(s[y])[::-1], s[~y]
    n_neg = neg.size
    lowest = neg.min(keepdims=True) if n_neg else neg
    starts = np.flatnonzero(np.r_[True, pos[1:] != pos[:-1]]) if pos.size else np.zeros(0, np.int64)
    u = pos[starts]
    tps_b = np.r_[starts[1:], pos.size].astype(np.float64) if pos.size else np.zeros(0)
    if not thresholds:
        ge, gt = _negatives_above(neg, u) if u.size else (np.zeros(0), np.zeros(0))
        return u, tps_b, ge, gt, u, lowest, n_neg
    neg = np.sort(neg)
    above = np.searchsorted(neg, u, "right")
    thr_a = neg[np.minimum(above, max(n_neg - 1, 0))] if n_neg else u  # smallest negative > u
    return u, tps_b, n_neg - np.searchsorted(neg, u, "left"), n_neg - above, thr_a, lowest, n_neg


def _positive_runs_torch(s: torch.Tensor, y: torch.Tensor) -> _Runs:
    """As :func:`_positive_runs_numpy` (with thresholds), on the tensors' device; only the per-positive-score
    arrays (small) are copied to the host, never the sorted pixels."""
    neg = torch.sort(s[~y]).values
    n_neg = neg.numel()
    u, counts = torch.unique_consecutive(torch.sort(s[y], descending=True).values, return_counts=True)
    above = torch.searchsorted(neg, u, right=True)
    ge = n_neg - torch.searchsorted(neg, u)
    thr_a = neg[above.clamp_max(max(n_neg - 1, 0))] if n_neg else u
    host = [t.cpu().numpy() for t in (u, torch.cumsum(counts, 0), ge, n_neg - above, thr_a, neg[:1])]
    return host[0], host[1].astype(np.float64), host[2], host[3], host[4], host[5], n_neg


def exact_counts(scores: torch.Tensor, labels: torch.Tensor,
                 thresholds: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The exact curve of ``scores`` reduced to the points every metric here reads, descending.

    The full curve has a point per distinct score; between two consecutive distinct POSITIVE scores only
    FPR moves, so each such run is kept as its two ends: ``A`` (lowest threshold above the positive score:
    previous TPR, most false positives — what the "closest" and "interp" rules read) and ``B`` (the positive
    score itself), plus the final point (TPR 1, FPR 1). AUROC (trapezoids), AP, all FPR95 rules and best F1
    are identical on the full and the reduced curve, which has ~2x(#distinct positive scores) points instead
    of #pixels. Only the counts of negatives at or above each positive score are needed: one sort of the
    negatives and binary searches (``thresholds=True``, which also names each point's score), or on CPU
    without thresholds :func:`_negatives_above`, which sorts only the negatives near a positive score.

    Args:
        scores: 1-D float scores (already filtered to counted pixels), any device.
        labels: 1-D bool/int, 1 = positive (anomaly).
        thresholds: also return each point's threshold (else ``None``; faster on CPU).

    Returns:
        ``(tps, fps, thresholds)`` as float64 / float64 / float32 numpy arrays.
    """
    s = scores.detach().reshape(-1).to(torch.float32) + 0.0  # folds -0.0 onto +0.0
    y = labels.reshape(-1).to(torch.bool)
    runs = _positive_runs_numpy(s.numpy(), y.numpy(), thresholds) if numpy_path(s) else _positive_runs_torch(s, y)
    u, tps_b, ge, gt, thr_a, lowest, n_neg = runs
    if u.size == 0:
        return np.zeros(1), np.full(1, float(n_neg)), lowest if thresholds else None
    ge, gt = ge.astype(np.float64), gt.astype(np.float64)  # negatives >= u, > u
    has_a = gt > np.r_[0.0, ge[:-1]]
    keep = np.stack([has_a, np.ones_like(has_a)], 1).ravel()
    tps = np.stack([np.r_[0.0, tps_b[:-1]], tps_b], 1).ravel()[keep]
    fps = np.stack([gt, ge], 1).ravel()[keep]
    thr = None
    if thresholds:
        thr = np.stack([thr_a, u], 1).ravel()[keep]
    if n_neg > ge[-1]:  # negatives below the lowest positive: the final point
        tps, fps = np.r_[tps, tps_b[-1]], np.r_[fps, float(n_neg)]
        thr = None if thr is None else np.r_[thr, lowest]
    return tps, fps, None if thr is None else thr.astype(np.float32)


class CurveScan:
    """Metrics of a curve fed in descending chunks of cumulative counts, in memory of one chunk.

    Args:
        num_pos, num_neg: totals (the last point of the curve), both > 0.
        fpr_rule: "first", "closest" or "interp" (see :func:`curve_metrics`).
        max_points: > 0 also keeps a downsampled copy of the curve for plotting (:meth:`downsampled`).
    """

    def __init__(self, num_pos: float, num_neg: float, fpr_rule: FprRule = "first", max_points: int = 0) -> None:
        if fpr_rule not in FPR_RULES:
            raise ValueError(f"fpr_rule must be one of {FPR_RULES}, got {fpr_rule!r}")
        self.P, self.N, self.rule = float(num_pos), float(num_neg), fpr_rule
        self.n = 0  # points seen
        self.prev = (0.0, 0.0)  # (tpr, fpr) of the previous point; the origin first
        self.auroc = self.aupr = 0.0
        self.best_f1, self.thr_f1 = -1.0, float("nan")
        self.first: tuple[float, float] | None = None  # (fpr, threshold) at the first TPR >= 0.95
        self.closest = (np.inf, float("nan"), float("nan"))  # (distance, fpr, threshold)
        self.closing = False  # the "closest" candidates end at the first point with full recall
        self.last_le = (0.0, 0.0)  # (tpr, fpr) of the last point with TPR <= 0.95, origin included
        self.next_gt: tuple[float, float] | None = None  # the point after it
        grid = np.linspace(0.0, 1.0, max(2, max_points // 2)) if max_points else np.zeros(0)
        self.grids = [grid, grid.copy()]  # not yet reached in TPR, in FPR
        self.max_points = max_points
        self.kept: dict[int, tuple[float, float, float]] = {}  # index -> (threshold, tps, fps)
        self.end: tuple[int, tuple[float, float, float]] | None = None  # the last point so far

    def add(self, tps: np.ndarray, fps: np.ndarray, thresholds: np.ndarray | None = None) -> None:
        """Next points (cumulative over the whole curve so far, descending thresholds)."""
        if tps.size == 0:
            return
        tps, fps = np.asarray(tps, np.float64), np.asarray(fps, np.float64)
        thr = np.full(tps.size, np.nan) if thresholds is None else np.asarray(thresholds, np.float64)
        tpr, fpr = tps / self.P, fps / self.N
        tpr_prev, fpr_prev = np.r_[self.prev[0], tpr[:-1]], np.r_[self.prev[1], fpr[:-1]]
        self.auroc += float(np.sum((fpr - fpr_prev) * (tpr + tpr_prev))) / 2
        self.aupr += float(np.sum((tpr - tpr_prev) * (tps / (tps + fps))))
        f1 = 2 * tps / (tps + fps + self.P)
        i = int(np.argmax(f1))
        if f1[i] > self.best_f1:
            self.best_f1, self.thr_f1 = float(f1[i]), float(thr[i])
        j = int(np.searchsorted(tpr, TARGET_TPR))  # first point with TPR >= 0.95
        if self.first is None and j < tpr.size:
            self.first = (float(fpr[j]), float(thr[j]))
        self._closest(tps, tpr, fpr, thr)
        k = int(np.searchsorted(tpr, TARGET_TPR, side="right"))  # points [0, k) have TPR <= 0.95
        if k > 0:
            self.last_le = (float(tpr[k - 1]), float(fpr[k - 1]))
        if self.next_gt is None and k < tpr.size:
            self.next_gt = (float(tpr[k]), float(fpr[k]))
        self._keep(tpr, fpr, tps, fps, thr)
        self.n += tps.size
        self.prev = (float(tpr[-1]), float(fpr[-1]))

    def _closest(self, tps: np.ndarray, tpr: np.ndarray, fpr: np.ndarray, thr: np.ndarray) -> None:
        """Official rule: TPR closest to 0.95 up to the first point with full recall; ties -> lowest threshold."""
        if self.closing:
            return
        full = int(np.searchsorted(tps, self.P))  # first point with tps == P
        end = min(full + 1, tps.size)
        self.closing = full < tps.size
        dist = np.abs(tpr[:end] - TARGET_TPR)
        i = end - 1 - int(np.argmin(dist[::-1]))  # last minimum = lowest threshold among ties
        if dist[i] <= self.closest[0]:
            self.closest = (float(dist[i]), float(fpr[i]), float(thr[i]))

    def _keep(self, tpr: np.ndarray, fpr: np.ndarray, tps: np.ndarray, fps: np.ndarray, thr: np.ndarray) -> None:
        """For plotting: the first point at or past each grid value of TPR and of FPR, and both ends."""
        if not self.max_points:
            return
        picks = [0] if self.n == 0 else []
        for g, curve in enumerate((tpr, fpr)):
            pos = np.searchsorted(curve, self.grids[g])
            hit = pos < curve.size
            picks.extend(pos[hit].tolist())
            self.grids[g] = self.grids[g][~hit]
        for p in set(picks):
            self.kept[self.n + p] = (float(thr[p]), float(tps[p]), float(fps[p]))
        self.end = (self.n + tps.size - 1, (float(thr[-1]), float(tps[-1]), float(fps[-1])))

    def fpr95(self) -> tuple[float, float]:
        """(FPR at 95 % TPR under the rule, threshold of that operating point)."""
        first = self.first if self.first is not None else (self.prev[1], float("nan"))
        if self.rule == "first":
            return first
        if self.rule == "closest":
            return self.closest[1], self.closest[2]
        tpr_j, fpr_j = self.last_le  # ood_metrics.fpr_at_95_tpr: np.interp(0.95, tpr, fpr), origin included
        if tpr_j < TARGET_TPR and self.next_gt is None:
            return 0.0, first[1]
        if tpr_j == TARGET_TPR or self.next_gt is None:
            return fpr_j, first[1]
        tpr_k, fpr_k = self.next_gt
        return (fpr_k - fpr_j) / (tpr_k - tpr_j) * (TARGET_TPR - tpr_j) + fpr_j, first[1]

    def result(self) -> dict[str, float]:
        fpr95, thr95 = self.fpr95()
        return {"auroc": self.auroc, "aupr": self.aupr, "fpr95": float(fpr95), "best_f1": self.best_f1,
                "threshold_fpr95": thr95, "threshold_best_f1": self.thr_f1}

    def downsampled(self) -> dict[str, list[float]]:
        """The kept points (evenly spread in TPR and in FPR, ends included) for plotting."""
        kept = dict(self.kept)
        if self.end is not None:
            kept[self.end[0]] = self.end[1]
        pts = np.array([kept[i] for i in sorted(kept)], dtype=np.float64).reshape(-1, 3)
        thr, tps, fps = pts[:, 0], pts[:, 1], pts[:, 2]
        return {"thresholds": thr.tolist(), "tpr": (tps / self.P).tolist(), "fpr": (fps / self.N).tolist(),
                "precision": (tps / np.maximum(tps + fps, 1)).tolist(), "recall": (tps / self.P).tolist()}


def _host(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def curve_metrics(tps: Any, fps: Any, fpr_rule: FprRule = "first", thresholds: Any = None) -> dict[str, float]:
    """AUROC, AUPR (average precision, anomaly positive), FPR95 and best F1 from cumulative counts.

    ``tps`` / ``fps`` (numpy or torch) are cumulative counts at distinct thresholds in descending order; both
    classes must be present. FPR95 rules: "first" = the highest threshold with TPR >= 0.95; "closest" = the
    official StreetHazards code (TPR closest to 0.95, ties to the lowest threshold, candidates from the
    highest threshold with full recall upward); "interp" = ``ood_metrics.fpr_at_95_tpr``. With ``thresholds``
    the result also names the score thresholds of the FPR95 point ("interp": the first point at TPR >= 0.95)
    and of the best F1 (detections are ``score >= threshold``).
    """
    t, f = _host(tps).astype(np.float64), _host(fps).astype(np.float64)
    scan = CurveScan(t[-1], f[-1], fpr_rule)
    scan.add(t, f, None if thresholds is None else _host(thresholds))
    out = scan.result()
    if thresholds is None:
        del out["threshold_fpr95"], out["threshold_best_f1"]
    return out
