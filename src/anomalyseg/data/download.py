"""Fetching and unpacking the official StreetHazards tarballs: resumable HTTP download, MD5 check, safe extract.

Own code on top of urllib + tarfile (torchvision's ``download_and_extract_archive`` neither resumes a partial
download nor refuses a tar that escapes its folder). :func:`safe_extract` reads the whole member list and
checks it before writing anything: every path and link target is resolved with the archive's own links
followed as they will be after extraction, the total size, member count and expansion ratio are capped
(:data:`MAX_EXTRACT_BYTES`, :data:`MAX_EXTRACT_MEMBERS`, :data:`MAX_EXTRACT_RATIO`, overridable per call) and an
archive without tar's end-of-archive marker (truncated) is refused; then it extracts with tarfile's ``data``
filter (Python >= 3.10.12 / 3.11.4, this interpreter's ``tarfile.data_filter``) as a second layer. The CLI's
published MD5 catches a bad download as well, but the Python API with ``checksums=None`` relies on these checks.
"""

from __future__ import annotations

import copy
import hashlib
import http.client
import logging
import tarfile
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path, PurePosixPath
from typing import Any

from anomalyseg.data.info import STREETHAZARDS
from anomalyseg.data.layout import check_split_name
from anomalyseg.errors import UserError
from anomalyseg.progress import progress_bar

log = logging.getLogger(__name__)

CHUNK = 1 << 20
_NETWORK_ERRORS = (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError, OSError)


def md5sum(path: str | Path, chunk: int = CHUNK) -> str:
    """Hex MD5 of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _fetch(url: str, part: Path, progress: bool, timeout: float) -> None:
    """Append the rest of ``url`` to ``part`` (HTTP Range from its current size); restart if unsupported."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "anomalyseg"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing left to fetch: the part is complete (or too long)
            return
        raise
    with response:
        status = response.getcode()
        if offset and status != 206:
            log.info("server ignored the range request for %s; downloading from the start", url)
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else None
        with open(part, "ab" if offset else "wb") as fh, progress_bar(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
            desc=part.name.removesuffix(".part"), disable=not progress, leave=False,
        ) as bar:
            received = 0
            while block := response.read(CHUNK):
                fh.write(block)
                received += len(block)
                bar.update(len(block))
        if length and length.isdigit() and received < int(length):
            raise http.client.IncompleteRead(b"", int(length) - received)


def download_file(
    url: str,
    dest: str | Path,
    md5: str | None = None,
    retries: int = 5,
    progress: bool = True,
    timeout: float = 60.0,
    retry_wait: float = 2.0,
) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming after interruptions, then verify ``md5``.

    An existing ``dest`` with the right checksum is kept (nothing fetched). A checksum mismatch is a
    :class:`UserError`; the bad file is kept as ``dest.bad`` for inspection, never silently used.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        if md5 is None or md5sum(dest) == md5:
            log.info("%s already downloaded", dest)
            return dest
        raise UserError(f"{dest} exists but its MD5 is not {md5}: delete it and run the download again")
    part = dest.with_name(dest.name + ".part")
    if part.exists():
        log.info("resuming %s from byte %d", url, part.stat().st_size)
    if url.startswith("file:"):
        retries = 0  # a local file does not come back by waiting
    for attempt in range(retries + 1):
        try:
            _fetch(url, part, progress, timeout)
            break
        except urllib.error.HTTPError as exc:
            if exc.code < 500 or attempt == retries:
                raise UserError(f"download failed: {url}: HTTP {exc.code} {exc.reason}") from exc
        except _NETWORK_ERRORS as exc:
            if attempt == retries:
                raise UserError(f"download failed after {retries + 1} attempts: {url}: {exc} "
                                f"(run again to resume from {part})") from exc
        log.warning("download of %s interrupted (attempt %d); resuming", url, attempt + 1)
        time.sleep(retry_wait * (attempt + 1))
    if md5 is not None:
        actual = md5sum(part)
        if actual != md5:
            bad = dest.with_name(dest.name + ".bad")
            part.replace(bad)
            raise UserError(f"checksum mismatch for {url}: expected MD5 {md5}, got {actual}; "
                            f"the file was kept as {bad} (delete it and retry, or check the URL)")
    part.replace(dest)
    return dest


#: Limits of :func:`safe_extract`, checked on the member list before anything is written. The official
#: archives are well below them (train: about 12k members for 6,156 samples; test: about 3k); pass larger values to
#: :func:`safe_extract` / :func:`download_streethazards` (``max_bytes``, ``max_members``, ``max_ratio``) for a
#: bigger archive you trust. ``max_ratio`` bounds the extracted bytes per archive byte (a plain tar is about 1;
#: a decompression bomb is hundreds to millions).
MAX_EXTRACT_BYTES = 64 << 30
MAX_EXTRACT_MEMBERS = 100_000
MAX_EXTRACT_RATIO = 100.0
#: Symbolic links followed while resolving one path before it counts as a loop (the kernel's limit).
_MAX_LINK_HOPS = 40
#: ``tarfile.data_filter`` (Python 3.12, back-ported to 3.11.4 / 3.10.12): used as a second layer when present.
_DATA_FILTER = getattr(tarfile, "data_filter", None)


def _refuse(archive: Path, name: str, why: str) -> UserError:
    return UserError(f"refusing to extract {archive}: member {name!r} {why}")


class _EscapeError(Exception):
    """A path leaves the destination (``why`` says how)."""

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


def _resolve(start: tuple[str, ...], path: str, links: dict[tuple[str, ...], str], follow_last: bool = True
             ) -> tuple[str, ...]:
    """Where ``path`` (relative to folder ``start``, both inside the destination) lands once every member is
    extracted: the archive's symbolic links (``links``: member parts -> link target) are followed like the
    kernel follows them, a ``..`` applies to the link's target, and ANY step above the destination (even one
    that comes back) raises :class:`_EscapeError`. Returns the parts of the result relative to the destination."""
    if path.startswith("/"):
        raise _EscapeError(f"reaches the absolute path {path!r}")
    current = list(start)
    todo = _parts(path)[::-1]  # a stack: the next component last
    hops = 0
    while todo:
        part = todo.pop()
        if part == "..":
            if not current:
                raise _EscapeError("leads outside the destination")
            current.pop()
            continue
        current.append(part)
        target = links.get(tuple(current))
        if target is None or (not todo and not follow_last):
            continue
        hops += 1
        if hops > _MAX_LINK_HOPS:
            raise _EscapeError("goes through a loop of symbolic links")
        if target.startswith("/"):
            raise _EscapeError(f"goes through a link to the absolute path {target!r}")
        current.pop()
        todo.extend(_parts(target)[::-1])
    return tuple(current)


def check_members(archive: Path, members: list[tarfile.TarInfo], dest: Path, *,
                  max_bytes: int | None = None, max_members: int | None = None, max_ratio: float | None = None,
                  archive_size: int | None = None) -> None:
    """Refuse the archive unless every member is safe to extract into ``dest``, judged on the WHOLE list
    before anything is written.

    Refused: absolute paths and ``..`` in names; devices and pipes; a name that is a symbolic link in one
    member and something else in another; any member path, symbolic-link target or hard-link target that,
    resolved with the archive's own links followed as they will be after extraction (a chain such as
    ``d/a -> b/../..`` then ``d/b -> .``), leaves ``dest`` at any step; a hard link to anything but a regular
    file earlier in the archive; more than ``max_members`` members or ``max_bytes`` bytes in all, or more than
    ``max_ratio`` bytes per byte of the archive file (``archive_size``) — defaults :data:`MAX_EXTRACT_MEMBERS`,
    :data:`MAX_EXTRACT_BYTES`, :data:`MAX_EXTRACT_RATIO`. Where tarfile's ``data`` filter exists it is run
    on every member too (it also sees links already on disk under ``dest``).
    """
    max_bytes = MAX_EXTRACT_BYTES if max_bytes is None else max_bytes
    max_members = MAX_EXTRACT_MEMBERS if max_members is None else max_members
    max_ratio = MAX_EXTRACT_RATIO if max_ratio is None else max_ratio
    if len(members) > max_members:
        raise UserError(f"refusing to extract {archive}: {len(members)} members, more than the limit of "
                        f"{max_members} (max_members)")
    total = sum(m.size for m in members if m.isreg())
    if total > max_bytes:
        raise UserError(f"refusing to extract {archive}: {total} bytes once extracted, more than the limit of "
                        f"{max_bytes} (max_bytes)")
    if archive_size and total > max_ratio * max(archive_size, 1 << 20):
        raise UserError(f"refusing to extract {archive}: {total} bytes once extracted from a {archive_size}-byte "
                        f"archive, more than {max_ratio:g} times its size (max_ratio; a decompression bomb?)")
    links: dict[tuple[str, ...], str] = {}
    kinds: dict[tuple[str, ...], bool] = {}  # parts -> is a symbolic link
    for m in members:
        name = m.name
        pure = PurePosixPath(name)
        if name.startswith(("/", "\\")) or pure.is_absolute() or (len(name) > 1 and name[1] == ":"):
            raise _refuse(archive, name, "has an absolute path")
        if ".." in pure.parts or ".." in PurePosixPath(name.replace("\\", "/")).parts:
            raise _refuse(archive, name, "contains '..'")
        if not (m.isreg() or m.isdir() or m.issym() or m.islnk()):
            raise _refuse(archive, name, "is a device or pipe" if m.ischr() or m.isblk() or m.isfifo()
                          else "is not a file, folder or link")
        key = tuple(_parts(name))
        if not key:
            if m.isdir():
                continue  # "." itself
            raise _refuse(archive, name, "has an empty path")
        if kinds.setdefault(key, m.issym()) != m.issym():
            raise _refuse(archive, name, "is a symbolic link in one member and a file or folder in another")
        if m.issym():
            links[key] = m.linkname
    regular: set[tuple[str, ...]] = set()
    for m in members:
        key = tuple(_parts(m.name))
        if not key:
            continue
        try:
            parent = _resolve((), "/".join(key[:-1]), links)
            _resolve(parent, key[-1], links, follow_last=not m.issym())
        except _EscapeError as exc:
            raise _refuse(archive, m.name, f"{exc.why} (its path, with the archive's links followed)") from None
        if m.issym():
            try:
                _resolve(parent, m.linkname, links)
            except _EscapeError as exc:
                raise _refuse(archive, m.name, f"links outside the destination ({m.linkname!r} {exc.why}, "
                                               "with the archive's links followed)") from None
        elif m.islnk():
            if m.linkname.startswith("/"):
                raise _refuse(archive, m.name, f"links to an absolute path {m.linkname!r}")
            try:
                _resolve((), m.linkname, links)
            except _EscapeError as exc:
                raise _refuse(archive, m.name, f"links outside the destination ({m.linkname!r} {exc.why})") from None
            if tuple(_parts(m.linkname)) not in regular:
                raise _refuse(archive, m.name, f"is a hard link to {m.linkname!r}, not a file earlier in the archive")
        if m.isreg():
            regular.add(key)
    if _DATA_FILTER is not None:
        for m in members:
            try:
                _DATA_FILTER(m, str(dest))
            except tarfile.FilterError as exc:
                raise UserError(f"refusing to extract {archive}: {exc}") from None


def _check_complete(archive: Path, tar: tarfile.TarFile) -> None:
    """Refuse an archive that does not end with tar's end-of-archive block (a zero block right after the
    last member): tarfile stops quietly at a cut between members, at a cut inside a header and at a
    damaged header, and would extract what came before as if it were everything."""
    fileobj = tar.fileobj
    assert fileobj is not None
    fileobj.seek(tar.offset)
    block = fileobj.read(tarfile.BLOCKSIZE)
    if len(block) != tarfile.BLOCKSIZE or block.count(0) != tarfile.BLOCKSIZE:
        what = "ends" if not block else "has a damaged or cut header"
        raise UserError(f"archive {archive} is incomplete: it {what} after byte {tar.offset} without tar's "
                        "end-of-archive marker (a truncated download?); delete it and download it again")


def _sanitized(members: list[tarfile.TarInfo]) -> list[tarfile.TarInfo]:
    """Without tarfile's ``data`` filter: copies with no set-id / group / other-write bits, owner rw."""
    out = []
    for m in members:
        m = copy.copy(m)
        m.mode &= 0o755
        if m.isreg() or m.islnk():
            m.mode |= 0o600
        out.append(m)
    return out


def safe_extract(archive: str | Path, dest: str | Path, *, max_bytes: int | None = None,
                 max_members: int | None = None, max_ratio: float | None = None) -> int:
    """Extract ``archive`` into ``dest`` once the whole archive is known to be safe and complete.

    All members are read and checked first (:func:`check_members`: paths and links with the archive's links
    followed, sizes and counts against ``max_bytes`` / ``max_members`` / ``max_ratio``); an archive without
    tar's end-of-archive marker (truncated) is refused; only then is anything written, with tarfile's
    ``data`` filter where this Python has it. Any refusal is a one-line :class:`UserError` and leaves
    ``dest`` untouched. Returns the number of members extracted.
    """
    archive, dest = Path(archive), Path(dest)
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            _check_complete(archive, tar)
            check_members(archive, members, dest, max_bytes=max_bytes, max_members=max_members,
                          max_ratio=max_ratio, archive_size=archive.stat().st_size)
            dest.mkdir(parents=True, exist_ok=True)
            if _DATA_FILTER is not None:
                tar.extractall(dest, members=members, filter="data")
            else:  # pragma: no cover - Python < 3.10.12 / 3.11.4
                tar.extractall(dest, members=_sanitized(members))
    except tarfile.FilterError as exc:
        raise UserError(f"refusing to extract {archive}: {exc}") from exc
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise UserError(f"cannot read archive {archive}: {exc}") from exc
    except OSError as exc:  # a missing archive, a full disk
        raise UserError(f"cannot extract {archive} into {dest}: {exc}") from exc
    return len(members)


def _limits(given: dict[str, float] | None) -> dict[str, Any]:
    known = ("max_bytes", "max_members", "max_ratio")
    unknown = sorted(set(given or {}) - set(known))
    if unknown:
        raise UserError(f"unknown extraction limit(s) {', '.join(unknown)}; known: {', '.join(known)}")
    return dict(given or {})


def archives_for(split: str) -> list[str]:
    """Archive keys (``"train"``, ``"test"``) needed for ``split`` (``all`` = both)."""
    if split == "all":
        return list(STREETHAZARDS.archives)
    split = check_split_name(split)
    return [key for key, a in STREETHAZARDS.archives.items() if split in a.splits]


def download_streethazards(
    root: str | Path,
    split: str = "all",
    url_base: str | None = None,
    checksums: dict[str, str | None] | None = None,
    remove_archive: bool = False,
    progress: bool = True,
    extract_limits: dict[str, float] | None = None,
) -> list[Path]:
    """Download, verify and extract the official archives for ``split`` into ``root``; returns the split
    folders. Work already done (a verified archive, a completed extraction) is skipped.

    ``url_base`` points at a mirror holding the same file names; ``checksums`` overrides the published MD5
    per archive key (``None`` skips the check — only for mirrors you trust: :func:`safe_extract` still refuses
    an unsafe, oversized or truncated archive). ``extract_limits`` overrides :func:`safe_extract`'s limits
    (``{"max_bytes": ..., "max_members": ..., "max_ratio": ...}``).
    """
    root = Path(root).expanduser()
    done: list[Path] = []
    for key in archives_for(split):
        archive = STREETHAZARDS.archives[key]
        md5 = (checksums or {}).get(key, archive.md5)
        marker = root / f".{archive.filename}.extracted"
        folder = root / archive.folder
        if marker.is_file() and folder.is_dir() and marker.read_text().strip() == str(md5):
            log.info("%s already extracted in %s; skipping", archive.filename, folder)
            done.append(folder)
            continue
        tar_path = download_file(STREETHAZARDS.url(key, url_base), root / archive.filename, md5,
                                 progress=progress)
        log.info("extracting %s", tar_path)
        count = safe_extract(tar_path, root, **_limits(extract_limits))
        marker.write_text(f"{md5}\n")
        log.info("extracted %d members into %s", count, folder)
        if remove_archive:
            tar_path.unlink()
        done.append(folder)
    return done
