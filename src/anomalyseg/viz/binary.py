"""Panels for anomaly sets whose ground truth is only normal / anomaly / void (the real-photo sets: Road
Anomaly, SegmentMeIfYouCan, Fishyscapes).

These sets have no closed-set labels, so nothing here pretends to have one: the panel (2x3) shows the input
photo, the model's prediction in its own palette (Cityscapes colours for a Cityscapes model, its void
channel black), the anomaly mask (normal / anomaly / void), the anomaly score, the detection at the
operating point and the TP / FP / FN / TN map; void pixels are white and counted nowhere. The title holds
the image's own AUPR and FPR95 (non-void pixels, the per-image protocol's exact curve) and the detection
precision / recall / F1 -- no mIoU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from anomalyseg.constants import detect
from anomalyseg.viz import colors as C
from anomalyseg.viz import panels as P

#: Views of the binary-ground-truth panel, row by row.
BINARY_VIEWS: tuple[str, ...] = ("input", "prediction", "anomaly_gt", "score", "detection", "outcome")
#: Columns of its comparison grid.
BINARY_GRID_VIEWS: tuple[str, ...] = ("input", "prediction", "anomaly_gt", "score", "outcome")
#: Outcome colours as the real-photo panels label them (void: not counted).
BINARY_OUTCOME_COLORS: dict[str, C.RGB] = {**{k: C.OUTCOME_COLORS[k] for k in ("TP", "FP", "FN", "TN")},
                                           "void (not counted)": C.OUTCOME_COLORS["ignored"]}


@dataclass
class BinaryPanelData(P.PanelData):
    """:class:`~anomalyseg.viz.panels.PanelData` of a binary-ground-truth sample (``stats`` without mIoU)."""

    def summary(self) -> str:
        """``AUPR 23.1% · FPR95 67.9% · detection P 30.0% R 95.0% F1 45.6%`` (n/a where undefined)."""
        s, pct = self.stats, P.pct
        return (f"AUPR {pct(s['aupr'])} · FPR95 {pct(s['fpr95'])} · detection P {pct(s['precision'])} "
                f"R {pct(s['recall'])} F1 {pct(s['f1'])}")

    def lines(self) -> list[str]:
        """The numbers as short lines (row labels of the comparison grid)."""
        s, pct = self.stats, P.pct
        return [f"AUPR {pct(s['aupr'])}", f"FPR95 {pct(s['fpr95'])}",
                f"P {pct(s['precision'])} R {pct(s['recall'])}", f"F1 {pct(s['f1'])}"]


def binary_panel_data(
    image: Any,
    pred: Any,
    confidence: Any,
    score: Any,
    target: Any,
    threshold: float,
    palette: Sequence[Sequence[int]],
    *,
    threshold_label: str = "",
    sample_id: str = "",
    fpr_rule: str = "closest",
) -> BinaryPanelData:
    """The six maps and the numbers of one sample of a binary-ground-truth set.

    Args:
        image: RGB, HxWx3 or 3xHxW, uint8 (resized to the target's size when it differs).
        pred: ``(H, W)`` output-channel ids (argmax over every output, a void channel included).
        confidence: ``(H, W)`` max softmax probability; score: ``(H, W)`` anomaly score (higher = anomalous).
        target: ``(H, W)`` 1 anomaly / 0 normal / 255 void.
        threshold: pixels with ``score > threshold`` are detections (:data:`anomalyseg.constants.DETECTION_RULE`).
        palette: one colour per output channel (:func:`anomalyseg.viz.colors.class_palette`).
        fpr_rule: FPR95 rule of the per-image numbers ("closest": the per-image protocol's).
    """
    from anomalyseg.viz.samples import image_metrics

    target_ids, pred_ids = C.as_ids(target), C.as_ids(pred)
    shape = target_ids.shape
    conf = np.asarray(confidence, np.float32).reshape(np.shape(confidence)[-2:])
    sc = np.asarray(score, np.float32).reshape(np.shape(score)[-2:])
    for name, arr in (("pred", pred_ids), ("confidence", conf), ("score", sc)):
        if arr.shape != shape:
            raise ValueError(f"{name} has shape {arr.shape}, the target {shape}: give every map at one size")
    detected = detect(sc, threshold)
    rgb = {"input": P.resize_image(C.to_hwc_uint8(image), shape), "prediction": C.colorize(pred_ids, palette),
           "anomaly_gt": C.anomaly_gt_map(target_ids), "detection": C.detection_map(detected),
           "outcome": C.outcome_map(detected, target_ids)}
    stats = {**image_metrics(sc, target_ids, fpr_rule), **P.detection_stats(detected, target_ids),
             "void": int(((target_ids != 0) & (target_ids != 1)).sum())}
    return BinaryPanelData(rgb=rgb, confidence=conf, score=sc, threshold=float(threshold), stats=stats,
                           threshold_label=threshold_label, sample_id=sample_id)


def draw_binary_panel(data: BinaryPanelData, title: str | None = None, *, cell_width: float = 4.0,
                      dpi: int = 100) -> P.Panel:
    """The 2x3 panel figure of :func:`binary_panel_data`'s output, titled with the image's AUPR / FPR95 and
    detection P / R / F1."""
    h, w = data.rgb["input"].shape[:2]
    cell_h = cell_width * h / w
    fig = P.new_figure(3 * cell_width + 0.8, 2 * (cell_h + 0.75) + 0.7, dpi)
    grid = fig.add_gridspec(2, 3)
    axes: dict[str, Any] = {}
    for i, view in enumerate(BINARY_VIEWS):
        ax = fig.add_subplot(grid[i // 3, i % 3])
        axes[view] = ax
        P.colorbar(fig, ax, P.show_view(ax, view, data), view, data)
    axes["detection"].set_title(P.detection_title(data), fontsize=9)
    P.legend_below(axes["anomaly_gt"], C.ANOMALY_GT_COLORS, tuple(C.ANOMALY_GT_COLORS), 3)
    P.legend_below(axes["outcome"], BINARY_OUTCOME_COLORS, tuple(BINARY_OUTCOME_COLORS), 5)
    heading = title if title is not None else (data.sample_id or "sample")
    fig.suptitle(f"{heading}\n{data.summary()}", fontsize=11)
    return P.Panel(fig, axes, data)


def binary_legend(class_names: Sequence[str], palette: Sequence[Sequence[int]], *, dpi: int = 100) -> Figure:
    """The model's output colours (``channel: name``) and the fixed colours of the real-photo panels."""
    return P.legend_figure([
        ("prediction (channel: class)", [(f"{i}: {n}", palette[i]) for i, n in enumerate(class_names)]),
        ("ground truth", list(C.ANOMALY_GT_COLORS.items())),
        ("detection outcome", list(BINARY_OUTCOME_COLORS.items())),
        ("detection", list(C.DETECTION_COLORS.items())),
    ], dpi=dpi)
