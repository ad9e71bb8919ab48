"""Synthetic StreetHazards-format data: procedurally drawn road scenes in the official tree layout.

``write_synthetic(out, train=N, val=N, test=N, size=(W, H), seed=S)`` writes ``streethazards_train/train``
(``train.odgt``, ``validation.odgt``, ``images|annotations/training/t1-3``, ``.../validation/t4``) and
``streethazards_test/test`` (``test.odgt``, ``images|annotations/test/t5|t6``) with 8-bit label PNGs holding
the official values 1..14, so :class:`~anomalyseg.data.StreetHazards` reads it with no special case.
Anomalies (value 14) appear in the test split only: in every test image, 0.3-5% of the pixels, 1-3 objects
whose shapes and textures are never drawn in train/val. Every image depends only on (seed, split, index), so
a larger tree extends a smaller one and the worker count never changes the output.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from anomalyseg.data import _objects as obj
from anomalyseg.data._scene import ANOMALY, BUILDING, FENCE, VEGETATION, WALL, Z_FAR, Scene
from anomalyseg.data.info import STREETHAZARDS
from anomalyseg.errors import UserError
from anomalyseg.files import check_output
from anomalyseg.limits import MAX_SYNTH_SIDE

#: Pixel share of anomalies per test image (inclusive bounds, checked after drawing).
ANOMALY_SHARE = (0.003, 0.05)
_SPLIT_CODE = {"train": 1, "val": 2, "test": 3}
_TOWNS = {"train": ("t1-3",), "val": ("t4",), "test": ("t5", "t6")}
_README = """StreetHazards-format SYNTHETIC data written by anomalyseg (anomalyseg.data.synthetic).

Procedurally drawn road scenes; not the real dataset. Same folder layout, .odgt lists and label values
(1..14, value - 1 = class id; 14 = anomaly, test split only) as the official release.
seed={seed} size={w}x{h} train={train} val={val} test={test}
"""


def _side_facades(s: Scene, side: int) -> None:
    """Segments of buildings / walls / fences / hedges along one side of the street, back layer first."""
    r = s.rng.random
    edge = abs(s.edge(side))
    z = 2.0
    front: list[tuple] = []
    back: list[tuple] = []
    while z < Z_FAR:
        length = 8 + 30 * r()
        z1 = min(z + length, Z_FAR)
        u = r()
        if u < 0.45:
            front.append((side, side * (edge + 3 * r() ** 2), z, z1, 6 + 20 * r(), BUILDING))
        elif u < 0.9:
            kind, height = [(WALL, 1.0 + 2.0 * r()), (FENCE, 1.0 + 1.2 * r()), (VEGETATION, 0.8 + 1.4 * r())][
                s.rng.integers(3)]
            front.append((side, side * (edge + 0.4 * r()), z, z1, height, kind))
            if r() < 0.6:
                back.append((side, side * (edge + 4 + 8 * r()), z, z1, 6 + 20 * r(), BUILDING))
        z = z1
    for args in back + front:
        s.facade(*args)


def _compose(s: Scene, anomalies: bool) -> None:
    rng, r = s.rng, s.rng.random
    s.sky()
    s.ground()
    if r() < 0.5:
        s.street_end()
    for side in (-1, 1):
        _side_facades(s, side)
    half = s.road_w / 2
    items: list[tuple[float, int, tuple]] = []  # (depth, order, call)
    lanes = max(1, round(s.road_w / 3.3))
    for _ in range(rng.integers(0, 6)):
        lane = rng.integers(lanes)
        x = -half + (lane + 0.5) * s.road_w / lanes + (r() - 0.5) * 0.6
        if r() < 0.25:
            x = rng.choice([-1, 1]) * (half - 1.1)
        items.append((5 + 65 * r(), 0, (obj.car, x)))
    for _ in range(rng.integers(0, 6)):
        side = rng.choice([-1, 1])
        sw = s.sw[0 if side < 0 else 1]
        x = side * (half + 0.3 + (sw - 0.6) * r()) if r() > 0.1 else (r() - 0.5) * s.road_w * 0.8
        items.append((4 + 36 * r(), 1, (obj.pedestrian, x)))
    for _ in range(rng.integers(2, 8)):
        side = int(rng.choice([-1, 1]))
        items.append((4 + 76 * r(), 2, (obj.pole, side * (half + 0.35), side)))
    for _ in range(rng.integers(0, 7)):
        side = rng.choice([-1, 1])
        edge = abs(s.edge(side))
        x = side * (edge - 0.6 if r() < 0.5 else edge + 0.5 + 3.5 * r())
        items.append((5 + 85 * r(), 3, (obj.tree, x)))
    for _ in range(rng.integers(0, 4)):
        side = rng.choice([-1, 1])
        sw = s.sw[0 if side < 0 else 1]
        items.append((4 + 30 * r(), 4, (obj.furniture, side * (half + 0.5 + (sw - 0.8) * r()))))
    if anomalies:
        _place_anomalies(s, items)
    for z, _, call in sorted(items, key=lambda it: (-it[0], it[1])):
        fn, *args = call
        fn(s, args[0], z, *args[1:])


def _place_anomalies(s: Scene, items: list) -> None:
    rng, r = s.rng, s.rng.random
    lo, hi = ANOMALY_SHARE
    count = int(rng.choice([1, 1, 2, 2, 3]))
    total = s.W * s.H * math.exp(math.log(lo * 1.7) + (math.log(hi * 0.7) - math.log(lo * 1.7)) * r())
    shares = rng.dirichlet(np.full(count, 3.0))
    z_visible = s.hc * s.f / max(s.H - s.yh - 2, 1.0) * 1.05
    half = s.road_w / 2
    for share in shares:
        area = total * float(share)
        radius = math.sqrt(area / math.pi)
        z_lo, z_hi = max(z_visible, 0.2 * s.f / radius, 4.0), min(2.0 * s.f / radius, 45.0)
        z = z_lo + (z_hi - z_lo) * r() if z_hi > z_lo else z_lo
        if r() < 0.75:
            x = (r() - 0.5) * 2 * (half - 0.4)
        else:
            side = rng.choice([-1, 1])
            x = side * (half + 0.3 + (s.sw[0 if side < 0 else 1] - 0.6) * r())
        items.append((z, 5, (obj.anomaly, x, area)))


def _finish(s: Scene) -> np.ndarray:
    """Fog, global lighting, colour temperature and sensor grain -> uint8 RGB."""
    r = s.rng.random
    img = s.img
    if r() < 0.5:
        fog = np.float32([0.75, 0.77, 0.8]) * (0.8 + 0.3 * r())
        a = ((0.25 + 0.45 * r()) * (1 - np.exp(-s.depth / (40 + 80 * r()))))[..., None]
        img = img * (1 - a) + fog * a
    t = (r() - 0.5) * 0.2
    gain = np.float32([1 + t, 1.0, 1 - t]) * (0.7 + 0.5 * r())
    grain = (s.rng.random((s.H, s.W), dtype=np.float32) - 0.5) * (0.02 + 0.05 * r())
    img = img * gain + grain[..., None]
    return (np.clip(img, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)


def render(seed: int, split: str, index: int, size: tuple[int, int] = (480, 270)) -> tuple[np.ndarray, np.ndarray]:
    """Draw image ``index`` of ``split``: ``(rgb uint8 (H, W, 3), label file values uint8 (H, W))``."""
    if split not in _SPLIT_CODE:
        raise ValueError(f"split must be one of {tuple(_SPLIT_CODE)}, got {split!r}")
    width, height = size
    rng = np.random.default_rng([int(seed), _SPLIT_CODE[split], int(index)])
    anomalies = split == "test"
    for _ in range(20):
        scene = Scene(rng, width, height)
        scene.depth[:] = 0.0  # sky: no fog
        _compose(scene, anomalies)
        share = float(np.count_nonzero(scene.lab == ANOMALY)) / scene.lab.size
        if not anomalies or ANOMALY_SHARE[0] <= share <= ANOMALY_SHARE[1]:
            return _finish(scene), scene.lab
    raise RuntimeError(f"could not place anomalies in test image {index} (seed {seed}, size {size})")


def _paths(split: str, index: int, count: int) -> tuple[str, str]:
    layout = STREETHAZARDS.splits[split]
    towns = _TOWNS[split]
    town = towns[0] if len(towns) == 1 or index <= math.ceil(count * 1024 / 1500) else towns[1]
    return f"{layout.images}/{town}/{index}.png", f"{layout.annotations}/{town}/{index}.png"


def _write_one(job: tuple[Path, int, str, int, int, tuple[int, int]]) -> None:
    split_dir, seed, split, index, count, size = job
    rgb, lab = render(seed, split, index, size)
    img_rel, lab_rel = _paths(split, index, count)
    for rel, arr in ((img_rel, rgb), (lab_rel, lab)):
        path = split_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(arr).save(path, compress_level=1)


def write_synthetic(
    out_dir: str | Path,
    train: int = 40,
    val: int = 10,
    test: int = 10,
    size: tuple[int, int] = (480, 270),
    seed: int = 0,
    workers: int = 1,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic tree under ``out_dir`` (returned); ``size`` is (W, H).

    An existing non-empty ``out_dir`` is refused unless ``overwrite`` (then only the ``streethazards_train``
    and ``streethazards_test`` folders in it are replaced). ``workers`` > 1 draws in parallel processes.
    """
    out = Path(out_dir)
    counts = {"train": int(train), "val": int(val), "test": int(test)}
    if min(counts.values()) < 0 or sum(counts.values()) == 0:
        raise UserError(f"image counts must be >= 0 and not all zero, got {counts}")
    width, height = (int(v) for v in size)
    if width < 32 or height < 32:
        raise UserError(f"size must be at least 32x32, got {width}x{height}")
    if max(width, height) > MAX_SYNTH_SIDE:
        raise UserError(f"size must be at most {MAX_SYNTH_SIDE}x{MAX_SYNTH_SIDE}, got {width}x{height}")
    if out.exists() and not out.is_dir():
        raise UserError(f"output path exists and is not a folder: {out}")
    check_output(out, "--out", folder=True)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise UserError(f"output folder is not empty: {out} (choose another folder, or --force to replace)")
        for name in ("streethazards_train", "streethazards_test"):
            shutil.rmtree(out / name, ignore_errors=True)
    jobs = []
    for split, n in counts.items():
        layout = STREETHAZARDS.splits[split]
        split_dir = out / layout.archive_folder / layout.inner
        if n == 0:
            continue
        split_dir.mkdir(parents=True, exist_ok=True)
        records = []
        for i in range(1, n + 1):
            img_rel, lab_rel = _paths(split, i, n)
            records.append({"fpath_img": img_rel, "fpath_segm": lab_rel, "width": width,
                            "dbName": STREETHAZARDS.name, "height": height})
            jobs.append((split_dir, int(seed), split, i, n, (width, height)))
        records.sort(key=lambda rec: rec["fpath_img"])  # the official lists are sorted as strings
        (split_dir / layout.odgt).write_text(json.dumps(records), encoding="utf-8")
        (split_dir / "README.txt").write_text(
            _README.format(seed=seed, w=width, h=height, **counts), encoding="utf-8")
    workers = max(1, min(int(workers), os.cpu_count() or 1, len(jobs)))
    if workers == 1:
        for job in jobs:
            _write_one(job)
    else:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_write_one, jobs, chunksize=max(1, len(jobs) // (8 * workers))))
    meta = {"generator": "anomalyseg.data.synthetic", "seed": int(seed), "size": [width, height], **counts}
    (out / "SYNTHETIC.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out
