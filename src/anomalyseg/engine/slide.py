"""Sliding-window inference: the (preprocessed) image cut into overlapping tiles of the model's input size,
each tile's logits blended back with mean or Gaussian weights BEFORE any scorer reads them.

``--inference whole|resize|slide`` (``evaluate`` and ``predict``):

* ``whole``: one pass over the image at its native resolution (or the ``--size`` one);
* ``resize``: one pass over the image stretched to the tile size (``--tile`` or the contract's size);
  the default when the checkpoint's contract has a size (what evaluation always did);
* ``slide``: the native (or ``--size``) image in tiles of ``--tile HxW`` (default: the contract's size)
  overlapping by ``--overlap`` (0.33); every tile is a full-size model input, logits averaged where tiles
  overlap (``mean``; ``gaussian`` weighs each tile's centre more, damping its borders).

:func:`slide_logits` is called from :func:`anomalyseg.engine.tta.forward`, so TTA views are slid too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from anomalyseg.errors import UserError

INFERENCE_MODES = ("whole", "resize", "slide")
BLENDS = ("mean", "gaussian")


@dataclass(frozen=True)
class Window:
    """Tiles of ``tile`` = (H, W) with ``overlap`` (fraction of a tile shared with its neighbour, 0 <= o < 1)."""

    tile: tuple[int, int]
    overlap: float = 0.33
    blend: str = "mean"

    def __post_init__(self) -> None:
        if len(self.tile) != 2 or min(self.tile) < 1:
            raise UserError(f"--tile must be HxW with positive sides, got {self.tile}")
        if not 0.0 <= self.overlap < 1.0:
            raise UserError(f"--overlap must be in [0, 1), got {self.overlap}")
        if self.blend not in BLENDS:
            raise UserError(f"--blend must be one of {', '.join(BLENDS)}, got {self.blend!r}")

    @property
    def stride(self) -> tuple[int, int]:
        return tuple(max(1, math.ceil(t * (1.0 - self.overlap))) for t in self.tile)  # type: ignore[return-value]

    def describe(self) -> dict[str, Any]:
        return {"mode": "slide", "tile_hw": list(self.tile), "overlap": self.overlap, "stride_hw": list(self.stride),
                "blend": self.blend}


def parse_tile(text: str | None) -> tuple[int, int] | None:
    """``"512x1024"`` (H x W) -> (512, 1024); None stays None."""
    if text is None:
        return None
    if isinstance(text, tuple):
        return text
    parts = str(text).lower().replace(",", "x").split("x")
    try:
        h, w = (int(p) for p in parts)
    except ValueError:
        raise UserError(f"--tile must be HxW, e.g. 512x1024, got {text!r}") from None
    if min(h, w) < 1:
        raise UserError(f"--tile must be HxW with positive sides, got {text!r}")
    return h, w


def resolve_inference(mode: str | None, tile: str | tuple[int, int] | None, overlap: float, blend: str,
                      contract_size: tuple[int, int] | None) -> tuple[str, tuple[int, int] | None, Window | None]:
    """``(mode, input size (H, W) to resize to or None, window or None)`` of the options, checked.

    ``mode=None``: ``resize`` when the contract has a size, else ``whole`` (what evaluation always did).
    """
    tile_hw = parse_tile(tile)
    if mode is None:
        mode = "resize" if (tile_hw or contract_size) else "whole"
    if mode not in INFERENCE_MODES:
        raise UserError(f"--inference must be one of {', '.join(INFERENCE_MODES)}, got {mode!r}")
    if mode == "whole":
        if tile_hw is not None:
            raise UserError("--tile applies to --inference resize or slide, not whole")
        return mode, None, None
    size = tile_hw or (tuple(contract_size) if contract_size else None)
    if size is None:
        raise UserError(f"--inference {mode} needs a tile size: give --tile HxW, or size=HxW in the input contract")
    if mode == "resize":
        return mode, size, None  # type: ignore[return-value]
    return mode, None, Window(size, overlap, blend)  # type: ignore[arg-type]


def _starts(length: int, tile: int, stride: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return [*starts, length - tile]


def _weights(h: int, w: int, blend: str, device: torch.device) -> torch.Tensor:
    if blend == "mean":
        return torch.ones(1, 1, h, w, device=device)
    def axis(n: int) -> torch.Tensor:
        x = torch.arange(n, device=device, dtype=torch.float32) - (n - 1) / 2
        sigma = max(n / 8.0, 1e-3)
        return torch.exp(-0.5 * (x / sigma) ** 2)
    g = axis(h)[:, None] * axis(w)[None, :]
    return (g / g.max()).clamp_min_(1e-4)[None, None]  # never 0: every pixel keeps a weight


def slide_logits(model: nn.Module, images: torch.Tensor, window: Window) -> torch.Tensor:
    """Float32 logits ``(B, C, H, W)`` of ``images`` ``(B, 3, H, W)`` from overlapping tiles, blended (a
    NaN / inf in any tile carries into the blend, which :func:`anomalyseg.engine.tta.forward` checks)."""
    B, _, H, W = images.shape
    th, tw = min(window.tile[0], H), min(window.tile[1], W)
    sh, sw = window.stride
    weight = _weights(th, tw, window.blend, images.device)
    total: torch.Tensor | None = None
    count = torch.zeros(1, 1, H, W, device=images.device)
    for y in _starts(H, th, sh):
        for x in _starts(W, tw, sw):
            logits = model(images[..., y:y + th, x:x + tw]).logits.float()
            if tuple(logits.shape[-2:]) != (th, tw):
                logits = F.interpolate(logits, size=(th, tw), mode="bilinear", align_corners=False)
            if total is None:
                total = torch.zeros(B, logits.shape[1], H, W, device=images.device)
            total[..., y:y + th, x:x + tw] += logits * weight
            count[..., y:y + th, x:x + tw] += weight
    assert total is not None
    return total.div_(count)
