"""The gallery of ``anomalyseg predict``: ``DIR/index.html``, one self-contained page (no server, no internet, no
external font or script) to browse a prediction folder and re-threshold its score maps in the browser.

The page shows a grid of thumbnails and, for the selected image, the photo, the score map and the detection
overlay (photo, translucent score, pixels above the threshold tinted and outlined), with a scorer selector and
a threshold slider that re-thresholds the map live and shows the detected fraction; arrow keys move between
images. Everything is inline: photos as JPEG data URIs (longest side <= :data:`PHOTO_SIDE`, thumbnails <=
:data:`THUMB_SIDE`), each score map area-averaged to longest side <= :data:`MAP_SIDE` and quantised to an 8-bit
grayscale PNG over its own ``[lo, hi]``: the page reads ``lo + q * (hi - lo) / 255``, within half a step,
``(hi - lo) / 510``, of the downscaled map (the threshold resolution; shown per image). The detected fraction is
the share of that map's pixels whose dequantised score is ``> threshold``
(:data:`anomalyseg.constants.DETECTION_RULE`; ``predictions.csv`` and ``masks/`` hold the native-resolution ones
at the run's threshold). Page size: ~76 KB per image plus ~48 KB per image and scorer (base64 included; the 60
Road Anomaly photos with 2 scorers: 10.3 MB); beyond ``max_images`` images the rest are listed as links to their
files. Written from the files on disk, so a rerun that kept every image builds the same page.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import re
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from anomalyseg.constants import detect
from anomalyseg.files import atomic_write

log = logging.getLogger(__name__)

PAGE_NAME = "index.html"
#: Longest side of the viewer photo, of the embedded score maps and of the thumbnails (pixels).
PHOTO_SIDE, MAP_SIDE, THUMB_SIDE = 640, 320, 160
#: Images embedded with their maps by default; the rest are listed as links (``--gallery-max``).
DEFAULT_MAX_IMAGES = 100
#: Quantisation levels above 0 (8-bit PNG).
LEVELS = 255
#: Initial threshold without a run threshold: this quantile of the embedded maps, pooled.
DEFAULT_QUANTILE = 0.99
#: Tint of the detected pixels in the overlay (the outline is ``DETECTION_COLORS["detected"]``).
TINT = (0, 220, 255)
JPEG_QUALITY = 82


def view_size(height: int, width: int, side: int) -> tuple[int, int]:
    """``(h, w)`` fitting ``height x width`` inside a ``side`` square (aspect kept, never enlarged)."""
    s = min(1.0, side / max(height, width))
    return max(1, round(height * s)), max(1, round(width * s))


def view_map(score: np.ndarray, side: int = MAP_SIDE) -> np.ndarray:
    """The score map area-averaged to longest side <= ``side`` (float32); NaN / -inf count as the lowest finite
    score, +inf as the highest (never detected / always detected)."""
    from PIL import Image

    score = np.asarray(score, dtype=np.float32)
    finite = score[np.isfinite(score)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    score = np.nan_to_num(score, nan=low, posinf=high, neginf=low)
    h, w = view_size(*score.shape, side)
    if (h, w) == score.shape:
        return score.copy()
    return np.asarray(Image.fromarray(score, mode="F").resize((w, h), Image.Resampling.BOX), dtype=np.float32)


def quantise(values: np.ndarray) -> tuple[np.ndarray, float, float]:
    """``(q, lo, hi)``: ``values`` as uint8 levels over their own ``[lo, hi]`` (:func:`dequantise` inverts it
    within ``(hi - lo) / (2 * LEVELS)``)."""
    lo, hi = float(values.min()), float(values.max())
    if not hi > lo:
        return np.zeros(values.shape, np.uint8), lo, hi
    q = np.rint((values.astype(np.float64) - lo) / (hi - lo) * LEVELS)
    return np.clip(q, 0, LEVELS).astype(np.uint8), lo, hi


def levels(lo: float, hi: float) -> np.ndarray:
    """The score of each level 0..255, in the page's float64 arithmetic (``lo + q * (hi - lo) / 255``)."""
    return lo + np.arange(LEVELS + 1, dtype=np.float64) * (hi - lo) / LEVELS


def dequantise(q: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return levels(lo, hi)[q]


def detected_pixels(q: np.ndarray, lo: float, hi: float, threshold: float) -> int:
    """Pixels of a quantised map above ``threshold``: the count the page shows (its formula, in Python)."""
    return int(detect(dequantise(q, lo, hi), threshold).sum())


def write_gallery(out: str | Path, rows: list[dict[str, Any]], names: list[str],
                  thresholds: dict[str, float | None], *, max_images: int | None = None,
                  title: str = "anomalyseg predict") -> Path:
    """Write ``out/index.html`` for ``predict``'s ``rows`` (``file``, ``stem``, ``<scorer>_max``,
    ``<scorer>_anomaly_fraction``), reading ``out/scores/<scorer>/<stem>.npy`` and each row's photo. The
    first ``max_images`` rows (None: :data:`DEFAULT_MAX_IMAGES`) are embedded, the others listed. Returns the
    page's path."""
    out = Path(out)
    max_images = DEFAULT_MAX_IMAGES if max_images is None else max_images
    images, thumbs = [], []
    samples: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for i, row in enumerate(rows[:max(0, max_images)]):
        entry = _entry(out, row, names, samples)
        thumbs.append(f'<button class="thumb" type="button" data-i="{i}" title="{html.escape(entry["file"])}">'
                      f'<img src="{entry.pop("thumb")}" alt=""><span>{html.escape(entry["stem"])}</span></button>')
        images.append(entry)
    data: dict[str, Any] = {"scorers": names, "levels": LEVELS, "quantile": DEFAULT_QUANTILE, "tint": list(TINT),
                            "outline": _outline(), "lut": _lut(), "run": {n: _num(thresholds.get(n)) for n in names},
                            "range": {}, "initial": {}, "images": images}
    for n in names:
        data["range"][n], data["initial"][n] = _slider([e["maps"][n] for e in images], samples[n],
                                                       _num(thresholds.get(n)))
    parts = {"TITLE": html.escape(title), "SUMMARY": _summary(rows, len(images), names, thresholds),
             "THUMBS": "".join(thumbs), "REST": _rest(rows[len(images):], names), "DATA": _script_json(data)}
    page = re.sub(r"\{\{([A-Z]+)\}\}", lambda m: parts[m.group(1)], _template())  # one pass: no re-expansion
    return atomic_write(out / PAGE_NAME, page)


def _entry(out: Path, row: dict[str, Any], names: list[str], samples: dict[str, list[np.ndarray]]) -> dict[str, Any]:
    """One embedded image: photo and thumbnail URIs, and each scorer's quantised map with its statistics."""
    maps, shape = {}, (1, 1)
    for n in names:
        m = view_map(np.load(out / "scores" / n / f"{row['stem']}.npy"))
        q, lo, hi = quantise(m)
        values = dequantise(q, lo, hi)
        p1, p99 = np.percentile(values, [1, 99])
        samples[n].append(values[::2, ::2].ravel())
        maps[n] = {"png": _png_uri(q), "lo": lo, "hi": hi, "p1": float(p1), "p99": float(p99),
                   "max": _num(row.get(f"{n}_max")), "fraction": _num(row.get(f"{n}_anomaly_fraction"))}
        shape = m.shape
    photo, thumb = _photos(Path(row.get("photo") or row["file"]), shape)  # a video frame: its saved photo
    return {"stem": str(row["stem"]), "file": str(row["file"]), "photo": photo, "thumb": thumb, "maps": maps}


def _photos(path: Path, shape: tuple[int, int]) -> tuple[str, str]:
    """The viewer photo and the thumbnail as JPEG data URIs (grey, with a warning, when unreadable)."""
    from PIL import Image

    from anomalyseg.data.io import DECODE_ERRORS, read_image

    try:
        photo = Image.fromarray(read_image(path))
    except DECODE_ERRORS as exc:
        log.warning("gallery: cannot read %s (%s): a grey photo instead", path, exc)
        photo = Image.new("RGB", (2 * shape[1], 2 * shape[0]), (128, 128, 128))
    uris = []
    for side in (PHOTO_SIDE, THUMB_SIDE):
        h, w = view_size(photo.height, photo.width, side)
        buf = io.BytesIO()
        photo.resize((w, h), Image.Resampling.LANCZOS).save(buf, format="JPEG", quality=JPEG_QUALITY)
        uris.append("data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii"))
    return uris[0], uris[1]


def _png_uri(q: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(q, mode="L").save(buf, format="PNG", compress_level=9)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _num(value: Any) -> float | None:
    """A finite float, or None (JSON has no NaN)."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _lut() -> list[int]:
    """The score colormap (as ``heatmaps/``) as 256 flat RGB triples."""
    from matplotlib import colormaps

    from anomalyseg.viz.colors import SCORE_CMAP

    rgb = colormaps[SCORE_CMAP](np.linspace(0.0, 1.0, 256))[:, :3]
    return [int(v) for v in np.round(rgb * 255).astype(int).ravel()]


def _outline() -> list[int]:
    from anomalyseg.viz.colors import DETECTION_COLORS

    return list(DETECTION_COLORS["detected"])


def _slider(maps: list[dict[str, Any]], samples: list[np.ndarray], run: float | None) -> tuple[list[float], float]:
    """The slider's ``[min, max]`` (every embedded map and the run threshold) and its initial value (the run
    threshold, else the :data:`DEFAULT_QUANTILE` of the embedded maps pooled)."""
    ends = [m["lo"] for m in maps] + [m["hi"] for m in maps] + ([run] if run is not None else [])
    lo, hi = (min(ends), max(ends)) if ends else (0.0, 1.0)
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    if run is not None:
        return [lo, hi], run
    return [lo, hi], float(np.quantile(np.concatenate(samples), DEFAULT_QUANTILE)) if samples else hi


def _summary(rows: list[dict[str, Any]], shown: int, names: list[str], thresholds: dict[str, float | None]) -> str:
    e = html.escape
    runs = ", ".join(f"{n} {'none' if thresholds.get(n) is None else f'{thresholds[n]:.6g}'}" for n in names)
    text = (f"<p>{len(rows)} image(s); scorers {e(', '.join(names))}; run thresholds: {e(runs)}. "
            '<a href="predictions.csv">predictions.csv</a> has each image&#39;s native-resolution anomaly fraction '
            "at the run threshold and its max score.</p>")
    if shown < len(rows):
        text += (f'<p class="cap">The first {shown} images are embedded below; the other {len(rows) - shown} are '
                 "listed at the end with links to their files (<code>--gallery-max N</code> embeds more).</p>")
    return text + (f'<p class="note">Score maps are embedded area-averaged to a longest side of {MAP_SIDE} px and '
                   f"quantised to 8 bits over each map's own [min, max]: the threshold resolution (step) is "
                   f"(max - min)/{LEVELS}, shown per image, and a dequantised score is within half a step of the "
                   "downscaled map. The detected fraction counts the pixels of that map scoring above the "
                   "threshold.</p>")


def _rest(rows: list[dict[str, Any]], names: list[str]) -> str:
    """The rows beyond the cap: names, links to their overlays, max score."""
    if not rows:
        return ""
    e = html.escape
    items = []
    for row in rows:
        stem = str(row["stem"])
        links = " ".join(f'<a href="{e(quote(f"overlays/{n}/{stem}.png"))}">{e(n)}</a> (max {e(_fmt(row, n))})'
                         for n in names)
        items.append(f"<li>{e(stem)}: {links}</li>")
    return f'<section id="rest"><h2>Not embedded ({len(rows)})</h2><ul>{"".join(items)}</ul></section>'


def _fmt(row: dict[str, Any], name: str) -> str:
    value = _num(row.get(f"{name}_max"))
    return "?" if value is None else f"{value:.4g}"


def _script_json(data: dict[str, Any]) -> str:
    """JSON safe inside ``<script type="application/json">``: no ``<``, ``>`` or ``&`` (so no ``</script>``)."""
    text = json.dumps(data, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _template() -> str:
    return resources.files("anomalyseg.viz").joinpath("gallery.html").read_text(encoding="utf-8")
