"""Video files, streamed one frame at a time through PyAV (the optional extra ``[video]``).

:func:`read_frames` decodes every ``every``-th frame of a file's first video stream as a :class:`Frame`
(index, time, RGB on demand); :func:`write_video` encodes RGB frames into an ``.mp4`` (H.264, else MPEG-4
part 2 where the PyAV build has no libx264), atomically. Neither holds more than one frame. PyAV is used
rather than ffmpeg subprocesses: it ships FFmpeg in its wheels and raises typed errors, which become one
:class:`~anomalyseg.errors.UserError` line naming the file.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from anomalyseg.errors import UserError
from anomalyseg.files import atomic_write

#: What to run when PyAV is missing (the one line a user sees).
INSTALL_HINT = 'pip install "anomalyseg[video]"'
#: Encoders tried in order for :func:`write_video` (libx264 is in PyAV's PyPI wheels; mpeg4 is in every FFmpeg).
ENCODERS = ("libx264", "mpeg4")


def require_av() -> Any:
    """The ``av`` module, or a one-line UserError naming the extra that installs it."""
    try:
        import av
    except ImportError:
        raise UserError(f"reading videos needs PyAV, which is not installed: {INSTALL_HINT}") from None
    return av


class VideoError(UserError):
    """A video file cannot be read (missing, corrupt, truncated, no video stream); the message names it."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(f"cannot read video {path}: {why}")
        self.path, self.why = path, why


@dataclass
class Frame:
    """One decoded frame: its index in the stream (0-based, every decoded frame counts), time in seconds."""

    index: int
    time: float | None
    frame: Any  # av.VideoFrame; converted by :meth:`rgb` only when needed (a kept frame is never converted)

    def rgb(self) -> np.ndarray:
        """The frame as a writable ``(H, W, 3)`` uint8 RGB array."""
        return self.frame.to_ndarray(format="rgb24")


@dataclass
class VideoInfo:
    """What a video's header says: ``frames`` (0 when the container does not tell), ``fps`` (None if unknown)."""

    frames: int
    fps: Fraction | None
    width: int
    height: int


def _why(exc: BaseException) -> str:
    """FFmpeg's reason without its ``[Errno N]`` prefix and the repeated file name."""
    text = getattr(exc, "strerror", None) or (str(exc).splitlines() or [""])[0]
    return str(text) or type(exc).__name__


def _open(path: Path) -> tuple[Any, Any]:
    av = require_av()
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise VideoError(path, _why(exc)) from None
    if not container.streams.video:
        container.close()
        raise VideoError(path, "it has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame-parallel decoding; frames still come out in order
    return container, stream


def video_info(path: str | Path) -> VideoInfo:
    """Header facts of ``path``'s first video stream (cheap: nothing is decoded)."""
    container, stream = _open(Path(path))
    with container:
        rate = stream.average_rate or stream.guessed_rate
        return VideoInfo(int(stream.frames or 0), Fraction(rate) if rate else None, stream.width, stream.height)


def read_frames(path: str | Path, every: int = 1) -> Iterator[Frame]:
    """Frames 0, ``every``, 2 ``every``, ... of ``path``'s first video stream, decoded one at a time.

    Raises:
        VideoError: "cannot read video <path>: <why>" for a missing, corrupt or truncated file (also midway:
            the frames before were yielded).
    """
    if every < 1:
        raise UserError(f"every must be >= 1 (every N-th frame), got {every}")
    path = Path(path)
    av = require_av()
    container, stream = _open(path)
    index = -1
    with container:
        try:
            for index, frame in enumerate(container.decode(stream)):
                if index % every == 0:
                    yield Frame(index, frame.time, frame)
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise VideoError(path, _why(exc) + (f" (after frame {index})" if index >= 0 else "")) from None


def _even(rgb: np.ndarray) -> np.ndarray:
    """Pad odd sides by repeating the last row / column (4:2:0 video needs even sizes)."""
    h, w = rgb.shape[:2]
    return np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge") if h % 2 or w % 2 else rgb


def _encoder(av: Any) -> str:
    """The first of :data:`ENCODERS` this PyAV build can encode with."""
    for name in ENCODERS:
        try:
            av.codec.Codec(name, "w")
            return name
        except ValueError:  # av's UnknownCodecError
            continue
    raise UserError(f"this PyAV build has none of the video encoders {', '.join(ENCODERS)}")


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: Fraction | float) -> int:
    """Encode RGB ``frames`` (all of one size; odd sides padded to even) into the ``.mp4`` ``path`` at ``fps``;
    atomic (a crash leaves the previous file or none). Returns the number of frames written; writes nothing
    when ``frames`` is empty."""
    av = require_av()
    codec = _encoder(av)
    stream_iter = iter(frames)
    first = next(stream_iter, None)
    if first is None:
        return 0
    count = 0

    def encode(fh: Any) -> None:
        nonlocal count
        with av.open(fh, "w", format="mp4") as container:
            stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(100000))
            stream.height, stream.width = _even(first).shape[:2]
            stream.pix_fmt = "yuv420p"
            for rgb in itertools.chain([first], stream_iter):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(_even(rgb)), format="rgb24")
                container.mux(stream.encode(frame))
                count += 1
            container.mux(stream.encode())

    atomic_write(path, encode)
    return count
