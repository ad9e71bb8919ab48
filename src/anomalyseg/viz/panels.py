"""Qualitative panels: one 3x3 figure per sample, a comparison grid of several samples, a colour legend.

:func:`panel_data` turns plain arrays (image, ground truth, prediction, softmax confidence, anomaly score,
anomaly target, threshold) into the nine RGB / scalar maps plus the sample's numbers; :func:`draw_panel`
draws them. Both are pure (no model, no files); figures are :class:`matplotlib.figure.Figure` objects on an
Agg canvas (no pyplot state), saved with :func:`save_figure`.

Panel layout (row by row): input, ground truth, prediction / overlay, confidence, error map / anomaly
score, binary detection, TP-FP-FN-TN map. Colours: :mod:`anomalyseg.viz.colors`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from anomalyseg.constants import IGNORE_INDEX, detect
from anomalyseg.data.info import STREETHAZARDS
from anomalyseg.metrics import SegmentationMetrics
from anomalyseg.metrics.targets import anomaly_target, mask_ids
from anomalyseg.viz import colors as C

#: Names of the nine panel views, row by row.
PANEL_VIEWS: tuple[str, ...] = (
    "input", "ground_truth", "prediction",
    "overlay", "confidence", "error",
    "score", "detection", "outcome",
)
VIEW_TITLES = {
    "input": "input", "ground_truth": "ground truth", "prediction": "prediction",
    "overlay": "prediction overlay (GT anomaly outlined)", "confidence": "softmax confidence",
    "error": "segmentation errors", "score": "anomaly score", "detection": "detection",
    "outcome": "TP / FP / FN / TN", "anomaly_gt": "ground truth: anomaly mask",
}
#: Columns of the comparison grid.
GRID_VIEWS: tuple[str, ...] = ("input", "ground_truth", "prediction", "score", "outcome")


@dataclass
class PanelData:
    """Everything one panel shows: RGB maps (uint8 HxWx3), the two scalar maps, and the sample's numbers."""

    rgb: dict[str, np.ndarray]
    confidence: np.ndarray
    score: np.ndarray
    threshold: float
    stats: dict[str, float]
    threshold_label: str = ""
    sample_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """``mIoU 41.2% · P 30.0% R 80.0% F1 43.6%`` (n/a where undefined)."""
        s = self.stats
        return (f"mIoU {pct(s['miou'])} · detection P {pct(s['precision'])} R {pct(s['recall'])} "
                f"F1 {pct(s['f1'])}")

    def lines(self) -> list[str]:
        """The numbers as short lines (row labels of the comparison grid)."""
        s = self.stats
        return [f"mIoU {pct(s['miou'])}", f"P {pct(s['precision'])} R {pct(s['recall'])}", f"F1 {pct(s['f1'])}"]


@dataclass
class Panel:
    """A drawn panel: the figure, its nine image axes by view name, and the data drawn."""

    figure: Figure
    axes: dict[str, Any]
    data: PanelData


def pct(value: float) -> str:
    """A fraction as ``41.2%`` (``n/a`` when missing or not finite)."""
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:.1f}%"


def sample_stats(gt: Any, pred: Any, target: Any, detected: Any, *, num_classes: int = 13,
                 anomaly_ids: Sequence[int] = (13,), ignore_index: int = IGNORE_INDEX) -> dict[str, float]:
    """The sample's closed-set mIoU (classes present in its truth or prediction; anomaly and ignored pixels
    excluded, as in the evaluation) and detection precision / recall / F1 at the drawn threshold (target
    255 not counted; NaN where undefined)."""
    gt, pred, target = C.as_ids(gt), C.as_ids(pred), C.as_ids(target)
    known = mask_ids(gt, [*anomaly_ids, ignore_index], ignore_index)
    seg = SegmentationMetrics(num_classes, ignore_index=ignore_index)
    seg.update(torch.from_numpy(pred)[None], torch.from_numpy(known)[None])
    return {"miou": seg.compute()["miou"], **detection_stats(detected, target)}


def detection_stats(detected: Any, target: Any) -> dict[str, float]:
    """Precision / recall / F1 of the detections against a 1 / 0 / 255 target (255 not counted; NaN where
    undefined) and the TP / FP / FN / TN pixel counts."""
    masks = C.outcome_masks(detected, target)
    tp, fp, fn, tn = (int(masks[k].sum()) for k in ("TP", "FP", "FN", "TN"))
    nan = float("nan")
    precision = tp / (tp + fp) if tp + fp else nan
    recall = tp / (tp + fn) if tp + fn else nan
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fn else nan
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn, "tn": tn}


def resize_image(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """An RGB uint8 image resized (bilinear) to ``shape`` = (H, W), unchanged when it already has it."""
    if image.shape[:2] == shape:
        return image
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((shape[1], shape[0]), Image.BILINEAR))


def panel_data(
    image: Any,
    gt: Any,
    pred: Any,
    confidence: Any,
    score: Any,
    threshold: float,
    target: Any | None = None,
    palette: Sequence[Sequence[int]] | None = None,
    *,
    num_classes: int = 13,
    anomaly_ids: Sequence[int] = (13,),
    ignore_index: int = IGNORE_INDEX,
    threshold_label: str = "",
    sample_id: str = "",
) -> PanelData:
    """The nine maps and the numbers of one sample.

    Args:
        image: RGB, HxWx3 or 3xHxW, uint8 (resized to the label's size when it differs).
        gt, pred: ``(H, W)`` class ids (gt: 0..12 known, 13 anomaly, 255 ignore).
        confidence: ``(H, W)`` max softmax probability; score: ``(H, W)`` anomaly score (higher = anomalous).
        threshold: pixels with ``score > threshold`` are detections (:data:`anomalyseg.constants.DETECTION_RULE`).
        target: 1 / 0 / 255 anomaly target; default derived from ``gt`` (anomaly ids 1, 255 ignored).
        palette: class colours by id, anomaly id included (default: official StreetHazards).
    """
    gt_ids, pred_ids = C.as_ids(gt), C.as_ids(pred)
    shape = gt_ids.shape
    conf = np.asarray(confidence.detach().cpu() if hasattr(confidence, "detach") else confidence, np.float32)
    sc = np.asarray(score.detach().cpu() if hasattr(score, "detach") else score, np.float32)
    conf, sc = conf.reshape(conf.shape[-2:]), sc.reshape(sc.shape[-2:])
    for name, arr in (("pred", pred_ids), ("confidence", conf), ("score", sc)):
        if arr.shape != shape:
            raise ValueError(f"{name} has shape {arr.shape}, the ground truth {shape}: give every map at one size")
    target_ids = (anomaly_target(gt_ids, anomaly_ids, void_label=ignore_index) if target is None
                  else C.as_ids(target))
    img = resize_image(C.to_hwc_uint8(image), shape)
    detected = detect(sc, threshold)
    gt_rgb, pred_rgb = C.colorize(gt_ids, palette, ignore_index), C.colorize(pred_ids, palette, ignore_index)
    over = C.overlay(img, pred_rgb)
    outline = C.boundary(np.isin(gt_ids, list(anomaly_ids)))
    pal = C.default_palette() if palette is None else palette
    over[outline] = pal[anomaly_ids[0]][:3] if len(pal) > anomaly_ids[0] else (0, 255, 255)
    rgb = {"input": img, "ground_truth": gt_rgb, "prediction": pred_rgb, "overlay": over,
           "error": C.error_map(gt_ids, pred_ids, anomaly_ids, ignore_index),
           "detection": C.detection_map(detected), "outcome": C.outcome_map(detected, target_ids)}
    stats = sample_stats(gt_ids, pred_ids, target_ids, detected, num_classes=num_classes, anomaly_ids=anomaly_ids,
                         ignore_index=ignore_index)
    return PanelData(rgb=rgb, confidence=conf, score=sc, threshold=float(threshold), stats=stats,
                     threshold_label=threshold_label, sample_id=sample_id)


def _score_range(score: np.ndarray, threshold: float) -> tuple[float, float]:
    finite = score[np.isfinite(score)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    return lo, hi


def show_view(ax: Any, view: str, data: PanelData) -> Any:
    """Draw one view of ``data`` into ``ax`` (titled; scalar maps with their colour maps)."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(VIEW_TITLES[view], fontsize=9)
    if view == "confidence":
        return ax.imshow(data.confidence, cmap=C.CONFIDENCE_CMAP, vmin=0.0, vmax=1.0, interpolation="nearest")
    if view == "score":
        lo, hi = _score_range(data.score, data.threshold)
        return ax.imshow(data.score, cmap=C.SCORE_CMAP, vmin=lo, vmax=hi, interpolation="nearest")
    return ax.imshow(data.rgb[view], interpolation="nearest")


def legend_below(ax: Any, colors: dict[str, tuple[int, int, int]], keys: Sequence[str], ncol: int) -> None:
    """Colour patches for ``keys`` under an image axis."""
    handles = [Patch(facecolor=C.mpl_color(colors[k]), edgecolor="0.5", label=k) for k in keys]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.01), ncol=ncol, fontsize=7,
              frameon=False, handlelength=1.0, columnspacing=0.8)


def colorbar(fig: Figure, ax: Any, image: Any, view: str, data: PanelData) -> None:
    """A colour bar beside the confidence and score maps (the score's with the threshold as a cyan line)."""
    if view not in ("confidence", "score"):
        return
    bar = fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
    bar.ax.tick_params(labelsize=7)
    if view == "score":
        lo, hi = _score_range(data.score, data.threshold)
        if lo <= data.threshold <= hi:
            bar.ax.axhline(data.threshold, color="cyan", linewidth=1.5)


def detection_title(data: PanelData) -> str:
    """``detection: score > tpr95 (pooled, ...) = 0.31``."""
    thr = f"{data.threshold_label} = {data.threshold:.4g}" if data.threshold_label else f"{data.threshold:.4g}"
    return f"detection: score > {thr}"


def new_figure(width: float, height: float, dpi: int = 100) -> Figure:
    """A figure on its own Agg canvas (no pyplot, no global backend switch)."""
    fig = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def draw_panel(data: PanelData, title: str | None = None, *, cell_width: float = 4.0, dpi: int = 100) -> Panel:
    """The 3x3 panel figure of :func:`panel_data`'s output, titled with the sample's mIoU and P / R / F1."""
    h, w = data.rgb["input"].shape[:2]
    cell_h = cell_width * h / w
    fig = new_figure(3 * cell_width + 0.8, 3 * (cell_h + 0.55) + 0.7, dpi)
    grid = fig.add_gridspec(3, 3)
    axes: dict[str, Any] = {}
    for i, view in enumerate(PANEL_VIEWS):
        ax = fig.add_subplot(grid[i // 3, i % 3])
        axes[view] = ax
        colorbar(fig, ax, show_view(ax, view, data), view, data)
    axes["detection"].set_title(detection_title(data), fontsize=9)
    legend_below(axes["outcome"], C.OUTCOME_COLORS, ("TP", "FP", "FN", "TN", "ignored"), 5)
    legend_below(axes["error"], C.ERROR_COLORS, tuple(C.ERROR_COLORS), 3)
    heading = title if title is not None else (data.sample_id or "sample")
    fig.suptitle(f"{heading}\n{data.summary()}", fontsize=11)
    return Panel(fig, axes, data)


def panel_figure(image: Any, gt: Any, pred: Any, confidence: Any, score: Any, threshold: float,
                 target: Any | None = None, palette: Sequence[Sequence[int]] | None = None, *,
                 title: str | None = None, **kwargs: Any) -> Panel:
    """:func:`panel_data` + :func:`draw_panel` in one call (same arguments)."""
    return draw_panel(panel_data(image, gt, pred, confidence, score, threshold, target, palette, **kwargs), title)


def comparison_grid(samples: Sequence[PanelData], views: Sequence[str] = GRID_VIEWS, *, cell_width: float = 2.6,
                    dpi: int = 100, title: str | None = None) -> Figure:
    """One row per sample (id and numbers on the left), one column per view."""
    if not samples:
        raise ValueError("comparison_grid needs at least one sample")
    h, w = samples[0].rgb["input"].shape[:2]
    cell_h = cell_width * h / w
    fig = new_figure(len(views) * cell_width + 0.6, len(samples) * (cell_h + 0.35) + 0.8, dpi)
    grid = fig.add_gridspec(len(samples), len(views))
    for r, data in enumerate(samples):
        for c, view in enumerate(views):
            ax = fig.add_subplot(grid[r, c])
            show_view(ax, view, data)
            if r:
                ax.set_title("")
            if c == 0:
                ax.set_ylabel("\n".join([data.sample_id, *data.lines()]), fontsize=7)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def palette_legend(class_names: Sequence[str] | None = None, palette: Sequence[Sequence[int]] | None = None,
                   *, dpi: int = 100) -> Figure:
    """Class colours (anomaly and ignore included) and the fixed colours of the detection maps."""
    names = list(STREETHAZARDS.all_names if class_names is None else class_names)
    palette = C.default_palette() if palette is None else palette
    groups = [
        ("classes (id: name)", [(f"{i}: {n}", palette[i]) for i, n in enumerate(names) if i < len(palette)]
         + [(f"{IGNORE_INDEX}: ignore", C.IGNORE_COLOR)]),
        ("detection outcome", list(C.OUTCOME_COLORS.items())),
        ("detection", list(C.DETECTION_COLORS.items())),
        ("segmentation errors", list(C.ERROR_COLORS.items())),
    ]
    return legend_figure(groups, dpi=dpi)


def legend_figure(groups: Sequence[tuple[str, Sequence[tuple[str, Sequence[int]]]]], *, dpi: int = 100) -> Figure:
    """Columns of colour swatches, one per ``(heading, [(label, rgb), ...])`` group."""
    rows = max(len(items) for _, items in groups)
    fig = new_figure(2.6 * len(groups), 0.28 * rows + 0.6, dpi)
    for g, (heading, items) in enumerate(groups):
        ax = fig.add_subplot(1, len(groups), g + 1)
        ax.set_xlim(0, 1)
        ax.set_ylim(rows, -0.8)
        ax.axis("off")
        ax.text(0.0, -0.5, heading, fontsize=9, fontweight="bold", va="center")
        for i, (label, rgb) in enumerate(items):
            ax.add_patch(_swatch(i, rgb))
            ax.text(0.2, i + 0.5, label, fontsize=8, va="center")
    return fig


def _swatch(row: int, rgb: Sequence[int]) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle((0.0, row + 0.1), 0.15, 0.8, facecolor=C.mpl_color(rgb), edgecolor="0.4", linewidth=0.5)


def save_figure(fig: Figure, path: str | Path, dpi: int | None = None) -> Path:
    """Write ``fig`` as PNG (folders created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi or fig.dpi, facecolor="white")
    return path


def figure_rgb(fig: Figure) -> np.ndarray:
    """The drawn figure as ``(H, W, 3)`` uint8 (for tests and notebooks)."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def axes_pixel(fig: Figure, ax: Any, row: float, col: float) -> tuple[int, int]:
    """Figure-buffer (y, x) of image pixel (``row``, ``col``) drawn by ``imshow`` in ``ax`` (after a draw)."""
    x, y = ax.transData.transform((col, row))
    height = round(fig.bbox.height)
    return int(height - y), int(x)
