"""The procedural outlier family (training, outlier exposure) is disjoint from the synthetic test anomalies:
neither imports the other, no function of the package runs for both, and their colours do not overlap."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import numpy as np
from matplotlib.colors import rgb_to_hsv

import anomalyseg
from anomalyseg.data import _objects
from anomalyseg.data._scene import ANOMALY, Scene
from anomalyseg.data.outliers.procedural import HUE_BANDS, SATURATION, ProceduralSource

PKG = Path(anomalyseg.__file__).resolve().parent
TEST_FAMILY = ("data/_scene.py", "data/_objects.py", "data/synthetic.py")
OUTLIER_FAMILY = tuple(p.relative_to(PKG).as_posix() for p in sorted((PKG / "data" / "outliers").glob("*.py")))


def _imports(relpath: str) -> set[str]:
    """Every module a file imports, at any depth (function-level imports included), relative ones resolved."""
    package = ("anomalyseg/" + relpath).rsplit("/", 1)[0].replace("/", ".")
    names: set[str] = set()
    for node in ast.walk(ast.parse((PKG / relpath).read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names |= {base} | {f"{base}.{a.name}" for a in node.names}
    return names


def test_neither_family_imports_the_other():
    assert "data/outliers/procedural.py" in OUTLIER_FAMILY
    test_modules = {"anomalyseg.data." + Path(p).stem for p in TEST_FAMILY}
    for relpath in OUTLIER_FAMILY:
        imported = _imports(relpath)
        assert not {m for m in imported for t in test_modules if m == t or m.startswith(t + ".")}, relpath
    for relpath in TEST_FAMILY:
        assert not {m for m in _imports(relpath) if m.startswith("anomalyseg.data.outliers")}, relpath
    assert "anomalyseg.data._scene" in _imports("data/_objects.py")  # the check sees real imports


def _outlier_pixels(n: int = 150) -> np.ndarray:
    src, rng = ProceduralSource(), np.random.default_rng(0)
    cuts = [src.sample(rng, 40) for _ in range(n)]
    return np.concatenate([c.rgb[c.alpha >= 0.5] for c in cuts]) / 255.0


def _anomaly_pixels(n: int = 60) -> np.ndarray:
    pixels = []
    for seed in range(n):
        scene = Scene(np.random.default_rng(seed), 96, 64)
        _objects.anomaly(scene, 0.0, 8.0, 600.0)
        pixels.append(scene.img[scene.lab == ANOMALY])
    return np.clip(np.concatenate(pixels), 0, 1)


def _traced(draw) -> set[tuple[str, str]]:
    """(file, qualified name) of every anomalyseg function that runs while ``draw()`` does."""
    seen: set[tuple[str, str]] = set()

    def profile(frame, event, arg):
        if event == "call":
            path = Path(frame.f_code.co_filename)
            if path.is_relative_to(PKG):
                seen.add((path.relative_to(PKG).as_posix(), getattr(frame.f_code, "co_qualname", frame.f_code.co_name)))

    sys.setprofile(profile)
    try:
        draw()
    finally:
        sys.setprofile(None)
    return seen


def test_no_function_of_the_package_runs_for_both_families():
    outliers, anomalies = _traced(lambda: _outlier_pixels(80)), _traced(lambda: _anomaly_pixels(40))
    assert ("data/_objects.py", "anomaly") in anomalies and ("data/_scene.py", "Scene.__init__") in anomalies
    assert ("data/outliers/procedural.py", "ProceduralSource.sample") in outliers
    assert {f for f, _ in outliers} <= set(OUTLIER_FAMILY)  # nothing outside the outliers package runs
    assert not outliers & anomalies, outliers & anomalies


def test_colours_of_the_two_families_do_not_overlap():
    out, anom = rgb_to_hsv(_outlier_pixels()), rgb_to_hsv(_anomaly_pixels())

    def hist(hsv: np.ndarray) -> np.ndarray:  # hue x saturation, as shares of the pixels
        counts, _, _ = np.histogram2d(hsv[:, 0], hsv[:, 1], bins=(24, 10), range=((0, 1), (0, 1)))
        return counts / counts.sum()

    assert np.minimum(hist(out), hist(anom)).sum() < 0.05
    assert (anom[:, 1] >= 0.7).mean() > 0.6  # the test anomalies are mostly saturated ...
    assert SATURATION[0] - 0.03 <= out[:, 1].min() and out[:, 1].max() <= SATURATION[1] + 0.03  # ... these muted
    in_band = np.zeros(len(out), bool)
    for lo, hi in HUE_BANDS:
        in_band |= (out[:, 0] >= lo - 0.02) & (out[:, 0] <= hi + 0.02)
    assert in_band.mean() > 0.99
