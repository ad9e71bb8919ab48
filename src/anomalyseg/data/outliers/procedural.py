"""Outlier source: objects generated on the fly (the embedded default; no files, nothing to download).

A family deliberately DISJOINT from the synthetic test anomalies (:func:`anomalyseg.data._objects.anomaly`),
so that outlier exposure on the synthetic data is measured on anomalies the model never saw in any form:

========  ===============================================  ===================================================
..        test anomalies (``_objects.anomaly``)            outliers (this module)
========  ===============================================  ===================================================
shapes    radial silhouettes in a disc: lobed flower,      straight-edged or stroked: random polygons, glyph
          star, ring, irregular blob, rotated cross        strokes (text-like), polyomino blocks, notched planks
textures  checker, stripes, dot grid, concentric rings,    smooth value noise, linear gradient, granite speckle,
          rainbow                                          grooves (luminance only: one hue per object)
colours   saturated (S >= 0.7) purple, magenta, cyan,      muted (S 0.2-0.6) hues in three bands: red-orange-
          lime, pink, a second colour of any hue           yellow (0.02-0.17), green (0.33-0.44), blue
          (or white / black)                               (0.60-0.70); value 0.35-0.85
========  ===============================================  ===================================================

No code is shared: this module imports nothing from :mod:`anomalyseg.data._scene`, ``_objects`` or
``synthetic`` (and they nothing from here); ``tests/data/test_outliers_disjoint.py`` checks the imports, traces
the functions both families execute, and compares their colour statistics. Shapes are drawn with PIL at 2x and
box-downsampled (soft alpha edges); textures scale the luminance of one colour, so hue and saturation of every
pixel stay those of the object's colour.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from anomalyseg.data.outliers import Cutout, crop_to_alpha
from anomalyseg.errors import UserError

#: Hue bands of the objects' colours (fractions of the colour circle), away from the test anomalies' hues.
HUE_BANDS: tuple[tuple[float, float], ...] = ((0.02, 0.17), (0.33, 0.44), (0.60, 0.70))
#: Saturation and value ranges of the objects' colours (the test anomalies are saturated: S >= 0.7).
SATURATION = (0.2, 0.6)
VALUE = (0.35, 0.85)
#: Range of the texture's luminance factor (VALUE[1] x its top stays <= 1: no clipping, hue kept).
SHADE = (0.55, 1.15)
SHAPES = ("polygon", "glyph", "blocks", "plank")
TEXTURES = ("noise", "gradient", "granite", "grooves")
_SUPERSAMPLE = 2


def _colour(rng: np.random.Generator) -> np.ndarray:
    lo, hi = HUE_BANDS[int(rng.integers(len(HUE_BANDS)))]
    rgb = colorsys.hsv_to_rgb(rng.uniform(lo, hi), rng.uniform(*SATURATION), rng.uniform(*VALUE))
    return np.asarray(rgb, np.float32)


def _polygon(draw: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int) -> None:
    """5-9 random vertices joined in angular order: a straight-edged, often spiky, polygon."""
    n = int(rng.integers(5, 10))
    pts = rng.uniform(0.0, 1.0, (n, 2)) * (w - 1, h - 1)
    centre = pts.mean(axis=0)
    order = np.argsort(np.arctan2(pts[:, 1] - centre[1], pts[:, 0] - centre[0]))
    draw.polygon([tuple(p) for p in pts[order]], fill=255)


def _glyph(draw: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int) -> None:
    """2-4 thick polyline strokes with round joints: a text-like glyph or a scribble."""
    width = max(2, round(min(w, h) * rng.uniform(0.1, 0.2)))
    pad = width / 2
    for _ in range(int(rng.integers(2, 5))):
        pts = rng.uniform(0.0, 1.0, (int(rng.integers(2, 5)), 2)) * (w - 1 - 2 * pad, h - 1 - 2 * pad) + pad
        draw.line([tuple(p) for p in pts], fill=255, width=width, joint="curve")
        for x, y in pts[[0, -1]]:
            draw.ellipse((x - pad, y - pad, x + pad, y + pad), fill=255)


def _blocks(draw: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int) -> None:
    """A polyomino: 3-7 cells of a 4x4 grid grown by random adjacency, drawn as rectangles."""
    cells = {(int(rng.integers(4)), int(rng.integers(4)))}
    size = int(rng.integers(3, 8))
    for _ in range(8 * size):
        if len(cells) == size:
            break
        r, c = sorted(cells)[int(rng.integers(len(cells)))]
        dr, dc = ((0, 1), (1, 0), (0, -1), (-1, 0))[int(rng.integers(4))]
        cells.add((min(3, max(0, r + dr)), min(3, max(0, c + dc))))
    rows, cols = [r for r, _ in cells], [c for _, c in cells]
    ch, cw = h / (max(rows) - min(rows) + 1), w / (max(cols) - min(cols) + 1)
    for r, c in cells:
        y, x = (r - min(rows)) * ch, (c - min(cols)) * cw
        draw.rectangle((x, y, x + cw - 1, y + ch - 1), fill=255)


def _plank(draw: ImageDraw.ImageDraw, rng: np.random.Generator, w: int, h: int) -> None:
    """A rounded rectangle with a rectangular notch cut out of one side."""
    draw.rounded_rectangle((0, 0, w - 1, h - 1), radius=min(w, h) * rng.uniform(0.05, 0.3), fill=255)
    nw, nh = w * rng.uniform(0.2, 0.45), h * rng.uniform(0.2, 0.45)
    side = int(rng.integers(4))  # top, bottom, left, right
    if side < 2:
        x0, y0 = rng.uniform(0, w - nw), (-1, h - nh)[side]
    else:
        x0, y0 = (-1, w - nw)[side - 2], rng.uniform(0, h - nh)
    draw.rectangle((x0, y0, x0 + nw, y0 + nh), fill=0)


_DRAW = {"polygon": _polygon, "glyph": _glyph, "blocks": _blocks, "plank": _plank}


def _silhouette(rng: np.random.Generator, shape: str, w: int, h: int) -> np.ndarray:
    """Alpha ``(h, w)`` in [0, 1] of ``shape``: drawn at 2x, box-downsampled (soft edges)."""
    big = Image.new("L", (w * _SUPERSAMPLE, h * _SUPERSAMPLE), 0)
    _DRAW[shape](ImageDraw.Draw(big), rng, *big.size)
    return np.asarray(big.resize((w, h), Image.BOX), np.float32) / 255.0


def _texture(rng: np.random.Generator, texture: str, w: int, h: int) -> np.ndarray:
    """Luminance pattern ``(h, w)`` in [0, 1]."""
    if texture == "noise":  # smooth value noise: a coarse random grid, bicubic upsampled
        grid = rng.random((int(rng.integers(2, 6)), int(rng.integers(2, 6))), dtype=np.float32)
        t = np.asarray(Image.fromarray(grid).resize((w, h), Image.BICUBIC), np.float32)
    elif texture == "gradient":  # a linear ramp at a random angle
        a = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        t = xx * math.cos(a) / max(w, 1) + yy * math.sin(a) / max(h, 1)
    elif texture == "granite":  # per-pixel grain with sparse dark flecks
        t = rng.uniform(0.4, 1.0, (h, w)).astype(np.float32)
        t[rng.random((h, w)) < 0.04] = 0.0
    else:  # grooves: a few thin dark lines across the object (wood / ridged plastic)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        a, pitch = rng.uniform(0, math.pi), max(3.0, min(w, h) * rng.uniform(0.12, 0.3))
        t = (np.mod(xx * math.cos(a) + yy * math.sin(a), pitch) > 1.5).astype(np.float32)
    span = float(t.max() - t.min())
    return (t - t.min()) / span if span > 0 else np.ones_like(t)


class ProceduralSource:
    """Procedural outlier objects (see the module doc): ``sample(rng, longer_side)`` draws one at that size.

    ``shapes``: a subset of :data:`SHAPES` to draw (None: all), e.g. to hold one shape out for choosing
    outlier-exposure settings on objects the model was not trained on (``benchmarks/outlier_exposure.py``).
    """

    def __init__(self, shapes: Sequence[str] | None = None) -> None:
        chosen = tuple(dict.fromkeys(shapes)) if shapes is not None else SHAPES
        unknown = [s for s in chosen if s not in SHAPES]
        if unknown or not chosen:
            raise UserError(f"outlier_exposure.shapes: {', '.join(map(repr, unknown)) or 'none given'}; "
                            f"the procedural shapes are {', '.join(SHAPES)}")
        self.shapes = chosen
        self.name = "procedural (shapes: " + ", ".join(chosen) + "; textures: " + ", ".join(TEXTURES) + ")"

    @property
    def roots(self) -> tuple[Path, ...]:
        return ()

    @property
    def files(self) -> list[Path]:
        return []

    def __repr__(self) -> str:
        return "ProceduralSource()" if self.shapes == SHAPES else f"ProceduralSource(shapes={list(self.shapes)})"

    def sample(self, rng: np.random.Generator, longer_side: int) -> Cutout:
        """An object whose longer side is about ``longer_side`` pixels (aspect 1:2..2:1)."""
        side = max(4, int(longer_side))
        aspect = math.exp(rng.uniform(-math.log(2), math.log(2)))  # height / width
        h, w = (side, max(2, round(side / aspect))) if aspect >= 1 else (max(2, round(side * aspect)), side)
        shape = self.shapes[int(rng.integers(len(self.shapes)))]
        texture = TEXTURES[int(rng.integers(len(TEXTURES)))]
        alpha = _silhouette(rng, shape, w, h)
        lo, hi = rng.uniform(SHADE[0], 0.8), rng.uniform(0.9, SHADE[1])
        shade = lo + (hi - lo) * _texture(rng, texture, w, h)
        rgb = np.clip(np.rint(_colour(rng) * shade[..., None] * 255.0), 0, 255).astype(np.uint8)
        cut = crop_to_alpha(rgb, alpha)
        return cut if cut is not None else Cutout(rgb, np.ones((h, w), np.float32))
