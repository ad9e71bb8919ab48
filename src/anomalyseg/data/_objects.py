"""Sprites standing on the ground of a :class:`~anomalyseg.data._scene.Scene`: cars, pedestrians, poles and
signs, trees, street furniture ("other") and, for the test split only, anomalies.

Every sprite is defined in metric coordinates around its foot point: U = metres to the right, V = metres above
the ground; the perspective scale comes from the foot point's depth.
"""

from __future__ import annotations

import math

import numpy as np

from anomalyseg.data._scene import (
    _ANOMALY_HUES,
    _CAR_COLOURS,
    ANOMALY,
    CAR,
    OTHER,
    PEDESTRIAN,
    POLE,
    SIGN,
    VEGETATION,
    Scene,
    _hsv,
)


def _frame(s: Scene, x: float, z: float, half_w: float, height: float):
    """Pixel box around a sprite of ``half_w`` x ``height`` metres at ground point (x, z) -> local U, V."""
    xc, yb, k = s.project(x, z)
    bx = s.box(xc - half_w * k, xc + half_w * k + 1, yb - height * k, yb + 1)
    if bx is None:
        return None
    ys, xs, rr, cc = bx
    return ys, xs, (cc - xc) / k, (yb - rr) / k


def car(s: Scene, x: float, z: float) -> None:
    r = s.rng.random
    wd, ht = 1.65 + 0.35 * r(), 1.3 + 0.35 * r()
    fr = _frame(s, x, z, wd / 2, ht)
    if fr is None:
        return
    ys, xs, U, V = fr
    au = np.abs(U)
    half = wd / 2
    wheels = (au > half - 0.45) & (au < half - 0.08) & (V < 0.38)
    body = (au < half) & (V >= 0.25) & (V < 0.95)
    cab_half = half * (0.88 - 0.22 * np.clip((V - 0.95) / (ht - 0.95), 0, 1))
    cabin = (au < cab_half) & (V >= 0.95) & (ht > V)
    mask = wheels | body | cabin
    col = _CAR_COLOURS[s.rng.integers(len(_CAR_COLOURS))] * (0.85 + 0.3 * r())
    tex = col * (0.8 + 0.3 * np.clip(V / ht, 0, 1))[..., None]
    window = cabin & (V > 1.0) & (ht - 0.07 > V) & (au < cab_half - 0.08)
    lights = (V > 0.7) & (V < 0.85) & (au > half - 0.32) & (au < half - 0.05)
    plate = (au < 0.25) & (V > 0.42) & (V < 0.56)
    tex = np.where(window[..., None], np.float32([0.12, 0.15, 0.2]), tex)
    tex = np.where(lights[..., None], np.float32([0.8, 0.1, 0.08]), tex)
    tex = np.where(plate[..., None], np.float32([0.85, 0.85, 0.8]), tex)
    tex = np.where(wheels[..., None], np.float32([0.05, 0.05, 0.05]), tex)
    s.paint(ys, xs, mask, tex.astype(np.float32), CAR, z)


def pedestrian(s: Scene, x: float, z: float) -> None:
    r = s.rng.random
    ph = 1.55 + 0.35 * r()
    fr = _frame(s, x, z, 0.45, ph)
    if fr is None:
        return
    ys, xs, U, V = fr
    stride = (r() - 0.5) * 0.5 * np.clip((0.48 * ph - V) / (0.48 * ph), 0, 1)
    legs = (0.48 * ph > V) & ((np.abs(U + 0.09 + stride) < 0.075) | (np.abs(U - 0.09 - stride) < 0.075))
    torso = (0.46 * ph <= V) & (0.82 * ph > V) & (np.abs(U) < 0.2)
    arms = (0.5 * ph <= V) & (0.8 * ph > V) & (np.abs(U) >= 0.2) & (np.abs(U) < 0.27)
    head = (U / 0.1) ** 2 + ((V - 0.91 * ph) / 0.12) ** 2 < 1
    neck = (np.abs(U) < 0.05) & (0.8 * ph <= V) & (0.86 * ph > V)
    mask = legs | torso | arms | head | neck
    shirt = np.float32(s.rng.random(3) * 0.7 + 0.1)
    trousers = np.float32([0.15, 0.2, 0.4] if r() < 0.5 else s.rng.random(3) * 0.35)
    skin = np.float32([0.92, 0.72, 0.58]) * (0.5 + 0.5 * r())
    tex = np.empty((*mask.shape, 3), np.float32)
    tex[:] = shirt
    tex[legs] = trousers
    tex[arms] = shirt * 0.8
    tex[head | neck] = skin
    tex[head & (0.94 * ph < V)] = np.float32([0.1, 0.07, 0.05]) + 0.3 * r()
    s.paint(ys, xs, mask, tex, PEDESTRIAN, z)


def pole(s: Scene, x: float, z: float, side: int) -> None:
    r = s.rng.random
    height, pw = 3.0 + 3.5 * r(), 0.15 + 0.15 * r()
    lamp = r() < 0.3
    reach = 1.6 if lamp else 0.0
    fr = _frame(s, x - side * reach / 2, z, reach / 2 + 0.6, height + 0.1)
    if fr is None:
        return
    ys, xs, U, V = fr
    U = U - side * reach / 2  # back to the pole's axis
    mask = (np.abs(U) < pw / 2) & (height > V)
    if lamp:
        mask |= (height - 0.15 < V) & (height > V) & (U * -side > 0) & (U * -side < reach)
    col = np.float32([0.45, 0.46, 0.48] if r() < 0.6 else [0.12, 0.18, 0.14]) * (0.8 + 0.4 * r())
    s.paint(ys, xs, mask, col, POLE, z)
    if lamp or r() < 0.35:
        return
    # a sign on the pole: circle, triangle, diamond or rectangle
    size, hs = 0.55 + 0.3 * r(), min(height - 0.2, 1.9 + 0.8 * r())
    du, dv = U / (size / 2), (V - hs) / (size / 2)
    shape = s.rng.integers(4)
    if shape == 0:
        rho = np.sqrt(du**2 + dv**2)
        plate, inner = rho < 1, rho < 0.72
    elif shape == 1:
        plate = (dv > -0.8) & (dv < 0.9) & (np.abs(du) < (0.9 - dv) * 0.62)
        inner = (dv > -0.55) & (dv < 0.55) & (np.abs(du) < (0.55 - dv) * 0.62 - 0.05)
    elif shape == 2:
        plate, inner = np.abs(du) + np.abs(dv) < 1, np.abs(du) + np.abs(dv) < 0.8
    else:
        plate, inner = (np.abs(du) < 1) & (np.abs(dv) < 0.65), (np.abs(du) < 0.88) & (np.abs(dv) < 0.53)
    scheme = [([0.8, 0.1, 0.1], [0.92, 0.92, 0.9]), ([0.1, 0.25, 0.7], [0.1, 0.25, 0.7]),
              ([0.1, 0.1, 0.1], [0.9, 0.78, 0.1]), ([0.1, 0.35, 0.7], [0.92, 0.92, 0.9]),
              ([0.1, 0.45, 0.2], [0.92, 0.92, 0.9])][s.rng.integers(5)]
    tex = np.where(inner[..., None], np.float32(scheme[1]), np.float32(scheme[0])) * (0.8 + 0.3 * r())
    s.paint(ys, xs, plate, tex.astype(np.float32), SIGN, z - 0.05)


def tree(s: Scene, x: float, z: float) -> None:
    r = s.rng.random
    trunk_h, cr = 1.6 + 1.4 * r(), 1.0 + 1.4 * r()
    fr = _frame(s, x, z, cr * 1.3, trunk_h + 2.1 * cr)
    if fr is None:
        return
    ys, xs, U, V = fr
    trunk = (np.abs(U) < 0.1 + 0.08 * r()) & (trunk_h + cr * 0.5 > V)
    crown = np.zeros(trunk.shape, bool)
    for _ in range(3):
        cu, cv, rad = (r() - 0.5) * cr * 0.8, trunk_h + cr * (0.8 + 0.4 * r()), cr * (0.6 + 0.4 * r())
        crown |= ((U - cu) / rad) ** 2 + ((V - cv) / (rad * (0.9 + 0.4 * r()))) ** 2 < 1
    autumn = r() < 0.15
    leaf = np.float32([0.55, 0.4, 0.12] if autumn else [0.18 + 0.1 * r(), 0.36 + 0.16 * r(), 0.1 + 0.06 * r()])
    noise = s.rng.random(crown.shape, dtype=np.float32)
    tex = leaf * (0.6 + 0.6 * noise)[..., None]
    tex = np.where((trunk & ~crown)[..., None], np.float32([0.35, 0.24, 0.15]), tex)
    s.paint(ys, xs, trunk | crown, tex.astype(np.float32), VEGETATION, z)


def furniture(s: Scene, x: float, z: float) -> None:
    """Street furniture labelled "other": a bin, a bench or a stack of boxes."""
    r = s.rng.random
    kind = s.rng.integers(3)
    fr = _frame(s, x, z, 0.9, 1.3)
    if fr is None:
        return
    ys, xs, U, V = fr
    au = np.abs(U)
    if kind == 0:
        mask = ((au < 0.28) & (V < 0.95)) | ((au < 0.32) & (V >= 0.95) & (V < 1.08))
        col = np.float32([[0.15, 0.3, 0.2], [0.3, 0.3, 0.32], [0.15, 0.2, 0.45]][s.rng.integers(3)])
        tex = col * (0.85 + 0.3 * (np.mod(U * 8, 1.0) < 0.5))[..., None]
    elif kind == 1:
        seat = (au < 0.85) & (V > 0.4) & (V < 0.5)
        back = (au < 0.85) & (V > 0.6) & (V < 0.9) & (np.mod(V, 0.1) < 0.065)
        legs = (au > 0.62) & (au < 0.72) & (V < 0.9)
        mask = seat | back | legs
        tex = np.where(legs[..., None], np.float32([0.1, 0.1, 0.1]), np.float32([0.5, 0.33, 0.18]))
    else:
        w1, w2 = 0.35 + 0.2 * r(), 0.25 + 0.15 * r()
        b1 = (np.abs(U + 0.15) < w1) & (V < 0.55)
        b2 = (np.abs(U - 0.1) < w2) & (V >= 0.55) & (V < 0.95)
        mask = b1 | b2
        tex = np.float32([0.7, 0.55, 0.35]) * np.where(b2[..., None], 0.85, 1.0)
        tex = tex * (1 - 0.3 * (np.abs(V - 0.3) < 0.03))[..., None]
    tex = np.broadcast_to(tex * (0.8 + 0.4 * r()), (*mask.shape, 3)).astype(np.float32)
    s.paint(ys, xs, mask, tex, OTHER, z)


# -- anomalies (test split only) ------------------------------------------------------------------------

_FILL = (0.46, 0.51, 0.7, 0.7, 0.6)  # share of the bounding disc each anomaly silhouette covers


def _hsv_map(h: np.ndarray, s: float, v: float) -> np.ndarray:
    """Vectorised HSV -> RGB for a hue map ``h`` in [0, 1) (rainbow textures)."""
    k = np.mod(np.stack([h * 6 + 5, h * 6 + 3, h * 6 + 1], axis=-1), 6)
    return (v - v * s * np.clip(np.minimum(k, 4 - k), 0, 1)).astype(np.float32)


def anomaly(s: Scene, x: float, z: float, area_px: float) -> None:
    """An unknown object standing at (x, z) covering about ``area_px`` pixels (before occlusion)."""
    rng, r = s.rng, s.rng.random
    xc, yb, _ = s.project(x, z)
    aspect = 0.65 + 0.9 * r()
    shape, phase = rng.integers(5), r() * 2 * math.pi
    rx = math.sqrt(area_px / (math.pi * _FILL[shape] * aspect))
    ry = rx * aspect
    yc = yb - ry * (0.9 + 0.3 * r())
    bx = s.box(xc - rx, xc + rx + 1, yc - ry, yc + ry + 1)
    if bx is None:
        return
    ys, xs, rr, cc = bx
    dx, dy = (cc - xc) / rx, (rr - yc) / ry
    rho, th = np.sqrt(dx**2 + dy**2), np.arctan2(dy, dx)
    n = int(rng.integers(3, 8))
    if shape == 0:  # lobed flower
        mask = rho < 0.62 + 0.38 * np.cos(n * th + phase)
    elif shape == 1:  # star
        tw = np.abs(np.mod(n * (th + phase) / (2 * math.pi), 1.0) * 2 - 1)
        mask = rho < 0.38 + 0.62 * tw
    elif shape == 2:  # ring
        mask = (rho < 1) & (rho > 0.45 + 0.15 * r())
    elif shape == 3:  # irregular blob
        edge = 0.82 + sum(0.1 * r() * np.sin(k * th + 6 * r()) for k in range(2, 6))
        mask = rho < edge
    else:  # rotated cross
        c, si = math.cos(phase), math.sin(phase)
        u, v = dx * c + dy * si, -dx * si + dy * c
        mask = (rho < 1) & ((np.abs(u) < 0.28) | (np.abs(v) < 0.28))
    h1 = float(_ANOMALY_HUES[rng.integers(len(_ANOMALY_HUES))])
    a = _hsv(h1, 0.8 + 0.2 * r(), 0.75 + 0.25 * r())
    b = _hsv(float(np.mod(h1 + 0.3 + 0.4 * r(), 1.0)), 0.7 + 0.3 * r(), 0.6 + 0.4 * r()) if r() < 0.6 \
        else np.float32([1.0, 1.0, 1.0] if r() < 0.5 else [0.05, 0.05, 0.05])
    cells = 2.5 + 5 * r()
    pattern = rng.integers(5)
    if pattern == 0:
        sel = np.mod(np.floor(dx * cells) + np.floor(dy * cells), 2) < 1
    elif pattern == 1:
        sel = np.mod((dx * math.cos(phase) + dy * math.sin(phase)) * cells, 1.0) < 0.5
    elif pattern == 2:
        sel = np.hypot(np.mod(dx * cells, 1.0) - 0.5, np.mod(dy * cells, 1.0) - 0.5) < 0.3
    elif pattern == 3:
        sel = np.mod(rho * cells, 1.0) < 0.5
    else:
        sel = None
    if sel is None:
        tex = _hsv_map(np.mod(th / (2 * math.pi) + rho * 0.5 + phase, 1.0), 0.9, 0.95)
    else:
        tex = np.where(sel[..., None], a, b).astype(np.float32)
    s.paint(ys, xs, mask, tex, ANOMALY, z)
