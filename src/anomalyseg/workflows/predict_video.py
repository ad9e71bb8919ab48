"""Videos in ``predict``: every ``every``-th frame is predicted like an image under the stem
``<video stem>_f<index, 6 digits>`` (same folders, same csv), then each scorer's overlay frames become
``videos/<scorer>/<video stem>.mp4`` at the source frame rate / ``every``.

Frames stream through (:func:`anomalyseg.data.video.read_frames`), one in memory at a time; the overlay video
is encoded afterwards from the overlay PNGs on disk, so a rerun that keeps every frame can still make a
missing video, and a video is re-encoded only when a frame was predicted now, it is missing or short, or
``force``.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: ``predict_one(path, stem, read, extra)``: predict (or keep) one image; True = predicted now, False = kept.
PredictOne = Callable[[Path, str, Callable[[], np.ndarray], dict[str, Any]], "bool | None"]
#: Frame rate assumed for a video whose header names none.
DEFAULT_FPS = 25


def frame_stem(stem: str, index: int) -> str:
    """The output stem of frame ``index`` of the video with stem ``stem``."""
    return f"{stem}_f{index:06d}"


def frame_photo(out: Path, stem: str) -> Path:
    """Where a predicted frame is kept as a JPEG (``frames/<frame stem>.jpg``): the photo the gallery shows."""
    return out / "frames" / f"{stem}.jpg"


def video_file(out: Path, scorer: str, stem: str) -> Path:
    """Where the overlay video of one scorer and video goes."""
    return out / "videos" / scorer / f"{stem}.mp4"


def frames_hint(videos: list[Path], every: int) -> int:
    """How many frames ``predict`` will see in ``videos`` by their headers (0 for an unreadable one): for the
    progress bar only."""
    from anomalyseg.data.video import VideoError, video_info

    total = 0
    for v in videos:
        with contextlib.suppress(VideoError):  # reported when it is read
            total += math.ceil(video_info(v).frames / every)
    return total


def predict_video(path: Path, stem: str, every: int, predict_one: PredictOne,
                  overlay_of: Callable[[str, str], Path], out: Path, names: list[str], force: bool) -> list[Path]:
    """Predict frames 0, ``every``, 2 ``every``, ... of ``path`` through ``predict_one``, then (re)write each
    scorer's overlay video when needed (``overlay_of(scorer, frame stem)``: the overlay PNG). Returns the
    videos written now.

    Raises:
        VideoError: the video cannot be read (frames predicted before a mid-stream failure keep their outputs).
    """
    from anomalyseg.data.video import read_frames, video_info

    stems: list[str] = []
    fresh = False
    for frame in read_frames(path, every):
        fstem = frame_stem(stem, frame.index)
        time = None if frame.time is None else round(frame.time, 6)
        photo = str(frame_photo(out, fstem))  # the frame itself, for the gallery (the row's file is the video)
        fresh |= bool(predict_one(path, fstem, frame.rgb, {"frame": frame.index, "time": time, "photo": photo}))
        stems.append(fstem)
    if not stems:
        return []
    fps = (video_info(path).fps or DEFAULT_FPS) / every
    written = []
    for name in names:
        target = video_file(out, name, stem)
        if force or fresh or not _holds(target, len(stems)):
            _encode(target, [overlay_of(name, s) for s in stems], fps)
            written.append(target)
    return written


def _holds(video: Path, frames: int) -> bool:
    """Whether ``video`` (one we wrote) exists with ``frames`` frames."""
    from anomalyseg.data.video import VideoError, video_info

    try:
        return video.is_file() and video_info(video).frames == frames
    except VideoError:
        return False


def _encode(target: Path, overlays: list[Path], fps: Any) -> None:
    from anomalyseg.data.io import read_image
    from anomalyseg.data.video import write_video

    write_video(target, (read_image(p) for p in overlays), fps)
    log.info("wrote %s (%d frames)", target, len(overlays))
