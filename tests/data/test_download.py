"""Download + extract against a loopback HTTP server: resume, checksum, skip, malicious archives refused."""

from __future__ import annotations

import hashlib
import io
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anomalyseg.cli import main
from anomalyseg.data import StreetHazards
from anomalyseg.data.download import download_file, download_streethazards, safe_extract
from anomalyseg.errors import UserError


class _Server:
    """Serves ``files`` (name -> bytes) with Range support; ``cut`` makes the next response stop early."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.cut: int | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                name = self.path.lstrip("/")
                rng = self.headers.get("Range")
                server.requests.append((name, rng))
                data = server.files.get(name)
                if data is None:
                    self.send_error(404)
                    return
                start = int(rng.removeprefix("bytes=").split("-")[0]) if rng else 0
                if start >= len(data):
                    self.send_response(416)
                    self.end_headers()
                    return
                body = data[start:]
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut is not None:
                    body, server.cut = body[: server.cut], None
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    yield srv
    srv.close()


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def make_tar() -> bytes:
    """A tiny streethazards_test.tar in the official layout (2 samples), with padding to make it ~300 kB."""
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        records = []
        for i in (1, 2):
            _add(tar, f"streethazards_test/test/images/test/t5/{i}.png", _png(rng.integers(0, 255, (40, 64, 3),
                                                                                           np.uint8)))
            _add(tar, f"streethazards_test/test/annotations/test/t5/{i}.png",
                 _png(rng.integers(1, 15, (40, 64), np.uint8)))
            records.append(f'{{"fpath_img": "images/test/t5/{i}.png", "fpath_segm": "annotations/test/t5/{i}.png",'
                           f' "width": 64, "height": 40, "dbName": "StreetHazards"}}')
        _add(tar, "streethazards_test/test/test.odgt", ("[" + ", ".join(records) + "]").encode())
        _add(tar, "streethazards_test/test/padding.bin", rng.bytes(300_000))
    return buf.getvalue()




def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_download_extract_and_skip(server: _Server, tmp_path: Path) -> None:
    data = make_tar()
    server.files["streethazards_test.tar"] = data
    root = tmp_path / "sh"
    folders = download_streethazards(root, "test", url_base=server.url, checksums={"test": _md5(data)},
                                     progress=False)
    assert folders == [root / "streethazards_test"]
    assert (root / "streethazards_test.tar").read_bytes() == data
    assert len(StreetHazards(root, "test")) == 2
    n = len(server.requests)
    download_streethazards(root, "test", url_base=server.url, checksums={"test": _md5(data)}, progress=False)
    assert len(server.requests) == n  # already extracted: nothing fetched


def test_resume_from_partial_file(server: _Server, tmp_path: Path) -> None:
    data = make_tar()
    server.files["streethazards_test.tar"] = data
    dest = tmp_path / "streethazards_test.tar"
    (tmp_path / "streethazards_test.tar.part").write_bytes(data[:100_000])
    download_file(f"{server.url}/streethazards_test.tar", dest, _md5(data), progress=False)
    assert server.requests == [("streethazards_test.tar", "bytes=100000-")]
    assert dest.read_bytes() == data and not (tmp_path / "streethazards_test.tar.part").exists()


def test_interrupted_transfer_resumes(server: _Server, tmp_path: Path) -> None:
    data = make_tar()
    server.files["streethazards_test.tar"] = data
    server.cut = 123_456
    dest = tmp_path / "streethazards_test.tar"
    download_file(f"{server.url}/streethazards_test.tar", dest, _md5(data), progress=False, retry_wait=0)
    assert [r[1] for r in server.requests] == [None, "bytes=123456-"]
    assert dest.read_bytes() == data


def test_checksum_mismatch_via_cli(server: _Server, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    server.files["streethazards_test.tar"] = make_tar()  # not the official archive: the official MD5 fails
    root = tmp_path / "sh"
    code = main(["data", "download", "--root", str(root), "--split", "test", "--url-base", server.url,
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "checksum mismatch" in err and "8c547c1346b00c21b2483887110bfea7" in err and err.count("\n") == 1
    assert (root / "streethazards_test.tar.bad").exists()
    assert not (root / "streethazards_test.tar").exists() and not (root / "streethazards_test").exists()


def test_http_error_is_one_line(server: _Server, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="HTTP 404"):
        download_file(f"{server.url}/missing.tar", tmp_path / "missing.tar", progress=False)


def test_file_url(tmp_path: Path) -> None:
    data = make_tar()
    src = tmp_path / "mirror"
    src.mkdir()
    (src / "streethazards_test.tar").write_bytes(data)
    folders = download_streethazards(tmp_path / "sh", "test", url_base=src.as_uri(),
                                     checksums={"test": _md5(data)}, progress=False)
    assert (folders[0] / "test" / "test.odgt").is_file()


def _evil_tar(path: Path, kind: str) -> None:
    with tarfile.open(path, "w") as tar:
        _add(tar, "streethazards_test/test/ok.txt", b"fine")
        if kind == "absolute":
            _add(tar, str(path.parent / "outside_abs.txt"), b"evil")
        elif kind == "dotdot":
            _add(tar, "streethazards_test/../../outside_dotdot.txt", b"evil")
        elif kind in ("symlink", "hardlink"):
            info = tarfile.TarInfo("streethazards_test/link")
            info.type = tarfile.SYMTYPE if kind == "symlink" else tarfile.LNKTYPE
            info.linkname = "../../outside_link.txt" if kind == "symlink" else "../outside_link.txt"
            tar.addfile(info)
        elif kind == "device":
            info = tarfile.TarInfo("streethazards_test/dev")
            info.type = tarfile.CHRTYPE
            tar.addfile(info)


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink", "hardlink", "device"])
def test_malicious_tar_is_refused(tmp_path: Path, kind: str) -> None:
    archive = tmp_path / "evil.tar"
    _evil_tar(archive, kind)
    dest = tmp_path / "a" / "b"
    with pytest.raises(UserError, match="refusing to extract"):
        safe_extract(archive, dest)
    assert not any(tmp_path.rglob("outside_*"))
    assert not (dest / "streethazards_test").exists()  # refused before writing anything


def test_symlink_inside_is_allowed(tmp_path: Path) -> None:
    archive = tmp_path / "ok.tar"
    with tarfile.open(archive, "w") as tar:
        _add(tar, "d/file.txt", b"x")
        info = tarfile.TarInfo("d/alias.txt")
        info.type, info.linkname = tarfile.SYMTYPE, "file.txt"
        tar.addfile(info)
    assert safe_extract(archive, tmp_path / "out") == 2
    assert (tmp_path / "out" / "d" / "alias.txt").read_bytes() == b"x"


# --- hostile archives, each built here: refused before anything is written -----------------------------------
def _link(tar: tarfile.TarFile, name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    tar.addfile(info)


def _assert_nothing_written(tmp_path: Path, dest: Path) -> None:
    assert not dest.exists()  # not even the folder: refused before anything is written
    assert not [p for p in tmp_path.rglob("*") if p.is_symlink()]


#: Link chains whose members each look harmless alone (the old per-member check, and tarfile's ``data`` filter
#: applied member by member, let the first one through: ``d/a`` ended up pointing above ``dest``).
CHAINS = {
    "later_link_makes_earlier_escape": [("d/a", "b/../.."), ("d/b", ".")],
    "earlier_link_makes_later_escape": [("d/b", "."), ("d/a", "b/../..")],
    "top_level": [("b", "."), ("a", "b/..")],
    "two_hops": [("d/b", "."), ("d/c", "b"), ("d/a", "c/../..")],
    "loop": [("x", "y"), ("y", "x")],
}


@pytest.mark.parametrize("case", sorted(CHAINS))
def test_symlink_chains_are_resolved_as_after_extraction(tmp_path: Path, case: str) -> None:
    archive = tmp_path / "chain.tar"
    with tarfile.open(archive, "w") as tar:
        _add(tar, "ok.txt", b"fine")
        for name, target in CHAINS[case]:
            _link(tar, name, target)
    dest = tmp_path / "p" / "dest"
    with pytest.raises(UserError, match="refusing to extract") as err:
        safe_extract(archive, dest)
    assert "\n" not in str(err.value)
    _assert_nothing_written(tmp_path, dest)


def test_file_written_through_a_link_chain_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "through.tar"
    with tarfile.open(archive, "w") as tar:
        _link(tar, "d/b", ".")
        _link(tar, "d/up", "b/..")  # = dest: fine by itself
        _add(tar, "d/up/x.txt", b"fine")  # = dest/x.txt
        _link(tar, "d/hard", "d/up/x.txt", tarfile.LNKTYPE)  # a hard link through links, inside
    assert safe_extract(archive, tmp_path / "dest") == 4
    assert (tmp_path / "dest" / "x.txt").read_bytes() == b"fine"
    with tarfile.open(archive, "a") as tar:
        _link(tar, "d/up2", "up/..")  # = above dest
    with pytest.raises(UserError, match="'d/up2' links outside"):
        safe_extract(archive, tmp_path / "dest2")
    _assert_nothing_written(tmp_path / "dest2", tmp_path / "dest2")


def test_a_late_refusal_writes_nothing(tmp_path: Path) -> None:
    """The bad member comes last: before, everything ahead of it was already on disk."""
    archive = tmp_path / "late.tar"
    with tarfile.open(archive, "w") as tar:
        for i in range(5):
            _add(tar, f"streethazards_test/test/{i}.txt", b"fine")
        _link(tar, "streethazards_test/b", ".")
        _link(tar, "streethazards_test/a", "b/..")  # the data filter alone refused this one only when reached
        _link(tar, "streethazards_test/z", "a/..")
    dest = tmp_path / "dest"
    with pytest.raises(UserError, match="refusing to extract"):
        safe_extract(archive, dest)
    _assert_nothing_written(tmp_path, dest)


def test_hard_link_to_a_missing_member_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "hard.tar"
    with tarfile.open(archive, "w") as tar:
        _link(tar, "h", "not/in/archive", tarfile.LNKTYPE)
    with pytest.raises(UserError, match="not a file earlier in the archive"):
        safe_extract(archive, tmp_path / "dest")


def test_member_count_and_size_limits(tmp_path: Path) -> None:
    archive = tmp_path / "five.tar"
    with tarfile.open(archive, "w") as tar:
        for i in range(5):
            _add(tar, f"f{i}.bin", bytes(1000))
    with pytest.raises(UserError, match=r"5 members, more than the limit of 4 \(max_members\)"):
        safe_extract(archive, tmp_path / "a", max_members=4)
    with pytest.raises(UserError, match=r"5000 bytes .* limit of 4999 \(max_bytes\)"):
        safe_extract(archive, tmp_path / "b", max_bytes=4999)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert safe_extract(archive, tmp_path / "c", max_members=5, max_bytes=5000) == 5


def _zero_bomb(path: Path, size: int) -> None:
    """A gzip'd tar holding ``size`` zero bytes (about 1000:1), written without holding them in memory."""

    class Zeros(io.RawIOBase):
        def __init__(self, n: int) -> None:
            self.n = n

        def readable(self) -> bool:
            return True

        def readinto(self, b) -> int:
            k = min(len(b), self.n)
            b[:k] = bytes(k)
            self.n -= k
            return k

    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("zeros.bin")
        info.size = size
        tar.addfile(info, io.BufferedReader(Zeros(size)))


def test_decompression_bomb_is_refused_by_default(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.tar.gz"
    _zero_bomb(archive, 120_000_000)
    assert archive.stat().st_size < 200_000
    with pytest.raises(UserError, match=r"120000000 bytes .* more than 100 times its size \(max_ratio"):
        safe_extract(archive, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()
    small = tmp_path / "small.tar.gz"
    _zero_bomb(small, 2_000_000)  # bounded: under the ratio's 1 MiB floor x 100
    assert safe_extract(small, tmp_path / "ok") == 1
    with pytest.raises(UserError, match="max_ratio"):  # the limit is the caller's to set
        safe_extract(small, tmp_path / "strict", max_ratio=1)


def _two_member_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        _add(tar, "streethazards_test/one.txt", b"1" * 1000)
        _add(tar, "streethazards_test/two.txt", b"2" * 1000)
    return buf.getvalue()


@pytest.mark.parametrize("cut", [512 + 1024, 512 + 1024 + 100, 512 + 1024 + 512 + 300, 512 + 1024 + 512 + 1024])
def test_truncated_tar_is_refused(tmp_path: Path, cut: int) -> None:
    """Cut at a header boundary (tarfile stopped there quietly: 'success' with one member), inside a header,
    inside the data, and just before the end-of-archive marker."""
    archive = tmp_path / "cut.tar"
    archive.write_bytes(_two_member_tar()[:cut])
    dest = tmp_path / "dest"
    with pytest.raises(UserError, match=r"incomplete|cannot read archive") as err:
        safe_extract(archive, dest)
    assert "\n" not in str(err.value)
    assert not dest.exists()


def test_truncated_tar_from_python_api_without_checksum(tmp_path: Path) -> None:
    """``checksums=None`` skips the MD5 (a mirror you trust): the extraction still notices the cut."""
    data = make_tar()
    src = tmp_path / "mirror"
    src.mkdir()
    cut = data.index(b"streethazards_test/test/test.odgt")  # at the header of the 5th member
    assert cut % 512 == 0
    (src / "streethazards_test.tar").write_bytes(data[:cut])
    root = tmp_path / "sh"
    with pytest.raises(UserError, match="incomplete"):
        download_streethazards(root, "test", url_base=src.as_uri(), checksums={"test": None}, progress=False)
    assert not (root / "streethazards_test").exists()
    with pytest.raises(UserError, match="unknown extraction limit"):
        download_streethazards(root, "test", url_base=src.as_uri(), checksums={"test": None}, progress=False,
                               extract_limits={"max_size": 1})


def test_limits_pass_through_download(tmp_path: Path) -> None:
    data = make_tar()
    src = tmp_path / "mirror"
    src.mkdir()
    (src / "streethazards_test.tar").write_bytes(data)
    with pytest.raises(UserError, match="max_members"):
        download_streethazards(tmp_path / "sh", "test", url_base=src.as_uri(), checksums={"test": None},
                               progress=False, extract_limits={"max_members": 3})


def test_modes_are_sanitised(tmp_path: Path) -> None:
    """Set-id and group/other-write bits never reach the disk (tarfile's data filter, or our own fallback)."""
    archive = tmp_path / "modes.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("run.sh")
        info.size, info.mode = 2, 0o6777
        tar.addfile(info, io.BytesIO(b"#!"))
    safe_extract(archive, tmp_path / "dest")
    assert (tmp_path / "dest" / "run.sh").stat().st_mode & 0o7777 == 0o755


def test_missing_archive_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot extract"):
        safe_extract(tmp_path / "nope.tar", tmp_path / "dest")
    assert not (tmp_path / "dest").exists()
