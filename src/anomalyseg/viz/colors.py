"""Fixed colours for every map the panels draw, and the array functions that apply them.

Everything here is pure numpy: ``(H, W)`` ids or masks in, ``(H, W, 3)`` uint8 RGB out, so tests can check
colours at known pixels without drawing a figure.

Fixed colours (documented in the panel legend and the README):

* class ids: the official StreetHazards palette (:data:`anomalyseg.data.STREETHAZARDS`), the anomaly (id 13)
  in its own cyan, label 255 (ignore) white;
* detection outcome (:data:`OUTCOME_COLORS`): TP green, FP red, FN blue, TN dark grey, not counted white;
* binary detection (:data:`DETECTION_COLORS`): detected white, not detected black;
* error map (:data:`ERROR_COLORS`): correct dark grey, wrong red, not scored (anomaly / ignore) white;
* anomaly ground truth of the real-photo sets (:data:`ANOMALY_GT_COLORS`): normal dark grey, anomaly orange,
  void white (void is white in every map: not counted);
* predictions of models with other classes (:func:`class_palette`): the official Cityscapes colours for the
  Cityscapes classes, the model's void channel black (Cityscapes' own void colour), a fixed colour cycle else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from anomalyseg.constants import IGNORE_INDEX
from anomalyseg.data.info import STREETHAZARDS
from anomalyseg.data.palette import colorize as colorize_ids

RGB = tuple[int, int, int]

#: TP / FP / FN / TN / ignored colours of the outcome map (anomaly = positive class).
OUTCOME_COLORS: dict[str, RGB] = {
    "TP": (0, 170, 0),
    "FP": (230, 25, 25),
    "FN": (30, 100, 255),
    "TN": (45, 45, 45),
    "ignored": (255, 255, 255),
}
#: Binary detection map: pixels whose score > threshold (:data:`anomalyseg.constants.DETECTION_RULE`), the rest.
DETECTION_COLORS: dict[str, RGB] = {"detected": (255, 255, 255), "not detected": (0, 0, 0)}
#: Error map of the closed-set prediction over known-class pixels.
ERROR_COLORS: dict[str, RGB] = {"correct": (45, 45, 45), "wrong": (230, 25, 25), "not scored": (255, 255, 255)}
#: 1 / 0 / 255 anomaly ground truth of the real-photo sets (no closed-set classes there).
ANOMALY_GT_COLORS: dict[str, RGB] = {"normal": (45, 45, 45), "anomaly": (255, 150, 0), "void": (255, 255, 255)}
#: Colour of a model's trained void channel in predictions (Cityscapes draws its void classes black).
VOID_CLASS_COLOR: RGB = (0, 0, 0)
#: Colour of label 255 in class maps.
IGNORE_COLOR: RGB = (255, 255, 255)
#: Colour maps of the continuous maps (matplotlib names).
CONFIDENCE_CMAP = "viridis"
SCORE_CMAP = "inferno"


def default_palette() -> list[RGB]:
    """The official StreetHazards colours, index = class id 0..13 (13 = anomaly)."""
    return [tuple(int(c) for c in rgb) for rgb in STREETHAZARDS.palette]  # type: ignore[misc]


def to_hwc_uint8(image: Any) -> np.ndarray:
    """An RGB image as ``(H, W, 3)`` uint8 from numpy / torch, HWC or CHW, uint8 or float in [0, 1]."""
    arr = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3:
        raise ValueError(f"expected an RGB image of 3 dimensions, got shape {arr.shape}")
    if arr.shape[0] in (3, 4) and arr.shape[-1] not in (3, 4):
        arr = np.transpose(arr, (1, 2, 0))
    arr = arr[..., :3]
    if arr.dtype != np.uint8:
        arr = np.clip(np.round(arr.astype(np.float64) * (255.0 if arr.max(initial=0) <= 1.0 else 1.0)), 0, 255)
        arr = arr.astype(np.uint8)
    return np.ascontiguousarray(arr)


def as_ids(values: Any) -> np.ndarray:
    """``(H, W)`` int64 ids from numpy / torch (a leading batch dimension of 1 is dropped)."""
    arr = np.asarray(values.detach().cpu() if hasattr(values, "detach") else values)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2:
        raise ValueError(f"expected an (H, W) map, got shape {arr.shape}")
    return arr.astype(np.int64)


def colorize(ids: Any, palette: Sequence[Sequence[int]] | None = None, ignore_index: int = IGNORE_INDEX
             ) -> np.ndarray:
    """Class ids -> RGB with ``palette`` (default: official StreetHazards, anomaly included); ``ignore_index``
    white; ids without a palette entry black. The lookup itself is :func:`anomalyseg.data.palette.colorize`,
    shared with the engine's TensorBoard panels."""
    return colorize_ids(as_ids(ids), default_palette() if palette is None else palette, ignore_index)


def overlay(image: np.ndarray, colors: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``alpha`` * colours + (1 - ``alpha``) * image, uint8."""
    mixed = alpha * colors.astype(np.float32) + (1.0 - alpha) * image.astype(np.float32)
    return np.clip(np.round(mixed), 0, 255).astype(np.uint8)


def boundary(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it (a one-pixel outline)."""
    m = np.asarray(mask, dtype=bool)
    padded = np.pad(m, 1, mode="constant", constant_values=False)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return m & ~inner


def _paint(shape: tuple[int, int], layers: Sequence[tuple[np.ndarray, RGB]], background: RGB) -> np.ndarray:
    out = np.empty((*shape, 3), dtype=np.uint8)
    out[:] = background
    for mask, color in layers:
        out[mask] = color
    return out


def detection_map(detected: np.ndarray) -> np.ndarray:
    """Binary detection -> RGB (:data:`DETECTION_COLORS`)."""
    detected = np.asarray(detected, dtype=bool)
    return _paint(detected.shape, [(detected, DETECTION_COLORS["detected"])], DETECTION_COLORS["not detected"])


def outcome_masks(detected: np.ndarray, target: np.ndarray) -> dict[str, np.ndarray]:
    """``{"TP", "FP", "FN", "TN", "ignored"}`` boolean masks from detections and a 1 / 0 / 255 target."""
    detected = np.asarray(detected, dtype=bool)
    target = as_ids(target)
    pos, neg = target == 1, target == 0
    return {"TP": detected & pos, "FP": detected & neg, "FN": ~detected & pos, "TN": ~detected & neg,
            "ignored": ~(pos | neg)}


def outcome_map(detected: np.ndarray, target: np.ndarray) -> np.ndarray:
    """TP / FP / FN / TN map in :data:`OUTCOME_COLORS` (pixels with target 255 white)."""
    masks = outcome_masks(detected, target)
    order = ("TP", "FP", "FN", "TN")
    return _paint(masks["TP"].shape, [(masks[k], OUTCOME_COLORS[k]) for k in order], OUTCOME_COLORS["ignored"])


def error_map(gt: np.ndarray, pred: np.ndarray, anomaly_ids: Sequence[int] = (13,),
              ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Closed-set errors: known-class pixels predicted right / wrong; anomaly and ignored pixels not scored."""
    gt, pred = as_ids(gt), as_ids(pred)
    scored = ~np.isin(gt, [*anomaly_ids, ignore_index])
    return _paint(gt.shape, [(scored & (gt == pred), ERROR_COLORS["correct"]),
                             (scored & (gt != pred), ERROR_COLORS["wrong"])], ERROR_COLORS["not scored"])


def anomaly_gt_map(target: np.ndarray) -> np.ndarray:
    """A 1 / 0 / 255 anomaly target in :data:`ANOMALY_GT_COLORS` (any value but 0 and 1 is void)."""
    target = as_ids(target)
    return _paint(target.shape, [(target == 0, ANOMALY_GT_COLORS["normal"]),
                                 (target == 1, ANOMALY_GT_COLORS["anomaly"])], ANOMALY_GT_COLORS["void"])


def class_palette(class_names: Sequence[str], void_index: int | None = None) -> list[RGB]:
    """One colour per output channel of a model: Cityscapes' official colours when its channels are the 19
    Cityscapes classes (the void channel, if any, black); else matplotlib's ``tab20`` cycle."""
    from matplotlib import colormaps

    from anomalyseg.data.cityscapes import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE

    known = [n for i, n in enumerate(class_names) if i != void_index]
    if tuple(known) == CITYSCAPES_CLASSES:
        colours = iter(CITYSCAPES_PALETTE)
        return [VOID_CLASS_COLOR if i == void_index else next(colours) for i in range(len(class_names))]
    cycle = colormaps["tab20"].colors
    out: list[RGB] = []
    for i in range(len(class_names)):
        rgb = cycle[len(out) % len(cycle)]
        out.append(VOID_CLASS_COLOR if i == void_index else tuple(round(255 * c) for c in rgb[:3]))  # type: ignore[misc]
    return out


def hex_color(rgb: Sequence[int]) -> str:
    """``(r, g, b)`` -> ``#rrggbb``."""
    return "#" + "".join(f"{int(c):02x}" for c in rgb[:3])


def mpl_color(rgb: Sequence[int]) -> tuple[float, float, float]:
    """``(r, g, b)`` 0..255 -> matplotlib 0..1 floats."""
    return tuple(int(c) / 255.0 for c in rgb[:3])  # type: ignore[return-value]
