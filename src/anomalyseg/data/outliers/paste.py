"""Pasting outlier cutouts into training crops (outlier exposure): :class:`PasteOutliers`.

With probability ``p`` a crop gets ``k`` (uniform in ``[low, high]``) cutouts of an
:class:`~anomalyseg.data.outliers.OutlierSource`, each resized so that its longer side is ``s`` x the crop's
shorter side (``s`` uniform in ``scale_range``), randomly mirrored, centred on a uniformly drawn pixel of the crop
(so at least a quarter of it is inside; the rest is cut off), edges feathered over about ``blend_px`` pixels.
Pasted pixels whose final alpha is >= 0.5 get the training-only label
:data:`~anomalyseg.constants.OUTLIER_LABEL` (254: not a class, not an anomaly id, not ignore 255); later objects
cover earlier ones.

Where in :class:`~anomalyseg.data.transforms.TrainTransform`: ``ScaleCrop -> hflip -> PasteOutliers ->
ColorJitter -> blur -> normalise``.

- After the geometric crop: an object's size is controlled relative to the crop the network sees (pasting
  into the full image would let the random zoom rescale it and the crop cut it away), every object lands in
  the crop, and labels are written at the output resolution, so no 254 pixel is ever resampled (the label
  needs no interpolation at all, nearest or otherwise).
- Before colour jitter and blur: pasted objects get the scene's photometric augmentation, so a model cannot
  single them out by un-jittered colours or sharper edges. Pixels are still uint8 here.

Randomness comes from Python's ``random`` (one 64-bit seed per crop for a numpy ``Generator``), which
:class:`~anomalyseg.engine.loaders.SeededSamples` seeds per sample from ``(seed, epoch, rank, position)``: the
pastes of a sample are the same in any worker, on any rank and after a resume. torchvision's transforms draw
from torch's RNG, which pasting never touches: a crop's window, flip and jitter are the same with pasting on or
off, and ``p=0`` is bit-identical to no pasting.

Feathering (own code: a few lines of Gaussian blur): the alpha is blurred (sigma = ``blend_px`` / 2.56, so the
10-90 % ramp is ``blend_px`` wide, centred on the silhouette's edge) and the colours just outside the
silhouette are the blurred object colours (normalised convolution), so the soft edge fades the object itself
into the scene, never the cutout's own background.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as F

from anomalyseg.constants import OUTLIER_LABEL
from anomalyseg.data.outliers import Cutout, OutlierSource


class Layer(NamedTuple):
    """One object placed in a crop: ``rgb`` (3, h, w) float32 in 0..255 and ``alpha`` (h, w) float32 (both
    padded by the feather), top-left corner ``(top, left)`` in the crop (may be negative), and ``size`` (h, w)
    of the object before padding."""

    top: int
    left: int
    rgb: torch.Tensor
    alpha: torch.Tensor
    size: tuple[int, int]


def _overlap(layer: Layer, height: int, width: int) -> tuple[slice, slice, slice, slice] | None:
    """(crop rows, crop cols, layer rows, layer cols) of the part of ``layer`` inside the crop."""
    h, w = layer.alpha.shape
    y0, x0 = max(layer.top, 0), max(layer.left, 0)
    y1, x1 = min(layer.top + h, height), min(layer.left + w, width)
    if y1 <= y0 or x1 <= x0:
        return None
    return (slice(y0, y1), slice(x0, x1), slice(y0 - layer.top, y1 - layer.top),
            slice(x0 - layer.left, x1 - layer.left))


def paste_image(image: torch.Tensor, layers: Sequence[Layer]) -> torch.Tensor:
    """``image`` (3, H, W) (uint8, or float in [0, 1]) with ``layers`` alpha-blended in order."""
    if not layers:
        return image
    height, width = image.shape[-2:]
    scale = 255.0 if image.dtype == torch.uint8 else 1.0
    out = image.to(torch.float32)
    for layer in layers:
        part = _overlap(layer, height, width)
        if part is not None:
            ys, xs, ly, lx = part
            a = layer.alpha[ly, lx]
            out[:, ys, xs] = a * (layer.rgb[:, ly, lx] * (scale / 255.0)) + (1 - a) * out[:, ys, xs]
    if image.dtype == torch.uint8:
        return out.round_().clamp_(0, 255).to(torch.uint8)
    return out.to(image.dtype)


def paste_label(label: torch.Tensor, layers: Sequence[Layer]) -> torch.Tensor:
    """``label`` (H, W) set to :data:`OUTLIER_LABEL` wherever a layer's alpha is >= 0.5."""
    if not layers:
        return label
    height, width = label.shape[-2:]
    out = label.clone()
    for layer in layers:
        part = _overlap(layer, height, width)
        if part is not None:
            ys, xs, ly, lx = part
            out[ys, xs] = out[ys, xs].masked_fill(layer.alpha[ly, lx] >= 0.5, OUTLIER_LABEL)
    return out


def _feather(rgb: torch.Tensor, alpha: torch.Tensor, blend_px: float) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Soft edge of about ``blend_px`` pixels: (rgb, alpha, padding added on each side)."""
    sigma = blend_px / 2.56
    pad = math.ceil(3 * sigma)
    rgb, alpha = torch.nn.functional.pad(rgb, (pad,) * 4), torch.nn.functional.pad(alpha, (pad,) * 4)
    blurred = F.gaussian_blur(torch.cat([rgb * alpha, alpha]), [2 * pad + 1] * 2, [sigma, sigma])  # one pass
    soft = blurred[3:]
    return torch.where(alpha > 0, rgb, blurred[:3] / soft.clamp(min=1e-6)), soft, pad


class PasteOutliers(v2.Transform):
    """Joint image + mask transform pasting cutouts of ``source`` (see the module doc).

    Args:
        source: where the objects come from.
        p: probability that a crop gets objects.
        k: ``(low, high)`` objects per such crop (inclusive).
        scale_range: ``(low, high)`` of an object's longer side / the crop's shorter side.
        blend_px: width of the soft edge in pixels (0: hard edge).
    """

    def __init__(self, source: OutlierSource, p: float = 0.5, k: tuple[int, int] = (1, 3),
                 scale_range: tuple[float, float] = (0.05, 0.3), blend_px: float = 2.0) -> None:
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"p must be in [0, 1], got {p}")
        if not 0 <= k[0] <= k[1]:
            raise ValueError(f"k must satisfy 0 <= low <= high, got {k}")
        if not 0 < scale_range[0] <= scale_range[1]:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
        if blend_px < 0:
            raise ValueError(f"blend_px must be >= 0, got {blend_px}")
        self.source, self.p, self.blend_px = source, float(p), float(blend_px)
        self.k = (int(k[0]), int(k[1]))
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))

    def extra_repr(self) -> str:
        return (f"source={self.source!r}, p={self.p}, k={self.k}, scale_range={self.scale_range}, "
                f"blend_px={self.blend_px}")

    def layer(self, cut: Cutout, longer_side: int, rng: np.random.Generator) -> Layer | None:
        """``cut`` resized to ``longer_side``, maybe mirrored, feathered; placed at (0, 0). None when empty."""
        h0, w0 = cut.alpha.shape
        f = longer_side / max(h0, w0)
        size = [max(1, round(h0 * f)), max(1, round(w0 * f))]
        rgb = torch.from_numpy(np.ascontiguousarray(cut.rgb)).permute(2, 0, 1).to(torch.float32)
        alpha = torch.from_numpy(np.ascontiguousarray(cut.alpha, dtype=np.float32))[None]
        if size != [h0, w0]:
            rgb = F.resize(rgb, size, interpolation=InterpolationMode.BILINEAR, antialias=True).clamp_(0, 255)
            alpha = F.resize(alpha, size, interpolation=InterpolationMode.BILINEAR, antialias=True).clamp_(0, 1)
        if rng.random() < 0.5:
            rgb, alpha = rgb.flip(-1), alpha.flip(-1)
        pad = 0
        if self.blend_px > 0:
            rgb, alpha, pad = _feather(rgb, alpha, self.blend_px)
        if not bool((alpha >= 0.5).any()):
            return None
        return Layer(-pad, -pad, rgb, alpha[0], (size[0], size[1]))

    def plan(self, height: int, width: int, rng: np.random.Generator) -> list[Layer]:
        """The objects of one ``height x width`` crop, drawn with ``rng`` only (empty with probability 1 - p)."""
        if self.p <= 0 or self.k[1] == 0 or rng.random() >= self.p:
            return []
        layers = []
        for _ in range(int(rng.integers(self.k[0], self.k[1] + 1))):
            side = max(2, round(rng.uniform(*self.scale_range) * min(height, width)))
            placed = self.layer(self.source.sample(rng, side), side, rng)
            if placed is None:
                continue
            cy, cx = int(rng.integers(height)), int(rng.integers(width))
            h, w = placed.size
            layers.append(placed._replace(top=placed.top + cy - h // 2, left=placed.left + cx - w // 2))
        return layers

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        if self.p <= 0:
            return {"layers": []}
        return {"layers": self.plan(height, width, np.random.default_rng(random.getrandbits(64)))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        layers = params["layers"]
        if not layers:
            return inpt
        if isinstance(inpt, tv_tensors.Mask):
            return tv_tensors.wrap(paste_label(inpt.as_subclass(torch.Tensor), layers), like=inpt)
        if isinstance(inpt, tv_tensors.Image):
            return tv_tensors.wrap(paste_image(inpt.as_subclass(torch.Tensor), layers), like=inpt)
        return inpt
