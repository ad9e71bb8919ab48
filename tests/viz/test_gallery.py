"""The ``predict`` gallery (``index.html``): self-contained, its embedded maps decode to the score files within the
stated quantisation error, hostile names stay text; headless Chromium drives it (slider, keys, thumbnails,
scorer list) and the detected count it shows is Python's at the same threshold; a screenshot shows it drawn."""

from __future__ import annotations

import base64
import html
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tests.browser import FLAGS, Page, chromium

from anomalyseg.viz.gallery import (
    DEFAULT_QUANTILE,
    LEVELS,
    MAP_SIDE,
    PHOTO_SIDE,
    THUMB_SIDE,
    dequantise,
    detected_pixels,
    view_map,
    view_size,
    write_gallery,
)

NAMES = ["max_logit", "energy"]
THRESHOLDS = {"max_logit": 0.7, "energy": None}
#: A path and a stem that would run script if pasted into the page unescaped.
HOSTILE_PATH = ("a<", "script><img src=x onerror=window.pwned=1>", "&amp;\"'.png")
HOSTILE_STEM = "<b id=\"pwned\">&amp;{{DATA}}'"  # a file name (predict's stems are file names)


def page_data(page: str) -> dict:
    """The JSON the page's script reads."""
    found = re.search(r'<script type="application/json" id="gallery-data">(.*?)</script>', page, re.S)
    return json.loads(found.group(1))


def decode(uri: str, kind: str = "png") -> np.ndarray:
    assert uri.startswith(f"data:image/{kind};base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))))


def score_map(shape: tuple[int, int], seed: int) -> np.ndarray:
    """A smooth bump (the "anomaly") on a gradient, with noise: float32 in about [-0.5, 1.5]."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:shape[0], 0:shape[1]] / np.array(shape)[:, None, None]
    cy, cx = rng.uniform(0.3, 0.7, 2)
    bump = 1.3 * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / 0.02)
    return (bump + 0.3 * x - 0.4 + 0.05 * rng.standard_normal(shape)).astype(np.float32)


def write_case(out: Path, base: Path) -> list[dict]:
    """Three photos (blue-cyan gradients: no colour of the score colormap) with their score files, as predict
    writes them, and predict's rows: small (kept as is), wide (exactly halved), portrait with a hostile path."""
    cases = [(base / "small.png", "small", (150, 200)), (base / "wide.jpg", "wide", (360, 640)),
             (base.joinpath(*HOSTILE_PATH), HOSTILE_STEM, (700, 300))]
    rows = []
    for i, (path, stem, (h, w)) in enumerate(cases):
        path.parent.mkdir(parents=True, exist_ok=True)
        photo = np.zeros((h, w, 3), np.uint8)
        photo[..., 1] = np.linspace(40, 200, w, dtype=np.uint8)[None, :]
        photo[..., 2] = 255
        Image.fromarray(photo).save(path, format="PNG" if path.suffix == ".png" else "JPEG", quality=95)
        row = {"file": str(path), "stem": stem, "height": h, "width": w}
        for k, name in enumerate(NAMES):
            score = score_map((h, w), seed=10 * i + k)
            if i == 0 and k == 1:
                score[:3, :3] = np.nan  # unscored pixels count as the lowest score
            (out / "scores" / name).mkdir(parents=True, exist_ok=True)
            np.save(out / "scores" / name / f"{stem}.npy", score)
            t = THRESHOLDS[name]
            row[f"{name}_max"] = float(np.nanmax(score))
            row[f"{name}_anomaly_fraction"] = None if t is None else float((score > t).mean())
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def gallery(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("gallery")
    out = base / "pred"
    rows = write_case(out, base / "photos")
    page = write_gallery(out, rows, NAMES, THRESHOLDS)
    return {"out": out, "rows": rows, "page": page, "text": page.read_text(), "data": page_data(page.read_text())}


def test_page_is_self_contained(gallery):
    text = gallery["text"]
    assert not re.search(r'\ssrc="(?!data:)', text), "an image or script loaded from outside the page"
    for href in re.findall(r'\shref="([^"]*)"', text):  # data: URIs, and links to the run's own files
        assert href.startswith("data:") or not re.match(r"([a-z]+:|/|\.\.)", href), href
    assert "@import" not in text and "url(" not in text and "<link rel=\"stylesheet\"" not in text
    assert text.count("<script") == 2  # the JSON and the viewer, both inline
    assert len(re.findall(r'<button class="thumb"', text)) == 3
    for entry in gallery["data"]["images"]:
        photo = decode(entry["photo"], "jpeg")
        assert max(photo.shape[:2]) <= PHOTO_SIDE
    thumbs = re.findall(r'<img src="(data:image/jpeg;base64,[^"]+)"', text)
    assert len(thumbs) == 3 and all(max(decode(t, "jpeg").shape[:2]) <= THUMB_SIDE for t in thumbs)


def test_maps_round_trip_within_the_quantisation_step(gallery):
    out, data = gallery["out"], gallery["data"]
    for row, entry in zip(gallery["rows"], data["images"]):
        for name in NAMES:
            m = entry["maps"][name]
            q = decode(m["png"])
            assert q.dtype == np.uint8 and q.ndim == 2
            assert q.shape == view_size(row["height"], row["width"], MAP_SIDE)
            reference = view_map(np.load(out / "scores" / name / f"{row['stem']}.npy"))
            step = (m["hi"] - m["lo"]) / LEVELS
            assert (m["lo"], m["hi"]) == (float(reference.min()), float(reference.max()))
            assert np.abs(dequantise(q, m["lo"], m["hi"]) - reference).max() <= step / 2 * (1 + 1e-6)
            assert m["max"] == pytest.approx(row[f"{name}_max"])
    # independent reference of the downscaling: the wide map is exactly halved, 2x2 means
    native = np.load(out / "scores" / "energy" / "wide.npy").astype(np.float64)
    halved = native.reshape(180, 2, 320, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(view_map(native.astype(np.float32)), halved, atol=1e-5)
    # NaN counts as the lowest finite score
    small = view_map(np.load(out / "scores" / "energy" / "small.npy"))
    assert np.isfinite(small).all() and small[0, 0] == small.min()


def test_detected_count_matches_the_exact_map_within_half_a_step(gallery):
    """The page's count at a threshold lies between the exact downscaled map's counts half a step around it."""
    out, data = gallery["out"], gallery["data"]
    for row, entry in zip(gallery["rows"], data["images"]):
        m = entry["maps"]["max_logit"]
        q, reference = decode(m["png"]), view_map(np.load(out / "scores" / "max_logit" / f"{row['stem']}.npy"))
        half = (m["hi"] - m["lo"]) / LEVELS / 2 * (1 + 1e-6)
        for t in np.linspace(m["lo"], m["hi"], 9):
            shown = detected_pixels(q, m["lo"], m["hi"], t)
            assert (reference > t + half).sum() <= shown <= (reference > t - half).sum()
        assert detected_pixels(q, m["lo"], m["hi"], m["hi"]) == 0 < detected_pixels(q, m["lo"], m["hi"], 0.7)


def test_slider_range_and_initial_threshold(gallery):
    data = gallery["data"]
    assert data["initial"]["max_logit"] == data["run"]["max_logit"] == 0.7
    assert data["run"]["energy"] is None
    for name in NAMES:
        lo, hi = data["range"][name]
        assert lo == min(e["maps"][name]["lo"] for e in data["images"])
        assert hi == max(e["maps"][name]["hi"] for e in data["images"])
    pooled = np.concatenate([dequantise(decode(e["maps"]["energy"]["png"]), e["maps"]["energy"]["lo"],
                                        e["maps"]["energy"]["hi"]).ravel() for e in data["images"]])
    assert (pooled > data["initial"]["energy"]).mean() == pytest.approx(1 - DEFAULT_QUANTILE, abs=0.005)


def test_hostile_names_stay_text(gallery):
    text, row = gallery["text"], gallery["rows"][2]
    assert "<img src=x" not in text and '<b id="pwned">' not in text
    assert text.count("</script>") == 2
    titles = [html.unescape(t) for t in re.findall(r'<button class="thumb"[^>]* title="([^"]*)"', text)]
    assert titles[2] == row["file"]
    entry = gallery["data"]["images"][2]
    assert (entry["file"], entry["stem"]) == (row["file"], HOSTILE_STEM)  # the {{DATA}} in it is not expanded


def test_cap_lists_the_rest(gallery, tmp_path):
    out, rows = tmp_path / "pred", gallery["rows"]
    shutil.copytree(gallery["out"] / "scores", out / "scores")
    capped = write_gallery(out, rows, NAMES, THRESHOLDS, max_images=1).read_text()
    assert len(page_data(capped)["images"]) == 1 and capped.count('<button class="thumb"') == 1
    assert "The first 1 images are embedded below; the other 2 are listed" in capped
    listed = re.search(r'<section id="rest">(.*?)</section>', capped, re.S).group(1)
    assert 'href="overlays/max_logit/wide.png"' in listed and '<b id="pwned">' not in listed
    assert 'href="overlays/energy/%3Cb%20id%3D%22pwned%22%3E%26amp%3B%7B%7BDATA%7D%7D%27.png"' in listed
    empty = write_gallery(out, rows, NAMES, THRESHOLDS, max_images=0).read_text()
    assert page_data(empty)["images"] == [] and "the other 3 are listed" in empty


def frac_count(page: Page) -> tuple[int, int]:
    text = page.js("document.getElementById('frac').textContent")
    found = re.search(r"\((\d+) / (\d+) px above", text)
    assert found, text
    return int(found.group(1)), int(found.group(2))


def test_chromium_drives_slider_keys_thumbnails_and_scorer(gallery, tmp_path):
    chromium()
    data = gallery["data"]

    def expected(i: int, name: str, t: float) -> int:
        m = data["images"][i]["maps"][name]
        return detected_pixels(decode(m["png"]), m["lo"], m["hi"], t)

    def shown(key: str) -> None:
        page.wait_for(f"document.body.dataset.shown === {json.dumps(key)}")

    with Page(tmp_path / "profile", gallery["page"].as_uri()) as page:
        shown("0:max_logit")
        size = decode(data["images"][0]["maps"]["max_logit"]["png"]).size
        assert frac_count(page) == (expected(0, "max_logit", 0.7), size)
        overlay = page.rect("#overlay")
        before = page.screenshot(overlay).astype(int)
        slider = page.rect("#slider")  # a real click a quarter along the slider: a lower threshold
        page.click(slider["x"] + 0.25 * slider["width"], slider["y"] + slider["height"] / 2)
        value = float(page.js("document.getElementById('slider').value"))
        assert value < 0.7 and frac_count(page) == (expected(0, "max_logit", value), size)
        assert expected(0, "max_logit", value) > expected(0, "max_logit", 0.7)
        after = page.screenshot(overlay).astype(int)
        assert (np.abs(after - before).sum(axis=2) > 30).mean() > 0.05, "the overlay did not change"

        heading = page.rect("h1")  # focus off the slider, then the right arrow shows the next image
        page.click(heading["x"] + 3, heading["y"] + 3)
        page.key("ArrowRight", 39)
        shown("1:max_logit")
        assert frac_count(page)[0] == expected(1, "max_logit", value)  # the scorer's threshold is kept

        thumb = page.rect('button.thumb[data-i="2"]')
        page.click(thumb["x"] + thumb["width"] / 2, thumb["y"] + thumb["height"] / 2)
        shown("2:max_logit")
        assert page.js("document.getElementById('file').textContent") == gallery["rows"][2]["file"]
        assert page.js("document.getElementById('name').textContent") == HOSTILE_STEM
        assert page.js("window.pwned === undefined && document.getElementById('pwned') === null")

        page.js("document.getElementById('scorer').focus()")
        page.key("ArrowDown", 40)  # the next scorer, at its own initial threshold
        shown("2:energy")
        assert frac_count(page)[0] == expected(2, "energy", data["initial"]["energy"])
    assert page.errors == []


def test_headless_screenshot_shows_photo_maps_and_thumbnails(gallery, tmp_path):
    shot = tmp_path / "shot.png"
    cmd = [chromium(), *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
           "--window-size=1400,900", "--virtual-time-budget=10000", gallery["page"].as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.is_file(), f"chromium wrote no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}"
    px = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert px.shape == (900, 1400, 3)
    photo = (px[..., 2] >= 230) & (px[..., 0] <= 25)  # the test photos' blue-cyan
    selected = (np.abs(px - (0, 119, 204)) <= 3).all(axis=2)  # the shown image's thumbnail border
    top = np.nonzero(selected.any(axis=1))[0].min()
    assert selected.sum() > 200 and photo[top:].sum() > 3000, "no thumbnails with photos"
    lut = np.asarray(page_data(gallery["text"])["lut"]).reshape(-1, 3)[40:]  # past its near-black end
    sample = px[:top:2, ::2]
    nearest = np.min([np.abs(sample - c).sum(axis=2) for c in lut], axis=0)
    colormap = (nearest <= 12) & ~((sample[..., 2] >= 230) & (sample[..., 0] <= 25))
    third = sample.shape[1] // 3
    assert photo[:top, :px.shape[1] // 3].sum() > 10000, "no photo in the viewer"
    assert colormap[:, third:2 * third].sum() > 3000, "no score map drawn"
    right = sample[:, 2 * third:]
    assert colormap[:, 2 * third:].sum() < colormap[:, third:2 * third].sum()  # the overlay mixes, not the map
    assert (~((right[..., 2] >= 230) & (right[..., 0] <= 25)) & (right.std(axis=2) > 20)).sum() > 3000, \
        "no overlay drawn"
