"""Procedural road scenes in perspective, drawn with vectorised numpy (the synthetic StreetHazards data).

A pinhole camera at height ``hc`` looks down a straight street; the ground is a plane, so a ground pixel
(row y, column x) sits at depth Z = f·hc/(y − horizon) and lateral offset X = (x − cx)·Z/f. Facades are
vertical planes parallel to the street, objects are flat sprites standing on the ground, drawn far to near
(painter's algorithm) with a depth map for fog. Each class keeps a consistent geometry (road and lines on the
ground, facades at the sides, signs on poles, cars on the road, pedestrians on sidewalks) while colours,
textures, sizes and lighting vary per scene, so a model has to learn shapes and context.

Anomalies (label 14, test split only) are shapes and textures never drawn for a known class: lobed/star/
ring/blob silhouettes with checker, stripe, dot, ring or rainbow patterns in saturated purple/magenta/cyan/lime
hues, standing on the road or the sidewalk.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

# File values (class id + 1), as in the official label PNGs.
UNLABELED, BUILDING, FENCE, OTHER, PEDESTRIAN, POLE, ROAD_LINE, ROAD, SIDEWALK, VEGETATION, CAR, WALL, SIGN, \
    ANOMALY = range(1, 15)

Z_FAR = 150.0
_CAR_COLOURS = np.array([[0.65, 0.08, 0.08], [0.1, 0.18, 0.55], [0.88, 0.88, 0.88], [0.08, 0.08, 0.09],
                         [0.58, 0.59, 0.62], [0.12, 0.3, 0.18], [0.8, 0.65, 0.15], [0.4, 0.27, 0.18]], np.float32)
_ANOMALY_HUES = np.array([0.78, 0.83, 0.88, 0.5, 0.53, 0.25, 0.95], np.float32)  # purple..magenta, cyan, lime


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6) % 6
    f = h * 6 - math.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i], np.float32)


def _lowfreq(rng: np.random.Generator, h: int, w: int, cells: float) -> np.ndarray:
    """Smooth noise in [0, 1] of shape (h, w) with about ``cells`` blobs across the width (bilinear grid)."""
    gw = max(2, int(cells) + 2)
    gh = max(2, int(cells * h / max(w, 1)) + 2)
    grid = rng.random((gh, gw), dtype=np.float32)
    return np.asarray(Image.fromarray(grid).resize((max(w, 1), max(h, 1)), Image.BILINEAR))


class Scene:
    """One image being drawn: ``img`` float RGB in [0, 1], ``lab`` file values, ``depth`` in metres."""

    def __init__(self, rng: np.random.Generator, width: int, height: int) -> None:
        self.rng, self.W, self.H = rng, width, height
        self.img = np.zeros((height, width, 3), np.float32)
        self.lab = np.full((height, width), UNLABELED, np.uint8)
        self.depth = np.full((height, width), np.inf, np.float32)
        r = rng.random
        self.f = width * (0.8 + 0.25 * r())
        self.yh = height * (0.36 + 0.12 * r())
        self.cx = width * (0.5 + 0.22 * (r() - 0.5))
        self.hc = 1.4 + 0.5 * r()
        self.road_w = 6.0 + 7.0 * r()
        self.x0 = (r() - 0.5) * 0.5 * self.road_w  # camera offset from the road centre
        self.sw = (1.5 + 3.0 * r(), 1.5 + 3.0 * r())  # sidewalk widths left, right
        self.sun = (0.75 + 0.4 * r(), 0.75 + 0.4 * r())  # facade brightness left, right
        self.rows = np.arange(height, dtype=np.float32)[:, None]
        self.cols = np.arange(width, dtype=np.float32)[None, :]

    # -- projection helpers -------------------------------------------------------------------------------
    def edge(self, side: int) -> float:
        """Lateral position (road-centred metres) of the outer sidewalk edge on ``side`` (-1 left, +1 right)."""
        return side * (self.road_w / 2 + self.sw[0 if side < 0 else 1])

    def project(self, x: float, z: float) -> tuple[float, float, float]:
        """Ground point (road-centred X, depth Z) -> (column, row, pixels per metre)."""
        k = self.f / z
        return self.cx + (x + self.x0) * k, self.yh + self.hc * k, k

    def paint(self, ys: slice, xs: slice, mask: np.ndarray, colour: np.ndarray, value: int, z) -> None:
        """Paint ``mask`` (local to the box) with ``colour`` ((3,) or (h, w, 3)), label ``value``, depth ``z``."""
        if not mask.any():
            return
        sub = self.img[ys, xs]
        sub[mask] = colour[mask] if colour.ndim == 3 else colour
        self.lab[ys, xs][mask] = value
        dz = self.depth[ys, xs]
        dz[mask] = z[mask] if isinstance(z, np.ndarray) else z

    def box(self, x0: float, x1: float, y0: float, y1: float):
        """Clip a pixel box; returns (row slice, col slice, local row coords, local col coords) or None."""
        c0, c1 = max(math.floor(x0), 0), min(math.ceil(x1), self.W)
        r0, r1 = max(math.floor(y0), 0), min(math.ceil(y1), self.H)
        if c1 <= c0 or r1 <= r0:
            return None
        return slice(r0, r1), slice(c0, c1), self.rows[r0:r1], self.cols[:, c0:c1]

    # -- background ---------------------------------------------------------------------------------------
    def sky(self) -> None:
        r = self.rng.random
        kind = self.rng.integers(3)
        top, bottom = [((0.3, 0.5, 0.85), (0.72, 0.82, 0.95)), ((0.55, 0.57, 0.6), (0.82, 0.82, 0.83)),
                       ((0.3, 0.28, 0.5), (0.95, 0.62, 0.42))][kind]
        rows = min(self.H, math.ceil(self.yh) + 2)  # the ground covers everything below
        t = np.clip(self.rows[:rows] / max(self.yh, 1.0), 0, 1)[..., None]
        grad = (np.asarray(top, np.float32) * (1 - t) + np.asarray(bottom, np.float32) * t) * (0.9 + 0.2 * r())
        clouds = np.clip(_lowfreq(self.rng, rows, self.W, 6) - 0.5, 0, None) * (0.25 * r())
        self.img[:rows] = grad + clouds[..., None]

    def ground(self) -> None:
        """Road, road lines, sidewalks and the verge (grass or gravel), textured in ground coordinates."""
        rng, r = self.rng, self.rng.random
        y0 = math.floor(self.yh) + 1
        if y0 >= self.H:
            return
        rows = self.rows[y0:] - self.yh  # (h, 1)
        Z = self.f * self.hc / rows  # depth per row, (h, 1)
        X = (self.cols - self.cx) * (self.hc / rows) - self.x0  # (h, w)
        h, w = X.shape
        half = self.road_w / 2
        eL, eR = -self.edge(-1), self.edge(1)
        # region index: 0 road, 1 line, 2/3 sidewalk L/R, 4/5 verge L/R
        left = X < 0
        ax = np.abs(X)
        verge = np.where(left, ax >= eL, ax >= eR)
        k = np.where(ax < half, np.uint8(0), np.where(left, np.uint8(2), np.uint8(3))) + verge * np.uint8(2)
        # road lines: edge lines, dashed lane lines, sometimes a zebra crossing
        lw = 0.12 + 0.1 * r()
        road = ax < half
        lines = np.abs(ax - (half - 0.35)) < lw / 2
        lanes = int(max(1, round(self.road_w / 3.3)))
        dash, duty = 3.0 + 6.0 * r(), 0.35 + 0.3 * r()
        dashes = np.mod(Z, dash) < dash * duty  # per row
        for i in range(1, lanes):
            lines |= (np.abs(X - (-half + i * self.road_w / lanes)) < lw / 2) & dashes
        if r() < 0.3:
            z0 = 6 + 25 * r()
            lines |= ((z0 < Z) & (z0 + 3.5 > Z)) & (np.mod(X, 1.0) < 0.5) & (ax < half - 0.5)
        k[lines & road] = 1
        # colours and texture strengths per region
        base = np.zeros((6, 3), np.float32)
        grain_amp = np.zeros(6, np.float32)
        patch_amp = np.zeros(6, np.float32)
        joint_amp = np.zeros(6, np.float32)
        grey = 0.22 + 0.22 * r()
        base[0] = (grey, grey, grey * (0.95 + 0.1 * r()))
        grain_amp[0], patch_amp[0] = 0.06, 0.08
        yellow = r() < 0.3
        base[1] = np.float32([0.88, 0.75, 0.22] if yellow else [0.92, 0.92, 0.9]) * (0.8 + 0.2 * r())
        grain_amp[1] = 0.05
        paving = ((0.62, 0.62, 0.62), (0.68, 0.62, 0.5), (0.62, 0.42, 0.36))
        tile = 0.4 + 0.5 * r()
        for i in (2, 3):
            base[i] = np.float32(paving[rng.integers(3)]) * (0.85 + 0.3 * r())
            grain_amp[i], patch_amp[i], joint_amp[i] = 0.04, 0.05, -0.12
        verge_value = []
        for i in (4, 5):
            if r() < 0.6:  # grass: vegetation
                base[i] = (0.25 + 0.12 * r(), 0.42 + 0.15 * r(), 0.15 + 0.08 * r())
                grain_amp[i], patch_amp[i] = 0.12, 0.12
                verge_value.append(VEGETATION)
            else:  # gravel: "other"
                base[i] = np.float32([0.46, 0.39, 0.3]) * (0.8 + 0.3 * r())
                grain_amp[i], patch_amp[i] = 0.25, 0.05
                verge_value.append(OTHER)
        grain = rng.random((h, w), dtype=np.float32) - 0.5
        patches = _lowfreq(rng, h, w, 8) - 0.5
        joints = (np.mod(X, tile) < 0.06) | (np.mod(Z, tile) < 0.06)
        shade = grain_amp[k] * grain + patch_amp[k] * patches + joint_amp[k] * joints
        if r() < 0.4:  # soft shadows of unseen trees and buildings
            shade -= (_lowfreq(rng, h, w, 5 + 10 * r()) > 0.62) * np.float32(0.1 + 0.1 * r())
        self.img[y0:] = base[k] + shade[..., None]
        values = np.array([ROAD, ROAD_LINE, SIDEWALK, SIDEWALK, *verge_value], np.uint8)
        self.lab[y0:] = values[k]
        self.depth[y0:] = Z

    # -- facades (vertical planes parallel to the street) -------------------------------------------------
    def facade(self, side: int, xw: float, z0: float, z1: float, height: float, kind: int) -> None:
        """Draw a facade of ``kind`` (BUILDING, WALL, FENCE, VEGETATION) at road-centred lateral ``xw``."""
        rng, r = self.rng, self.rng.random
        xc = xw + self.x0  # camera-centred
        if xc * side <= 0.2:
            return
        xa, xb = self.cx + self.f * xc / z0, self.cx + self.f * xc / z1
        c0, c1 = max(math.floor(min(xa, xb)), 0), min(math.ceil(max(xa, xb)), self.W)
        if c1 <= c0:
            return
        cols = self.cols[:, c0:c1]
        with np.errstate(divide="ignore"):
            Z = np.clip(self.f * xc / (cols - self.cx), z0, z1).astype(np.float32)
        top = self.yh + self.f * (self.hc - height - 0.5) / Z
        bottom = self.yh + self.f * self.hc / Z
        bx = self.box(c0, c1, float(top.min()), float(bottom.max()) + 1)
        if bx is None:
            return
        ys, xs, rr, _cc = bx
        top = top + self.f * 0.5 / Z
        if kind == VEGETATION:  # hedge with a wavy top
            top = top - self.f / Z * 0.3 * np.sin(Z * (1.5 + r()) + 6 * r())
        mask = (rr >= top) & (rr < bottom)
        V = self.hc - (rr - self.yh) * Z / self.f  # height above ground (m)
        U = Z  # distance along the facade (m)
        light = self.sun[0 if side < 0 else 1]
        if kind == BUILDING:
            tints = [(0.6, 0.6, 0.6), (0.55, 0.27, 0.2), (0.78, 0.72, 0.58), (0.85, 0.85, 0.82),
                     (0.45, 0.35, 0.28), (0.5, 0.55, 0.65)]
            col = np.array(tints[rng.integers(len(tints))], np.float32) * (0.8 + 0.3 * r()) * light
            ww, wh = 1.5 + 2.5 * r(), 2.8 + 0.8 * r()
            fw, fh = 0.35 + 0.3 * r(), 0.35 + 0.25 * r()
            win = (np.mod(U, ww) < ww * fw) & (np.mod(V, wh) > wh * (1 - fh) - 0.4) & (np.mod(V, wh) < wh - 0.4)
            win &= (V > 2.5) & (height - 0.8 > V)
            wcol = np.array([0.12, 0.16, 0.24] if r() < 0.7 else [0.75, 0.7, 0.45], np.float32)
            floor = np.abs(np.mod(V, wh) - wh + 0.1) < 0.1
            tex = np.where(win[..., None], wcol, col - 0.1 * floor[..., None].astype(np.float32))
        elif kind == WALL:
            col = np.array([0.58, 0.56, 0.52] if r() < 0.5 else [0.5, 0.42, 0.38], np.float32)
            col = col * (0.8 + 0.3 * r()) * light
            bh = 0.2 + 0.15 * r()
            row = np.floor(V / bh)
            mortar = (np.mod(V, bh) < 0.03) | (np.mod(U + 0.5 * np.mod(row, 2) * 0.6, 0.6) < 0.03)
            tex = col - 0.12 * mortar[..., None].astype(np.float32)
        elif kind == FENCE:
            metal = r() < 0.5
            col = np.array([0.22, 0.3, 0.24] if metal else [0.5, 0.35, 0.2], np.float32) * (0.8 + 0.4 * r())
            pitch = 0.15 + 0.25 * r()
            bars = (np.mod(U, pitch) < pitch * (0.35 if metal else 0.7)) | (np.abs(V - 0.25) < 0.05)
            bars |= np.abs(V - (height - 0.1)) < 0.06
            mask &= bars
            tex = np.broadcast_to(col * light, (*mask.shape, 3))
        else:
            col = np.array([0.2 + 0.1 * r(), 0.38 + 0.15 * r(), 0.12 + 0.08 * r()], np.float32)
            leaf = rng.random(mask.shape, dtype=np.float32)
            tex = col * light * (0.7 + 0.5 * leaf)[..., None]
        self.paint(ys, xs, mask, tex.astype(np.float32), kind, np.broadcast_to(Z, mask.shape))

    def street_end(self) -> None:
        """A row of buildings across the street far away (blocks the horizon)."""
        r = self.rng.random
        z = 60 + 80 * r()
        k = self.f / z
        height = 8 + 20 * r()
        bx = self.box(0, self.W, self.yh + (self.hc - height) * k, self.yh + self.hc * k)
        if bx is None:
            return
        ys, xs, rr, cc = bx
        col = np.array([0.55, 0.55, 0.58], np.float32) * (0.7 + 0.4 * r())
        seg = np.floor((cc - self.cx) / (k * (8 + 10 * r())))
        shade = (0.85 + 0.3 * np.mod(seg * 0.37, 1.0))[..., None]
        V = (self.yh + self.hc * k - rr) / k
        win = (np.mod((cc - self.cx) / k, 2.5) < 1.2) & (np.mod(V, 3.0) > 1.6) & (V > 2.5)
        tex = np.where(win[..., None], np.float32(0.15), col * shade).astype(np.float32)
        mask = np.ones((rr.shape[0], cc.shape[1]), bool)
        self.paint(ys, xs, mask, np.broadcast_to(tex, (*mask.shape, 3)), BUILDING, z)
