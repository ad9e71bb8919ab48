"""Dataset pictures: class pixel shares per split (from ``anomalyseg data check``'s counts) and a batch of
(augmented) samples with their labels."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from anomalyseg.data.info import STREETHAZARDS
from anomalyseg.viz import colors as C
from anomalyseg.viz.panels import new_figure


def class_share_figure(shares: Mapping[str, Sequence[float]], class_names: Sequence[str] | None = None,
                       palette: Sequence[Sequence[int]] | None = None, *, dpi: int = 100) -> Figure:
    """Horizontal bars: share (%) of labelled pixels per class, one bar group per split (log scale, since
    the anomaly is ~1 % of test pixels and road tens of %)."""
    names = list(STREETHAZARDS.all_names if class_names is None else class_names)
    palette = C.default_palette() if palette is None else palette
    fig = new_figure(8.0, 0.32 * len(names) * max(1, len(shares)) ** 0.5 + 1.2, dpi)
    ax = fig.add_subplot(1, 1, 1)
    height = 0.8 / max(1, len(shares))
    hatches = ["", "//", "..", "xx"]
    y = np.arange(len(names))
    for k, (split, share) in enumerate(shares.items()):
        values = 100 * np.asarray(share, dtype=np.float64)[: len(names)]
        ax.barh(y + k * height, np.where(values > 0, values, np.nan), height=height, label=split,
                color=[C.mpl_color(palette[i]) for i in range(len(values))], edgecolor="0.3", linewidth=0.5,
                hatch=hatches[k % len(hatches)])
    ax.set_yticks(y + height * (len(shares) - 1) / 2, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("share of labelled pixels (%)")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("class pixel share per split")
    return fig


def _display_image(image: Any, mean: Sequence[float] | None, std: Sequence[float] | None) -> np.ndarray:
    arr = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image)
    if arr.dtype != np.uint8 and mean is not None and std is not None:
        chw = arr.shape[0] == 3
        m = np.asarray(mean, np.float32).reshape((3, 1, 1) if chw else (1, 1, 3))
        s = np.asarray(std, np.float32).reshape((3, 1, 1) if chw else (1, 1, 3))
        arr = np.clip(arr * s + m, 0.0, 1.0)
    return C.to_hwc_uint8(arr)


def batch_figure(images: Sequence[Any], labels: Sequence[Any], *, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, titles: Sequence[str] | None = None,
                 palette: Sequence[Sequence[int]] | None = None, columns: int = 4, dpi: int = 100) -> Figure:
    """Image over label (official colours) for each sample; normalised float images are shown through
    ``mean`` / ``std`` (e.g. the ImageNet values of the transforms)."""
    n = len(images)
    if n == 0 or n != len(labels):
        raise ValueError(f"batch_figure needs as many labels as images (got {n} and {len(labels)})")
    cols = min(columns, n)
    groups = -(-n // cols)
    first = _display_image(images[0], mean, std)
    cell = 3.0
    fig = new_figure(cols * cell, groups * 2 * cell * first.shape[0] / first.shape[1] + 0.6, dpi)
    grid = fig.add_gridspec(2 * groups, cols)
    for i in range(n):
        r, c = divmod(i, cols)
        for k, arr in enumerate((_display_image(images[i], mean, std), C.colorize(labels[i], palette))):
            ax = fig.add_subplot(grid[2 * r + k, c])
            ax.imshow(arr, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if k == 0 and titles is not None:
                ax.set_title(titles[i], fontsize=8)
    return fig
