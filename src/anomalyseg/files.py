"""Files the program writes and reads: atomic writes, and ``torch.load(weights_only=True)`` for files a user
names, with one readable line when it fails.

:func:`atomic_write`: a crash mid-write leaves the previous file intact (temporary file in the same folder,
fsync, ``os.replace``), so readers see the old or the new file, never half of one; concurrent writers each use
their own temporary file; the folder is fsynced after the rename, so the new name survives a power cut.
Temporary files are named ``.<name>.<pid>-<rand>.tmp``: :func:`remove_stale_tmp` deletes those whose writer
is dead (a process killed mid-write leaves one behind).

:class:`FileLock`: an advisory lock file (``O_EXCL``) holding PID, host and start time. A lock whose process is
dead (same host) is stale and taken over with a warning; a live one is refused with one line naming its PID
(or waited for, up to ``wait`` seconds). Used for a run folder (``<run>/.lock``: one ``train`` at a time) and
for a scorer-states file (``<states>.lock``: read-merge-write of one ``fit-scorers`` at a time).

torch reports a file that is not a PyTorch file at all with whatever its unpickler tripped over ("pop from
empty list", "invalid load key"), which says nothing to a user who passed a results JSON or an image by
mistake. :func:`load_torch_file` tells the two failures apart: a file in neither of torch.save's formats
("<path> is not a PyTorch checkpoint (<what it looks like>; ...)") and a PyTorch file that cannot be read
(truncated, or holding Python objects that ``weights_only`` refuses to run).
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import socket
import time
import uuid
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, ClassVar

from anomalyseg.errors import UserError

log = logging.getLogger(__name__)

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
            fsync_dir(path.parent)
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


def fsync_dir(folder: str | Path) -> None:
    """fsync ``folder`` itself, so a rename or a new entry in it is durable (a no-op where folders cannot be
    opened or synced)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):  # some file systems refuse fsync on a folder
            os.fsync(fd)
    finally:
        os.close(fd)


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host is running (a zombie counts as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    try:  # Linux: a killed child its parent has not reaped yet still answers kill(0)
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


_TMP_NAME = re.compile(r"^\..+\.(\d+)-[0-9a-f]{8}\.tmp$")


def remove_stale_tmp(folder: str | Path, name: str | None = None) -> list[Path]:
    """Delete the temporary files :func:`atomic_write` left in ``folder`` (only those of ``name`` if given)
    whose writing process is dead; returns what was removed."""
    folder, removed = Path(folder), []
    if not folder.is_dir():
        return removed
    prefix = f".{name}." if name else "."
    for entry in folder.iterdir():
        match = _TMP_NAME.match(entry.name)
        if match is None or not entry.name.startswith(prefix) or pid_alive(int(match.group(1))):
            continue
        try:
            entry.unlink()
        except FileNotFoundError:  # removed by another process meanwhile
            continue
        removed.append(entry)
        log.info("removed %s, left by a writer that died (pid %s)", entry, match.group(1))
    return removed


class FileLock:
    """An advisory lock: the file ``path``, created with ``O_EXCL``, holding ``{"pid", "host", "started"}``.

    ``acquire()`` takes it; a lock left by a dead process of this host is stale: it is taken over with a
    warning. A live holder (or one on another host, whose liveness cannot be checked) is waited for up to
    ``wait`` seconds, then refused: :class:`UserError` "<what> is in use by process PID on HOST since ...".
    Use as a context manager; ``release()`` removes the file only if this lock still owns it.
    """

    _held: ClassVar[set[str]] = set()  # lock files this process holds: a lock naming our own PID but not here is stale

    def __init__(self, path: str | Path, what: str, *, wait: float = 0.0, poll: float = 0.05) -> None:
        self.path, self.what, self.wait, self.poll = Path(path), what, wait, poll
        self._inode: int | None = None

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        start = time.monotonic()
        while True:
            if self._try_create():
                return
            holder, seen = self._read()
            if holder is not None and self._stale(holder):
                self._take_over(holder, seen)
                continue
            waited = time.monotonic() - start  # a record still being written gets a second to appear
            if waited >= self.wait and (holder is not None or waited >= 1.0):
                raise UserError(self._refusal(holder))
            time.sleep(self.poll)

    def release(self) -> None:
        if self._inode is None:
            return
        key = str(self.path.resolve())
        try:
            if os.stat(self.path).st_ino == self._inode:  # still ours (not taken over as stale)
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        self._inode = None
        FileLock._held.discard(key)

    @property
    def held(self) -> bool:
        return self._inode is not None

    # -- internals ---------------------------------------------------------------------------------------
    def _try_create(self) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        try:
            record = {"pid": os.getpid(), "host": socket.gethostname(),
                      "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
            os.write(fd, (json.dumps(record) + "\n").encode("utf-8"))
            os.fsync(fd)
            self._inode = os.fstat(fd).st_ino
        finally:
            os.close(fd)
        FileLock._held.add(str(self.path.resolve()))
        fsync_dir(self.path.parent)
        return True

    def _read(self) -> tuple[dict[str, Any] | None, tuple[int, bytes] | None]:
        """The holder's record and (inode, bytes) of the lock file; None for a record not written yet (or gone)."""
        try:
            with open(self.path, "rb") as fh:
                inode, text = os.fstat(fh.fileno()).st_ino, fh.read()
        except FileNotFoundError:
            return None, None
        seen = (inode, text)
        try:
            holder = json.loads(text)
            int(holder["pid"])
        except (ValueError, KeyError, TypeError):
            # being written right now, or garbage: garbage older than a few seconds is stale
            try:
                old = time.time() - os.stat(self.path).st_mtime > 5.0
            except FileNotFoundError:
                return None, None
            return ({"pid": -1, "host": socket.gethostname(), "started": "?"} if old else None), seen
        return holder, seen

    def _stale(self, holder: dict[str, Any]) -> bool:
        if holder.get("host") != socket.gethostname():
            return False  # cannot tell: treat as live
        pid = int(holder["pid"])
        if pid == os.getpid():  # our PID, but not a lock this process took: a previous process (container)
            return str(self.path.resolve()) not in FileLock._held
        return not pid_alive(pid)

    def _take_over(self, holder: dict[str, Any], seen: tuple[int, bytes] | None) -> None:
        """Remove the stale lock file, unless another process replaced it meanwhile (its inode changed)."""
        aside = self.path.with_name(f"{self.path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.stale")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        try:
            with open(aside, "rb") as fh:
                same = (os.fstat(fh.fileno()).st_ino, fh.read()) == seen
        except FileNotFoundError:
            return
        if not same:  # we moved a fresh lock of another process: put it back (a link never overwrites)
            with contextlib.suppress(FileExistsError):
                os.link(aside, self.path)
            os.unlink(aside)
            return
        os.unlink(aside)
        log.warning("%s: taking over the stale lock %s of process %s (%s, started %s), which is no longer running",
                    self.what, self.path, holder.get("pid"), holder.get("host"), holder.get("started"))

    def _refusal(self, holder: dict[str, Any] | None) -> str:
        if holder is None:
            return f"{self.what} is locked ({self.path} is being created by another process)"
        return (f"{self.what} is in use by process {holder.get('pid')} on {holder.get('host')} since "
                f"{holder.get('started')} (lock {self.path}; delete it if that process is gone)")


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
