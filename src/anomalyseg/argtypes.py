"""``type=`` converters for argparse options shared by the commands (argparse's own ``int`` says only
"invalid int value"; these say what is expected, including the upper bound). Kept free of heavy imports:
commands load it at start-up. The bounds live in :mod:`anomalyseg.limits`."""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable

from anomalyseg.limits import MAX_SIDE

_SIZE_RE = re.compile(r"\s*(\d+)\s*[xX,]\s*(\d+)\s*")


def _two_sides(text: str, order: str, example: str, max_side: int) -> tuple[int, int]:
    """``"AxB"`` (also ``X`` or ``,``) -> ``(A, B)``, each in ``1 .. max_side``; ``order`` names A and B in the
    messages (``WIDTHxHEIGHT`` / ``HEIGHTxWIDTH``)."""
    match = _SIZE_RE.fullmatch(text)
    if not match or min(int(match.group(1)), int(match.group(2))) < 1:
        raise argparse.ArgumentTypeError(f"expected {order} such as {example}, got {text!r}")
    first, second = int(match.group(1)), int(match.group(2))
    if max(first, second) > max_side:
        raise argparse.ArgumentTypeError(f"each side must be at most {max_side} pixels, got {first}x{second}")
    return first, second


def size_at_most(max_side: int) -> Callable[[str], tuple[int, int]]:
    """A converter for ``"1280x720"`` (also ``X`` or ``,``) -> ``(1280, 720)`` = (width, height), each side
    in ``1 .. max_side``."""

    def convert(text: str) -> tuple[int, int]:
        return _two_sides(text, "WIDTHxHEIGHT", "1280x720", max_side)

    convert.__name__ = "size_wh"  # argparse names the converter in "invalid ... value" messages
    return convert


#: ``"1280x720"`` -> ``(1280, 720)`` = (width, height), both in ``1 .. MAX_SIDE``.
size_wh = size_at_most(MAX_SIDE)


def size_hw(text: str) -> tuple[int, int]:
    """``"512x1024"`` -> ``(512, 1024)`` = (height, width), PyTorch order as in input contracts; each side in
    ``1 .. MAX_SIDE``."""
    return _two_sides(text, "HEIGHTxWIDTH", "512x1024", MAX_SIDE)


def _num(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def _range_text(minimum: float | None, maximum: float | None) -> str:
    parts = ([f">= {_num(minimum)}"] if minimum is not None else []) + (
        [f"<= {_num(maximum)}"] if maximum is not None else [])
    return " and ".join(parts)


def int_at_least(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """A converter for whole numbers ``>= minimum`` (and ``<= maximum`` when given): ``int_at_least(1)`` for
    counts that cannot be zero."""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"expected a number {_range_text(minimum, maximum)}, got {value}")
        return value

    convert.__name__ = f"int_at_least_{minimum}"
    return convert


def finite_float(minimum: float | None = None, maximum: float | None = None) -> Callable[[str], float]:
    """A converter for finite numbers (no nan / inf), optionally in ``minimum .. maximum``."""

    def convert(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"expected a number {_range_text(minimum, maximum)}, got {value:g}")
        return value

    convert.__name__ = "finite_float"
    return convert
