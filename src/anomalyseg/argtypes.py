"""``type=`` converters for argparse options shared by the commands (argparse's own ``int`` says only
"invalid int value"; these say what is expected). Kept free of heavy imports: commands load it at start-up."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable

_SIZE_RE = re.compile(r"\s*(\d+)\s*[xX,]\s*(\d+)\s*")


def size_wh(text: str) -> tuple[int, int]:
    """``"1280x720"`` (also ``X`` or ``,``) -> ``(1280, 720)`` = (width, height), both >= 1."""
    match = _SIZE_RE.fullmatch(text)
    if not match or min(int(match.group(1)), int(match.group(2))) < 1:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 1280x720, got {text!r}")
    return int(match.group(1)), int(match.group(2))


def int_at_least(minimum: int) -> Callable[[str], int]:
    """A converter for whole numbers ``>= minimum`` (``int_at_least(1)`` for counts that cannot be zero)."""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a number >= {minimum}, got {value}")
        return value

    convert.__name__ = f"int_at_least_{minimum}"
    return convert
