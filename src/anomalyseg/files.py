"""Files the program writes and reads: atomic writes, and ``torch.load(weights_only=True)`` for files a user
names, with one readable line when it fails.

:func:`atomic_write`: a crash mid-write leaves the previous file intact (temporary file in the same folder,
fsync, ``os.replace``), so readers see the old or the new file, never half of one; concurrent writers each use
their own temporary file.

torch reports a file that is not a PyTorch file at all with whatever its unpickler tripped over ("pop from
empty list", "invalid load key"), which says nothing to a user who passed a results JSON or an image by
mistake. :func:`load_torch_file` tells the two failures apart: a file in neither of torch.save's formats
("<path> is not a PyTorch checkpoint (<what it looks like>; ...)") and a PyTorch file that cannot be read
(truncated, or holding Python objects that ``weights_only`` refuses to run).
"""

from __future__ import annotations

import errno
import os
import uuid
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from anomalyseg.errors import UserError

#: First bytes of torch.save's legacy (non-zip) format: pickle protocol 2 of torch's magic number.
_LEGACY_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19."

#: A few formats users hand over by mistake (own table: a sniffing library would be a new dependency).
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file"),
    (b"\x93NUMPY", "a NumPy .npy array"),
    (b"\x80", "a Python pickle not written by torch.save"),
)


def atomic_write(path: str | Path, content: str | bytes | Callable[[IO[bytes]], None]) -> Path:
    """Write ``content`` (text as UTF-8, bytes, or a callable writing into a binary file) to ``path``
    atomically; the parent folder is created. Returns ``path``.

    Raises:
        UserError: "cannot write <path>: <why>" when the file system refuses (read-only, full, a folder or a
            file in the way); nothing is left behind.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"cannot write {path}: it is a folder")
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")  # one per writer
    with output_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(tmp, "xb") as fh:
                if callable(content):
                    content(fh)
                else:
                    fh.write(content.encode("utf-8") if isinstance(content, str) else content)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
    return path


def describe_os_error(exc: OSError, path: str | Path | None = None) -> str:
    """``"cannot write <path>: <why>"`` for an OSError met while writing ``path``, naming the path the system
    names when it is another one (the read-only folder, or the file standing where a folder must be)."""
    why = exc.strerror or str(exc) or type(exc).__name__
    named = exc.filename if exc.filename is not None else path
    if path is None:
        return f"cannot write {named}: {why}" if named is not None else f"cannot write: {why}"
    if named is not None and exc.errno in (errno.EEXIST, errno.ENOTDIR):
        blocker = next((p for p in (Path(named), *Path(named).parents) if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            return f"cannot write {path}: {blocker} is a file, not a folder"
    if named is not None and str(named) != str(path):
        return f"cannot write {path}: {why} ({named})"
    return f"cannot write {path}: {why}"


@contextmanager
def output_errors(path: str | Path | None = None) -> Iterator[None]:
    """Turn an :class:`OSError` raised inside the block (writing ``path``) into one-line :class:`UserError`
    naming the path and the reason: a read-only or full disk, a file where a folder should be, ..."""
    try:
        yield
    except OSError as exc:
        raise UserError(describe_os_error(exc, path)) from None


def check_output(path: str | Path, option: str = "--out", folder: bool = False) -> Path:
    """Refuse, before any work, an output location that cannot be written: a folder where a file goes (or
    the reverse), a file in the way of its parent folders, a read-only folder. Creates nothing.

    Raises:
        UserError: "<option> <path>: ..." naming what is in the way.
    """
    path = Path(path).expanduser()
    if path.is_dir() and not folder:
        raise UserError(f"{option} {path} is a folder, not a file")
    if path.exists() and not path.is_dir() and folder:
        raise UserError(f"{option} {path} is a file, not a folder")
    nearest = path if folder and path.is_dir() else path.parent
    while not nearest.exists() and not nearest.is_symlink() and nearest != nearest.parent:
        nearest = nearest.parent
    if nearest.exists() and not nearest.is_dir():
        raise UserError(f"cannot write {option} {path}: {nearest} is a file, not a folder")
    if nearest.is_dir() and not os.access(nearest, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {option} {path}: the folder {nearest} is not writable")
    if path.exists() and not folder and not os.access(path, os.W_OK) and not os.access(path.parent, os.W_OK):
        raise UserError(f"cannot write {option} {path}: it is read-only")
    return path


def is_torch_file(path: str | Path) -> bool:
    """Whether ``path`` is in one of torch.save's formats (zip archive with ``data.pkl``, or legacy), also
    when it is truncated (torch.save writes ``<name>/data.pkl`` first; its name is in the first zip header)."""
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(512)
    if head.startswith(_LEGACY_MAGIC):
        return True
    if head.startswith(b"PK\x03\x04") and len(head) >= 30:
        name_len = int.from_bytes(head[26:28], "little")
        if head[30: 30 + name_len].endswith(b"data.pkl"):
            return True
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return any(n == "data.pkl" or n.endswith("/data.pkl") for n in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def describe_file(path: str | Path) -> str:
    """A few words on what ``path`` looks like: 'an empty file', 'a PNG image', "text starting 'abc'"."""
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(512)
    if not head:
        return "an empty file"
    if zipfile.is_zipfile(path):
        return "a ZIP archive without PyTorch data"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "a tar archive"
    if len(head) > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 1 << 30:
        return "a safetensors file (load it with safetensors.torch.load_file)"
    for magic, what in _SIGNATURES:
        if head.startswith(magic):
            return what
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "binary data of an unknown format"
    first = " ".join(text.split())[:40]
    return f"text starting {first!r}"


def load_torch_file(path: str | Path, what: str = "checkpoint", map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``; any failure is one line naming ``path`` and the cause.

    Raises:
        UserError: "<path> is not a PyTorch <what> (...)" for a file in neither torch.save format,
            "cannot read <what> <path>: ..." for a PyTorch file that does not load (the file must exist).
    """
    import torch

    path = Path(path)
    try:  # torch warns about odd pickle protocols of garbage files: keep warnings for files that load
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            data = torch.load(path, map_location=map_location, weights_only=True)
        for w in caught:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return data
    except Exception as exc:  # pickle / zip errors of many kinds: one message for the user
        if not is_torch_file(path):
            raise UserError(f"{path} is not a PyTorch {what} ({describe_file(path)}; expected a file written "
                            "by torch.save)") from None
        raise UserError(f"cannot read {what} {path}: {load_failure(exc)}") from None


#: Lines of torch's "Weights only load failed" message that are advice, not the cause.
_BOILERPLATE = ("Weights only load failed", "Check the documentation of torch.load", "In PyTorch 2.6",
                "Re-running `torch.load`", "Please file an issue")


def load_failure(exc: BaseException) -> str:
    """The cause of a failed ``torch.load`` in one line, whole: for a refused pickle the line naming what it
    refused (e.g. "Trying to load unsupported GLOBAL posix.system whose module posix is blocked."), followed
    by what refused it; otherwise the first line of the error."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
    refused = str(exc).startswith("Weights only load failed") or any("WeightsUnpickler" in ln for ln in lines)
    causes = [ln for ln in lines if not ln.startswith(_BOILERPLATE)]
    cause = next((ln for ln in causes if "GLOBAL" in ln or ln.startswith(("WeightsUnpickler error", "Unsupported"))),
                 causes[0] if causes else lines[0])
    if refused:
        return f"{cause} (refused by the safe loader, torch.load(weights_only=True))"
    return cause
