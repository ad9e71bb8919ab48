"""Fetching and unpacking the official StreetHazards tarballs: resumable HTTP download, MD5 check, safe extract.

Own code on top of urllib + tarfile (torchvision's ``download_and_extract_archive`` neither resumes a partial
download nor refuses a tar that escapes its folder); extraction uses tarfile's ``data`` filter *and* checks
every member first, so a malicious archive is refused before anything is written.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path, PurePosixPath

from tqdm import tqdm

from anomalyseg.data.info import STREETHAZARDS
from anomalyseg.data.layout import check_split_name
from anomalyseg.errors import UserError

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
        with open(part, "ab" if offset else "wb") as fh, tqdm(
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


def _refuse(archive: Path, name: str, why: str) -> UserError:
    return UserError(f"refusing to extract {archive}: member {name!r} {why}")


def check_members(archive: Path, members: list[tarfile.TarInfo], dest: Path) -> None:
    """Refuse absolute paths, ``..``, links that point outside ``dest``, and device files."""
    dest = dest.resolve()
    for m in members:
        pure = PurePosixPath(m.name)
        if m.name.startswith(("/", "\\")) or pure.is_absolute() or (len(m.name) > 1 and m.name[1] == ":"):
            raise _refuse(archive, m.name, "has an absolute path")
        if ".." in pure.parts or ".." in PurePosixPath(m.name.replace("\\", "/")).parts:
            raise _refuse(archive, m.name, "contains '..'")
        target = (dest / m.name).resolve()
        if target != dest and dest not in target.parents:
            raise _refuse(archive, m.name, "resolves outside the destination")
        if m.ischr() or m.isblk() or m.isfifo():
            raise _refuse(archive, m.name, "is a device or pipe")
        if m.issym() or m.islnk():
            link = PurePosixPath(m.linkname)
            if link.is_absolute():
                raise _refuse(archive, m.name, f"links to an absolute path {m.linkname!r}")
            base = (dest / m.name).parent if m.issym() else dest
            resolved = (base / m.linkname).resolve()
            if resolved != dest and dest not in resolved.parents:
                raise _refuse(archive, m.name, f"links outside the destination ({m.linkname!r})")


def safe_extract(archive: str | Path, dest: str | Path) -> int:
    """Extract ``archive`` into ``dest`` after :func:`check_members`, with tarfile's ``data`` filter.

    Returns the number of members extracted.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            check_members(archive, members, dest)
            tar.extractall(dest, members=members, filter="data")
    except tarfile.FilterError as exc:
        raise UserError(f"refusing to extract {archive}: {exc}") from exc
    except (tarfile.TarError, EOFError) as exc:
        raise UserError(f"cannot read archive {archive}: {exc}") from exc
    return len(members)


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
) -> list[Path]:
    """Download, verify and extract the official archives for ``split`` into ``root``; returns the split
    folders. Work already done (a verified archive, a completed extraction) is skipped.

    ``url_base`` points at a mirror holding the same file names; ``checksums`` overrides the published MD5
    per archive key (``None`` skips the check — only for mirrors you trust).
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
        count = safe_extract(tar_path, root)
        marker.write_text(f"{md5}\n")
        log.info("extracted %d members into %s", count, folder)
        if remove_archive:
            tar_path.unlink()
        done.append(folder)
    return done
