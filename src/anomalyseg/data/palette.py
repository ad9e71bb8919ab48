"""Class ids -> colours, once: the lookup table behind every class map (TensorBoard panels and ``viz``).

Lives in ``data`` (numpy only, no torch) because both the engine (TensorBoard images, torch tensors) and
``viz`` (figures, numpy arrays) draw class maps, and the engine may not import ``viz``: each converts its own
array type around :func:`colorize`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from anomalyseg.constants import IGNORE_INDEX

RGB = tuple[int, int, int]

#: Colour of the ignore label (255) in class maps: white, "not counted".
IGNORE_COLOR: RGB = (255, 255, 255)


def palette_lut(palette: Sequence[Sequence[int]], ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """``(256, 3)`` uint8 lookup table: ``palette[i]`` for id ``i`` (only its first 3 channels), ``ignore_index``
    :data:`IGNORE_COLOR`, ids without a palette entry black."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    if len(palette):
        lut[: len(palette)] = np.asarray([list(c)[:3] for c in palette], dtype=np.uint8)
    lut[ignore_index] = IGNORE_COLOR
    return lut


def colorize(ids: Any, palette: Sequence[Sequence[int]], ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Integer ids of any shape (numpy or array-like) -> uint8 RGB of shape ``(*ids.shape, 3)``.

    Ids are clipped to 0..255 first (negative ids draw as id 0, ids above 255 as id 255).
    """
    return palette_lut(palette, ignore_index)[np.clip(np.asarray(ids).astype(np.int64), 0, 255)]
