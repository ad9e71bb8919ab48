"""SegmentMeIfYouCan component-level metrics: sIoU-gt, PPV and component F1 (mean over sIoU thresholds).

The definition is the benchmark's own code, ``SegmentMeIfYouCan/road-anomaly-benchmark``,
``road_anomaly_benchmark/metrics/instance_segmentation.py`` (``default_instancer``, ``segment_metrics`` and
``MetricSegment.aggregate`` with its ``SegEval-AnomalyTrack`` / ``SegEval-ObstacleTrack`` configs). Per frame:

1. ``pred`` = the thresholded prediction with the pixels on void set to 0; ``gt`` = target == 1.
2. 8-connected components of ``gt`` and of ``pred`` (3x3 structure).
3. Predicted components smaller than the track's minimum (anomaly 500, obstacle 50 pixels) are dropped; the
   size counts every pixel of the component, including those on ground-truth components that step 4 voids
   (the benchmark filters before it voids them).
4. Ground-truth components smaller than the track's minimum (anomaly 100, obstacle 10) become void.
   Quirk kept from the code: its loop also visits label 0, so when a frame has fewer such pixels that are
   NOT anomaly (normal + void together) than that minimum, all of them become void.
5. Counting uses the non-void pixels only. For a ground-truth component k, P(k) = the predicted components
   that overlap k, I = |k ∩ P(k)|, A = the pixels of P(k) on OTHER ground-truth components:
   ``sIoU(k) = I / (|P(k)| + |k| - I - A)``. For a predicted component j (with at least one counted pixel):
   ``PPV(j) = |j ∩ any gt component| / |j|`` (the code's ``prec_pred``).
6. For each τ in ``linspace(0.25, 0.75, 11)``: TP = gt components with sIoU >= τ, FN = the others, FP =
   predicted components with PPV < τ. Counts are summed over frames; ``F1(τ) = 2TP / (2TP + FN + FP)``;
   ``f1_mean`` is the mean of the 11 F1 values. ``siou_gt`` and ``ppv`` are means over all components of all
   frames (not means of per-frame means).

Where the issue text and the code differ, this follows the code: "P(k) touching k" means overlapping k; the
predicted-size filter counts pixels on small ground-truth components (step 3); the label-0 quirk (step 4).
Not reported: the code's ``sIoU_pred`` (it is not in the benchmark's table). Where the code divides by zero
(no component at all) the value here is NaN.

Connected components are labelled here with numpy (horizontal runs joined across rows by union-find, see
:func:`label_components`), because scipy is not a runtime dependency of the package; the tests compare the
labelling and the metrics with ``scipy.ndimage.label``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from anomalyseg.metrics.base import Accumulator, distributed_ready

#: track -> (minimum predicted component size, minimum ground-truth component size), in pixels.
TRACKS: dict[str, tuple[int, int]] = {"anomaly": (500, 100), "obstacle": (50, 10)}

#: The benchmark's sIoU / PPV thresholds: ``np.linspace(0.25, 0.75, 11, endpoint=True)``.
THRESHOLDS: np.ndarray = np.linspace(0.25, 0.75, 11, endpoint=True)
_NAN = float("nan")


# ---- connected components -------------------------------------------------------------------------------
def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Horizontal runs of True in raster order: row, start column, end column (exclusive)."""
    H, W = mask.shape
    padded = np.zeros((H, W + 2), dtype=bool)
    padded[:, 1:-1] = mask
    # transitions alternate start / end within a row (the padding closes every row), so they pair up
    flips = np.flatnonzero(padded[:, 1:] != padded[:, :-1])
    start, end = flips[0::2], flips[1::2]
    return start // (W + 1), start % (W + 1), end % (W + 1)


def _run_components(row: np.ndarray, s: np.ndarray, e: np.ndarray, width: int) -> tuple[np.ndarray, int]:
    """Component label (1..n, in raster order of the first run) of every run, 8-connectivity; and n."""
    R = row.size
    if R == 0:
        return np.zeros(0, dtype=np.int64), 0
    K = width + 2  # row * K + column keys sort like (row, column) because columns are <= width
    start_key, end_key = row * K + s, row * K + e
    # run a (row r) touches run b (row r+1) iff s_b <= e_a and s_a <= e_b (ends exclusive: diagonal = touching);
    # those b are one contiguous slice of the run list
    lo = np.searchsorted(end_key, (row + 1) * K + s, side="left")
    hi = np.searchsorted(start_key, (row + 1) * K + e, side="right")
    n = np.maximum(hi - lo, 0)
    total = int(n.sum())
    u = np.repeat(np.arange(R), n)
    v = np.repeat(lo - np.cumsum(n) + n, n) + np.arange(total)
    # union-find by hooking roots onto the smaller root, then pointer jumping; parent[x] <= x throughout, so
    # each component's root is its first run in raster order
    parent = np.arange(R)
    while u.size:
        pu, pv = parent[u], parent[v]
        differ = pu != pv
        if not differ.any():
            break
        u, v, pu, pv = u[differ], v[differ], pu[differ], pv[differ]
        np.minimum.at(parent, np.maximum(pu, pv), np.minimum(pu, pv))
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
    is_root = parent == np.arange(R)
    label_of = np.cumsum(is_root)
    return label_of[parent], int(label_of[-1])


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """8-connected components of a 2-D bool mask: ``(labels, n)`` like ``scipy.ndimage.label(mask,
    np.ones((3, 3)))`` (int32 labels 1..n numbered in raster order of each component's first pixel, 0 off)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"label_components takes a 2-D mask, got shape {mask.shape}")
    row, s, e = _runs(mask)
    run_label, n = _run_components(row, s, e, mask.shape[1])
    labels = np.zeros(mask.shape, dtype=np.int32)
    labels[mask] = np.repeat(run_label, e - s)  # mask's True pixels in raster order = the runs' pixels in order
    return labels, n


class _Components:
    """One mask's components: the per-pixel label image, the size of each label and the count."""

    def __init__(self, mask: np.ndarray, image: bool = True) -> None:
        row, s, e = _runs(mask)
        run_label, self.n = _run_components(row, s, e, mask.shape[1])
        length = e - s
        self.sizes = np.bincount(run_label, weights=length, minlength=self.n + 1).astype(np.int64)
        flat_start = row * mask.shape[1] + s
        # flat index of every True pixel, built from the runs (no full-frame nonzero pass)
        first = np.cumsum(length) - length
        self.pixels = np.repeat(flat_start - first, length) + np.arange(int(length.sum()))
        self.pixel_labels = np.repeat(run_label, length)
        if image:
            self.labels = np.zeros(mask.size, dtype=np.int32)
            self.labels[self.pixels] = self.pixel_labels


# ---- per-frame metrics ------------------------------------------------------------------------------------
def frame_components(
    prediction: np.ndarray, target: np.ndarray, min_pred: int, min_gt: int, void_label: int = 255
) -> tuple[np.ndarray, np.ndarray]:
    """One frame's ``(siou_gt, ppv)``: the sIoU of each counted ground-truth component and the PPV of each
    counted predicted component, each in label order (the benchmark's ``segment_metrics`` arrays)."""
    gt = target == 1
    void = target == void_label
    pred = prediction & ~void
    G = _Components(gt)
    P = _Components(pred, image=False)
    keep_gt = G.sizes >= min_gt
    keep_gt[0] = False
    keep_pred = P.sizes >= min_pred
    keep_pred[0] = False
    # the code's label-0 quirk: fewer than min_gt non-anomaly pixels -> they all become void
    background_void = target.size - int(G.sizes.sum()) < min_gt

    # every pixel of a kept predicted component, with the gt component under it
    sel = keep_pred[P.pixel_labels]
    pj = P.pixel_labels[sel]
    gk = G.labels[P.pixels[sel]]
    on_kept_gt = keep_gt[gk]
    counted = on_kept_gt if background_void else on_kept_gt | (gk == 0)  # the pixels not on void
    npl = P.n + 1
    pred_size = np.bincount(pj[counted], minlength=npl)  # |j| over counted pixels
    pred_on_gt = np.bincount(pj[on_kept_gt], minlength=npl)  # |j ∩ any kept gt component|

    # overlap pairs (gt k, pred j) with their pixel counts
    key = gk[on_kept_gt].astype(np.int64) * npl + pj[on_kept_gt]
    if (G.n + 1) * npl <= max(1 << 20, 4 * key.size):
        counts = np.bincount(key, minlength=(G.n + 1) * npl)
        pair_key = np.flatnonzero(counts)
        pair_count = counts[pair_key]
    else:
        pair_key, pair_count = np.unique(key, return_counts=True)
    pk, pjj = pair_key // npl, pair_key % npl
    intersection = np.bincount(pk, weights=pair_count, minlength=G.n + 1)
    # |P(k)| - I - A = pixels of P(k) on no gt component, so the denominator is |k| + that
    outside = np.bincount(pk, weights=(pred_size - pred_on_gt)[pjj], minlength=G.n + 1)
    gt_ids = np.flatnonzero(keep_gt)
    siou = intersection[gt_ids] / (G.sizes[gt_ids] + outside[gt_ids])
    pred_ids = np.flatnonzero(pred_size)
    ppv = pred_on_gt[pred_ids] / pred_size[pred_ids]
    return siou, ppv


def _as_numpy(x: Any) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


class ComponentMetrics(Accumulator):
    """SegmentMeIfYouCan component metrics (sIoU-gt, PPV, F1 at 11 sIoU thresholds), summed over frames.

    Args:
        track: ``"anomaly"`` (predicted components >= 500 px, gt >= 100 px) or ``"obstacle"`` (50 / 10),
            see :data:`TRACKS`.
        void_label: target value of void pixels (predictions there are ignored).

    ``update(prediction, target)`` takes ONE frame: ``prediction`` bool ``(H, W)`` (already thresholded, e.g.
    ``score > t``), ``target`` integer ``(H, W)`` with 1 anomaly, 0 normal, ``void_label`` void; numpy arrays
    or tensors of any device (converted to numpy: the labelling runs on the CPU). A leading batch dimension
    ``(B, H, W)`` is taken as B frames. States are sums (sIoU sum and count, PPV sum and count, TP / FN / FP
    per threshold), kept on the CPU.
    """

    def __init__(self, track: str = "anomaly", *, void_label: int = 255) -> None:
        super().__init__()
        if track not in TRACKS:
            raise ValueError(f"unknown track {track!r}; choose one of {sorted(TRACKS)}")
        self.track = track
        self.min_pred, self.min_gt = TRACKS[track]
        self.void_label = int(void_label)
        n = len(THRESHOLDS)
        self._add_state("siou_sum", torch.zeros((), dtype=torch.float64))
        self._add_state("siou_count", torch.zeros((), dtype=torch.int64))
        self._add_state("ppv_sum", torch.zeros((), dtype=torch.float64))
        self._add_state("ppv_count", torch.zeros((), dtype=torch.int64))
        self._add_state("tp", torch.zeros(n, dtype=torch.int64))
        self._add_state("fn", torch.zeros(n, dtype=torch.int64))
        self._add_state("fp", torch.zeros(n, dtype=torch.int64))

    def _config(self) -> dict[str, Any]:
        return {"track": self.track, "void_label": self.void_label}

    def update(self, prediction: Any, target: Any) -> None:
        """Add one frame (or a ``(B, H, W)`` stack of frames)."""
        p, t = _as_numpy(prediction), _as_numpy(target)
        if p.shape != t.shape or p.ndim not in (2, 3):
            raise ValueError(f"prediction {p.shape} and target {t.shape} must be equal (H, W) or (B, H, W) shapes")
        if p.dtype != np.bool_:
            if not np.issubdtype(p.dtype, np.integer):
                raise ValueError(f"prediction must be a bool mask (threshold the scores first), got {p.dtype}")
            if p.size and (p.min() < 0 or p.max() > 1):
                raise ValueError("an integer prediction must hold only 0 and 1")
            p = p.astype(bool)
        if not np.issubdtype(t.dtype, np.integer):
            raise ValueError(f"target must be integer (1 anomaly, 0 normal, {self.void_label} void), got {t.dtype}")
        for frame_p, frame_t in zip(p, t) if p.ndim == 3 else [(p, t)]:
            self._update_frame(frame_p, frame_t)

    def _update_frame(self, p: np.ndarray, t: np.ndarray) -> None:
        known = (t == 0) | (t == 1) | (t == self.void_label)
        if not known.all():
            bad = np.unique(t[~known])[:10].tolist()
            raise ValueError(f"target holds values {bad} besides 0, 1 and void_label={self.void_label}")
        siou, ppv = frame_components(p, t, self.min_pred, self.min_gt, self.void_label)
        tp = (siou[None, :] >= THRESHOLDS[:, None]).sum(1)
        fp = (ppv[None, :] < THRESHOLDS[:, None]).sum(1)
        dev = self.device
        self.siou_sum += float(np.sum(siou))
        self.siou_count += siou.size
        self.ppv_sum += float(np.sum(ppv))
        self.ppv_count += ppv.size
        self.tp += torch.from_numpy(tp).to(dev)
        self.fn += torch.from_numpy(siou.size - tp).to(dev)
        self.fp += torch.from_numpy(fp).to(dev)

    def sync(self) -> None:
        """Sum the states over ``torch.distributed`` ranks (no-op without a process group). The states live
        on the CPU; under NCCL they travel through the current CUDA device for the all-reduce."""
        if distributed_ready() and dist.get_backend() == "nccl":
            home = self.device
            self.to(torch.device("cuda", torch.cuda.current_device()))
            try:
                super().sync()
            finally:
                self.to(home)
        else:
            super().sync()

    def compute(self) -> dict[str, Any]:
        """The metrics as plain Python values; NaN where there is no component to average or count."""
        tp, fn, fp = (x.cpu().tolist() for x in (self.tp, self.fn, self.fp))
        f1 = [2 * a / (2 * a + b + c) if 2 * a + b + c > 0 else _NAN for a, b, c in zip(tp, fn, fp)]
        total = 0.0
        for value in f1:  # summed in order, as the benchmark's aggregate does
            total += value
        n_gt, n_pred = int(self.siou_count), int(self.ppv_count)
        return {
            "track": self.track,
            "siou_gt": float(self.siou_sum) / n_gt if n_gt else _NAN,
            "ppv": float(self.ppv_sum) / n_pred if n_pred else _NAN,
            "f1_25": f1[0],
            "f1_50": f1[5],
            "f1_75": f1[10],
            "f1_mean": total / len(f1),
            "num_gt_components": n_gt,
            "num_pred_components": n_pred,
            "thresholds": THRESHOLDS.tolist(),
            "f1": f1,
        }
