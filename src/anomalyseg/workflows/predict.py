"""The ``predict`` workflow: a checkpoint on unlabelled images (files, folders, glob patterns) and video
frames, every output at each image's NATIVE resolution.

Per image and scorer: ``scores/<scorer>/<stem>.npy`` (float32), ``heatmaps/<scorer>/<stem>.png``,
``overlays/<scorer>/<stem>.png`` (photo, translucent score, detected region outlined), ``masks/<scorer>/
<stem>.png`` (binary at the threshold, when one is known); per image ``segmentation/<stem>.png`` (the
prediction in the model's class palette); ``predictions.csv`` (anomaly fraction at the threshold, max score)
and ``index.html`` (a self-contained gallery: :mod:`anomalyseg.viz.gallery`). Preprocessing, forward pass and
scorers are the ones ``evaluate`` uses (:func:`anomalyseg.workflows.session.inference_transform`,
:func:`anomalyseg.engine.tta.forward`, :func:`anomalyseg.scoring.scorers_from_spec`), so predict's maps equal
``evaluate --save-scores`` maps at the label resolution. Streams one image at a time; a rerun skips images whose
outputs all exist (``force`` redoes); unreadable files are skipped and named in the summary. Videos (PyAV, the
extra ``[video]``): every ``every``-th frame is an image with the stem ``<video stem>_f000123``, plus
``videos/<scorer>/<video stem>.mp4`` of the overlays (:mod:`anomalyseg.workflows.predict_video`).
"""

from __future__ import annotations

import csv
import glob
import io
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from anomalyseg.constants import detect
from anomalyseg.errors import UserError, first_line
from anomalyseg.files import atomic_write, check_output
from anomalyseg.viz.gallery import write_gallery

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
CSV_NAME = "predictions.csv"


@dataclass
class PredictSummary:
    """What one ``predict`` run did."""

    out: Path
    predicted: list[str] = field(default_factory=list)  # stems predicted now
    kept: list[str] = field(default_factory=list)  # stems whose outputs existed (rerun without force)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, why) of unreadable files
    videos: list[str] = field(default_factory=list)  # overlay videos written now
    thresholds: dict[str, float | None] = field(default_factory=dict)
    inference: dict[str, Any] = field(default_factory=dict)


def natural_key(path: Path) -> tuple:
    """Sort key of ``path`` in natural order: digit runs compare as numbers (``img2`` before ``img10``), part by
    part; equal keys (``img01``, ``img1``) fall back to the text. Own code: three lines, where ``natsort`` would be
    a new runtime dependency."""
    return tuple((tuple(int(c) if i % 2 else c for i, c in enumerate(re.split(r"(\d+)", part))), part)
                 for part in path.parts)


def collect_inputs(inputs: str | Path | list[str | Path], recursive: bool = False) -> tuple[list[Path], list[Path]]:
    """``(images, videos)`` named by files, folders (``recursive``: and their subfolders) and glob patterns.

    Files found in a folder or by a pattern come in natural order (:func:`natural_key`: ``img2`` before
    ``img10``); files named one by one keep the order given."""
    items = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    found: list[Path] = []
    for item in items:
        text = str(item)
        path = Path(text)
        if path.is_dir():
            found += sorted((p for p in (path.rglob("*") if recursive else path.iterdir()) if p.is_file()),
                            key=natural_key)
        elif path.is_file():
            found.append(path)
        elif glob.has_magic(text):
            found += sorted((Path(p) for p in glob.glob(text, recursive=recursive) if Path(p).is_file()),
                            key=natural_key)
        else:
            raise UserError(f"input {text} does not exist (give image files, folders or glob patterns)")
    images = list(dict.fromkeys(p for p in found if p.suffix.lower() in IMAGE_SUFFIXES))
    videos = list(dict.fromkeys(p for p in found if p.suffix.lower() in VIDEO_SUFFIXES))
    return images, videos


def _stems(paths: list[Path]) -> list[str]:
    """File-name-safe stems, unique (a repeated stem gets ``_2``, ``_3``, ...)."""
    from anomalyseg.viz.samples import safe_name

    seen: dict[str, int] = {}
    out = []
    for p in paths:
        stem = safe_name(p.stem)
        seen[stem] = seen.get(stem, 0) + 1
        out.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return out


def thresholds_for(names: list[str], threshold: str | float | None, results: str | Path | None,
                   sha256: str) -> dict[str, float | None]:
    """Each scorer's threshold: a number as given, ``tpr95`` / ``best_f1`` from ``results`` (an ``evaluate``
    results JSON of the same checkpoint), None without one (no masks)."""
    from anomalyseg.viz.samples import results_threshold

    if threshold is None:
        return {n: None for n in names}
    record = None
    if not isinstance(threshold, (int, float)) and str(threshold) in ("tpr95", "best_f1"):
        if results is None:
            raise UserError(f"--threshold {threshold} comes from an evaluation: give --results RESULTS.json "
                            "(the --out of `anomalyseg evaluate` with this checkpoint), or a number")
        from anomalyseg.report.results import read_results

        record = read_results(results)
        theirs = (record.get("checkpoint") or {}).get("sha256")
        if theirs != sha256:
            raise UserError(f"{results} holds results of another checkpoint (sha256 {str(theirs)[:12]}..., this "
                            f"one {sha256[:12]}...): its thresholds do not apply; evaluate this checkpoint")
    return {n: results_threshold(record, n, str(threshold))[0] for n in names}


def predict(
    checkpoint: str | Path,
    inputs: str | Path | list[str | Path],
    out: str | Path,
    *,
    scorers: str = "max_logit",
    threshold: str | float | None = None,
    results: str | Path | None = None,
    recursive: bool = False,
    size: tuple[int, int] | None = None,
    inference: str | None = None,
    tile: str | tuple[int, int] | None = None,
    overlap: float = 0.33,
    blend: str = "mean",
    tta: str | None = None,
    input_contract: str | None = None,
    states: str | Path | None = None,
    device: str = "auto",
    force: bool = False,
    progress: bool = True,
    every: int = 1,
    gallery_max: int | None = None,
) -> PredictSummary:
    """Predict every image of ``inputs`` into ``out`` (see the module doc); returns a :class:`PredictSummary`.

    ``size`` (width, height): the model input fits inside it (aspect kept); ``inference``: ``whole`` /
    ``resize`` / ``slide`` as in ``evaluate`` (default: resize to the contract's size when it has one, else
    whole); ``every``: predict frames 0, N, 2N, ... of videos; ``gallery_max``: images embedded in the
    ``index.html`` gallery (the rest are listed; None: 100). Raises a one-line UserError when nothing is found,
    none could be read, or videos are given without PyAV.
    """
    import torch

    from anomalyseg.checkpoints.reload import load_model
    from anomalyseg.checkpoints.scorer_states import default_states_path, load_fitted
    from anomalyseg.engine.distributed import resolve_device
    from anomalyseg.engine.tta import TTA
    from anomalyseg.progress import progress_bar
    from anomalyseg.scoring import scorers_from_spec
    from anomalyseg.workflows import session as S
    from anomalyseg.workflows.predict_video import frames_hint

    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise UserError(f"--every must be a whole number >= 1, got {every!r}")
    images, videos = collect_inputs(inputs, recursive)
    if not images and not videos:
        shown = ", ".join(str(i) for i in ([inputs] if isinstance(inputs, (str, Path)) else inputs))
        raise UserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) or videos found in {shown}"
                        + ("" if recursive else " (add --recursive for subfolders)"))
    if videos:
        from anomalyseg.data.video import require_av

        require_av()  # before anything is written
    out = check_output(out, "--out", folder=True)
    scorers_from_spec(scorers)  # names checked before the model is loaded
    dev = resolve_device(device)
    loaded = load_model(checkpoint, dev, contract=input_contract)
    made = scorers_from_spec(scorers, void_index=loaded.contract.void_index)
    S.check_void(made, loaded.num_outputs)
    load_fitted(made, Path(states) if states else default_states_path(loaded.path), loaded.sha256)
    names = [s.name for s in made]
    summary = PredictSummary(out, thresholds=thresholds_for(names, threshold, results, loaded.sha256))
    transform, window, summary.inference = S.inference_transform("label", size, loaded.contract.size, inference,
                                                                 tile, overlap, blend)
    tta_obj = TTA.parse(tta)
    needs_features = any(s.needs_features for s in made)
    palette = _palette(loaded)
    rows: list[dict[str, Any]] = []
    bar = progress_bar(total=len(images) + frames_hint(videos, every), desc="predict", unit="image",
                       disable=not progress, dynamic_ncols=True)

    def predict_one(path: Path, stem: str, read: Any, extra: dict[str, Any]) -> bool | None:
        """One image (or video frame) into ``rows``: True predicted now, False kept, None unreadable."""
        bar.update(1)
        files = _files(out, stem, names, summary.thresholds)
        if extra.get("photo"):  # a kept frame needs its photo too (the gallery shows it)
            files["photo"] = Path(extra["photo"])
        if not force and all(f.exists() for f in files.values()):
            summary.kept.append(stem)
            rows.append({**_row_from_disk(path, stem, names, files, summary.thresholds), **extra})
            return False
        photo = read()
        if photo is None:
            return None
        if extra.get("photo"):  # a video frame: keep it as a photo for the gallery
            _write_image(Path(extra["photo"]), photo)
        H, W = photo.shape[:2]
        image = torch.from_numpy(photo).permute(2, 0, 1).contiguous()
        x, _ = transform(image, torch.zeros(H, W, dtype=torch.uint8))
        with torch.no_grad():
            output = forward_one(loaded.model, x, dev, (H, W), tta_obj, window, needs_features)
            pred = output.logits.max(1).indices[0].cpu().numpy()
            maps = {s.name: s.score(output)[0].float().cpu().numpy().astype(np.float32) for s in made}
        _write_image(files["segmentation"], _colorize(pred, palette))
        row: dict[str, Any] = {"file": str(path), "stem": stem, **extra, "height": H, "width": W}
        for name, score in maps.items():
            row.update(_write_scorer(photo, score, name, summary.thresholds[name], files))
        rows.append(row)
        summary.predicted.append(stem)
        return True

    stems = _stems(images + videos)
    _check_frame_stems(images, stems[:len(images)], videos, stems[len(images):])
    try:
        for path, stem in zip(images, stems):
            predict_one(path, stem, lambda p=path: _read(p, summary), {})
        for path, stem in zip(videos, stems[len(images):]):
            _predict_video(path, stem, every, predict_one, out, names, force, summary)
    finally:
        bar.close()
        if rows:
            _write_csv(out / CSV_NAME, rows, names)
            write_gallery(out, rows, names, summary.thresholds, max_images=gallery_max)
    if not rows:
        raise UserError(f"none of the {len(images) + len(videos)} file(s) could be read: "
                        + "; ".join(f"{p}: {why}" for p, why in summary.failed[:3]))
    return summary


def _check_frame_stems(images: list[Path], image_stems: list[str], videos: list[Path], video_stems: list[str]) -> None:
    """One line when an image's stem looks like a frame stem of a video (``<video stem>_f000123``): their outputs
    would share names and overwrite each other."""
    for video, vstem in zip(videos, video_stems):
        frame = re.compile(re.escape(vstem) + r"_f\d{6}")
        clash = next((p for p, st in zip(images, image_stems) if frame.fullmatch(st)), None)
        if clash is not None:
            raise UserError(f"image {clash} and the frames of video {video} would write outputs under the same names "
                            f"({vstem}_f000000, ...); rename one or predict them into different --out folders")


def _predict_video(path: Path, stem: str, every: int, predict_one: Any, out: Path, names: list[str], force: bool,
                   summary: PredictSummary) -> None:
    """One video's frames and overlay videos; an unreadable video is skipped and named like an image."""
    from anomalyseg.data.video import VideoError
    from anomalyseg.workflows.predict_video import predict_video

    def overlay_of(name: str, frame_stem: str) -> Path:
        return _files(out, frame_stem, names, summary.thresholds)[f"overlays/{name}"]

    try:
        summary.videos += [str(v) for v in predict_video(path, stem, every, predict_one, overlay_of, out, names,
                                                         force)]
    except VideoError as exc:
        summary.failed.append((str(path), exc.why))
        log.warning("skipping %s: cannot read it (%s)", path, exc.why)


def forward_one(model: Any, x: Any, device: Any, size: tuple[int, int], tta: Any, window: Any,
                features: bool) -> Any:
    """One image's model output at ``size`` (the one forward of every command)."""
    from anomalyseg.engine.tta import forward

    return forward(model, x[None].to(device), size, tta=tta, return_features=features, window=window)


def _read(path: Path, summary: PredictSummary) -> np.ndarray | None:
    from anomalyseg.data.io import DECODE_ERRORS, read_image

    try:
        return read_image(path)
    except DECODE_ERRORS as exc:
        why = first_line(exc)
        summary.failed.append((str(path), why))
        log.warning("skipping %s: cannot read it (%s)", path, why)
        return None


def _palette(loaded: Any) -> list[tuple[int, int, int]]:
    from anomalyseg.viz.colors import class_palette

    names = list(loaded.contract.class_names or loaded.checkpoint.get("class_names") or [])
    if len(names) != loaded.num_outputs:
        names = [f"class_{i}" for i in range(loaded.num_outputs)]
    return class_palette(names, loaded.contract.void_index)


def _colorize(pred: np.ndarray, palette: list[tuple[int, int, int]]) -> np.ndarray:
    from anomalyseg.viz.colors import colorize

    return colorize(pred, palette)


def _files(out: Path, stem: str, names: list[str], thresholds: dict[str, float | None]) -> dict[str, Path]:
    files = {"segmentation": out / "segmentation" / f"{stem}.png"}
    for n in names:
        for kind, ext in (("scores", "npy"), ("heatmaps", "png"), ("overlays", "png")):
            files[f"{kind}/{n}"] = out / kind / n / f"{stem}.{ext}"
        if thresholds[n] is not None:
            files[f"masks/{n}"] = out / "masks" / n / f"{stem}.png"
    return files


def _write_image(path: Path, rgb: np.ndarray) -> None:
    """PNG, or JPEG (quality 92) for a ``.jpg`` path."""
    from PIL import Image

    jpeg = path.suffix.lower() in (".jpg", ".jpeg")
    atomic_write(path, lambda fh: Image.fromarray(rgb).save(fh, **({"format": "JPEG", "quality": 92} if jpeg
                                                                     else {"format": "PNG"})))


def _heat(score: np.ndarray) -> np.ndarray:
    """The score map in the package's score colormap, stretched over its own 1st..99th percentile."""
    from matplotlib import colormaps

    from anomalyseg.viz.colors import SCORE_CMAP

    finite = score[np.isfinite(score)]
    lo, hi = (np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0))
    scaled = np.clip((score - lo) / (hi - lo if hi > lo else 1.0), 0.0, 1.0)
    return (colormaps[SCORE_CMAP](np.nan_to_num(scaled))[..., :3] * 255).round().astype(np.uint8)


def _write_scorer(photo: np.ndarray, score: np.ndarray, name: str, threshold: float | None,
                  files: dict[str, Path]) -> dict[str, Any]:
    from anomalyseg.viz.colors import DETECTION_COLORS, boundary, overlay

    atomic_write(files[f"scores/{name}"], lambda fh: np.save(fh, score))
    heat = _heat(score)
    _write_image(files[f"heatmaps/{name}"], heat)
    shown = overlay(photo, heat, 0.45)
    if threshold is not None:
        detected = detect(score, threshold)
        shown[boundary(detected)] = DETECTION_COLORS["detected"]
        _write_image(files[f"masks/{name}"], (detected * 255).astype(np.uint8))
    _write_image(files[f"overlays/{name}"], shown)
    return _stats(score, name, threshold)


def _stats(score: np.ndarray, name: str, threshold: float | None) -> dict[str, Any]:
    frac = float(detect(score, threshold).mean()) if threshold is not None else None
    return {f"{name}_max": float(np.nanmax(score)), f"{name}_anomaly_fraction": frac}


def _row_from_disk(path: Path, stem: str, names: list[str], files: dict[str, Path],
                   thresholds: dict[str, float | None]) -> dict[str, Any]:
    row: dict[str, Any] = {"file": str(path), "stem": stem}
    for n in names:
        score = np.load(files[f"scores/{n}"])
        row["height"], row["width"] = score.shape
        row.update(_stats(score, n, thresholds[n]))
    return row


def _write_csv(path: Path, rows: list[dict[str, Any]], names: list[str]) -> None:
    frames = ["frame", "time"] if any("frame" in r for r in rows) else []  # video frames: index, seconds
    cols = ["file", "stem", *frames, "height", "width"] + [f"{n}_{k}" for n in names
                                                            for k in ("anomaly_fraction", "max")]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in cols})
    atomic_write(path, buf.getvalue())
