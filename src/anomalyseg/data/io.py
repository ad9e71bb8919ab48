"""Reading one image or label file, the raw-value -> class-id mapping, and a cross-process counter.

Shared by the loader and ``anomalyseg data check`` so that both decode files the same way.
"""

from __future__ import annotations

import ctypes
import multiprocessing.context
import zlib
from multiprocessing.sharedctypes import RawArray
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from anomalyseg.constants import IGNORE_INDEX
from anomalyseg.data.info import STREETHAZARDS
from anomalyseg.errors import UserError

#: Exceptions that mean "this file could not be decoded" (PIL raises all of these for broken PNGs).
DECODE_ERRORS: tuple[type[BaseException], ...] = (OSError, SyntaxError, ValueError, zlib.error, EOFError)

#: File value -> class id for 8-bit labels: 1..14 -> 0..13, anything else -> ignore.
_NUM_VALUES = STREETHAZARDS.anomaly_id + 1


class SampleError(UserError):
    """One sample cannot be used (unreadable file, image/label size mismatch); the message names the path."""


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file to a writable ``(H, W, 3)`` uint8 RGB array (RGBA, palette, grey converted)."""
    with Image.open(path) as im:
        im.load()  # decode now: a truncated file raises here, not later
        if im.mode != "RGB":
            im = im.convert("RGB")  # RGBA drops alpha, P expands the palette, L repeats the grey
        return np.array(im)


def probe_image(path: str | Path) -> tuple[int, int]:
    """Fully decode an image file without converting it (cheaper than :func:`read_image`); returns (H, W)."""
    with Image.open(path) as im:
        im.load()
        return im.height, im.width


def read_label_raw(path: str | Path) -> np.ndarray:
    """Decode a label file to its raw ``(H, W)`` integer values (8-bit grey or palette indices)."""
    with Image.open(path) as im:
        im.load()
        mode = im.mode
        if mode in ("L", "P", "I", "I;16", "I;16B", "I;16L", "1"):
            arr = np.array(im)
        elif mode in ("LA", "PA"):
            arr = np.array(im.getchannel(0))
        elif mode in ("RGB", "RGBA"):
            rgb = np.array(im)[..., :3]
            if not ((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 0] == rgb[..., 2]).all()):
                raise SampleError(f"label is a colour image, expected 8-bit single-channel values: {path}")
            arr = rgb[..., 0].copy()
        else:
            raise SampleError(f"unsupported label image mode {mode!r}: {path}")
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    return arr


def read_sample_image(path: str | Path) -> np.ndarray:
    """:func:`read_image` for a dataset sample: a decode failure is a :class:`SampleError` naming the file
    (the decode error kept as its ``__cause__``, which the StreetHazards loader retries)."""
    try:
        return read_image(path)
    except DECODE_ERRORS as exc:
        raise SampleError(f"cannot read image {path}: {exc}") from exc


def read_sample_label(path: str | Path, what: str = "label") -> np.ndarray:
    """:func:`read_label_raw` for a dataset sample (``what``: "label" or "mask" in the message)."""
    try:
        return read_label_raw(path)
    except DECODE_ERRORS as exc:
        raise SampleError(f"cannot read {what} {path}: {exc}") from exc


def check_same_size(image: np.ndarray, label: np.ndarray, image_path: str | Path, label_path: str | Path,
                    what: str = "label") -> None:
    """SampleError unless the ``(H, W, 3)`` image and the ``(H, W)`` label/mask have the same size."""
    if image.shape[:2] != label.shape:
        raise SampleError(f"image and {what} sizes differ: {image_path} is {image.shape[1]}x{image.shape[0]}, "
                          f"{label_path} is {label.shape[1]}x{label.shape[0]}")


_LUT = np.full(256, IGNORE_INDEX, dtype=np.int64)
_LUT[1: 1 + _NUM_VALUES] = np.arange(_NUM_VALUES)


def label_from_raw(raw: np.ndarray, ignore_index: int = IGNORE_INDEX) -> tuple[np.ndarray, int]:
    """Map raw file values to int64 class ids (value - 1); values outside 1..14 become ``ignore_index``.

    Returns the id map and how many pixels were out of range.
    """
    if raw.dtype == np.uint8:
        lut = _LUT if ignore_index == IGNORE_INDEX else np.where(_LUT == IGNORE_INDEX, ignore_index, _LUT)
        ids = lut[raw]
        valid = (raw >= 1) & (raw <= _NUM_VALUES)
    else:
        raw64 = raw.astype(np.int64)
        valid = (raw64 >= 1) & (raw64 <= _NUM_VALUES)
        ids = np.where(valid, raw64 - 1, ignore_index)
    return ids, int(raw.size - np.count_nonzero(valid))


class SharedCounter:
    """An integer that DataLoader worker processes add to and the main process reads (fork or spawn).

    Each process writes its own slot of a shared array (no lock needed); ``value`` sums the slots. Copies
    made outside process spawning (``copy.deepcopy``, ``pickle``) get a fresh counter holding the value.
    """

    _SLOTS = 256

    def __init__(self, start: int = 0) -> None:
        self._slots = RawArray(ctypes.c_int64, self._SLOTS)
        self._slots[0] = start

    @staticmethod
    def _slot() -> int:
        from torch.utils.data import get_worker_info

        info = get_worker_info()
        return 0 if info is None else 1 + info.id % (SharedCounter._SLOTS - 1)

    def add(self, n: int = 1) -> None:
        """Add ``n`` (from any process)."""
        self._slots[self._slot()] += n

    @property
    def value(self) -> int:
        """Current total over all processes."""
        return int(sum(self._slots))

    def __getstate__(self) -> dict[str, Any]:
        if multiprocessing.context.get_spawning_popen() is not None:  # handed to a worker: share memory
            return {"slots": self._slots}
        return {"value": self.value}

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "slots" in state:
            self._slots = state["slots"]
        else:
            self.__init__(state["value"])
