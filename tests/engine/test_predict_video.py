"""``anomalyseg predict`` on videos: every N-th frame predicted exactly as that frame saved as a PNG, the overlay
video, reruns, and the bad inputs (no PyAV, a corrupt video, ``--every 0``)."""

from __future__ import annotations

import csv
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tests.engine.test_evaluate import make_checkpoint, make_tree
from tests.viz.test_gallery import decode, page_data

from anomalyseg.cli import main
from anomalyseg.errors import UserError
from anomalyseg.workflows.predict import predict

av = pytest.importorskip("av")

FPS = 10
FRAMES = 8


def make_video(path: Path, frames: int = FRAMES, size_wh: tuple[int, int] = (64, 48)) -> Path:
    """A clip of a bright square moving right over a gradient, written with PyAV directly (mpeg4: in every build)."""
    w, h = size_wh
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(frames):
            rgb = np.zeros((h, w, 3), np.uint8)
            rgb[..., 0] = np.linspace(0, 200, w, dtype=np.uint8)[None]
            rgb[10:26, 4 + 6 * i:20 + 6 * i] = (250, 240, 30)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())
    return path


def decoded(path: Path) -> list[np.ndarray]:
    """Every frame of ``path`` as RGB, decoded here (the reference, independent of anomalyseg.data.video)."""
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("pvideo")
    tree = make_tree(base / "sh")
    images = next(p for p in tree.rglob("images") if p.is_dir() and any(p.rglob("t5")))
    return {"base": base, "ckpt": make_checkpoint(base / "tiny.pt"), "clip": make_video(base / "clip.mp4"),
            "images": images / "test"}


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "predictions.csv") as fh:
        return list(csv.DictReader(fh))


def test_every_nth_frame_equals_the_frame_as_png(setup, tmp_path):
    out = tmp_path / "o"
    s = predict(setup["ckpt"], setup["clip"], out, device="cpu", progress=False, every=3, threshold=1.0)
    stems = ["clip_f000000", "clip_f000003", "clip_f000006"]
    assert s.predicted == stems and not s.failed
    rows = _rows(out)
    assert [r["stem"] for r in rows] == stems
    assert [int(r["frame"]) for r in rows] == [0, 3, 6]
    assert [float(r["time"]) for r in rows] == pytest.approx([0.0, 0.3, 0.6])
    assert all(r["file"] == str(setup["clip"]) and (r["height"], r["width"]) == ("48", "64") for r in rows)
    for stem in stems:
        for kind in ("heatmaps", "overlays", "masks"):
            assert (out / kind / "max_logit" / f"{stem}.png").is_file()
    # frame 3 decoded here, saved losslessly, predicted as an image: the same score map, bit for bit
    reference = decoded(setup["clip"])
    assert len(reference) == FRAMES
    png = tmp_path / "frame3.png"
    Image.fromarray(reference[3]).save(png)
    predict(setup["ckpt"], png, tmp_path / "png", device="cpu", progress=False)
    ours = np.load(out / "scores" / "max_logit" / "clip_f000003.npy")
    assert ours.shape == (48, 64)
    np.testing.assert_array_equal(ours, np.load(tmp_path / "png" / "scores" / "max_logit" / "frame3.npy"))
    # the overlay video: 3 frames of the overlays, at 10 / 3 fps
    video = out / "videos" / "max_logit" / "clip.mp4"
    assert s.videos == [str(video)]
    frames = decoded(video)
    assert len(frames) == 3 and frames[0].shape == (48, 64, 3)
    with av.open(str(video)) as container:
        assert container.streams.video[0].average_rate == Fraction(FPS, 3)
    overlay = np.asarray(Image.open(out / "overlays" / "max_logit" / "clip_f000006.png"), dtype=float)
    assert np.abs(frames[2] - overlay).mean() < 8  # lossy, but that frame (the square far right)
    assert np.abs(frames[0] - overlay).mean() > np.abs(frames[2] - overlay).mean()
    # each predicted frame is kept as a photo (frames/<stem>.jpg) and the gallery shows it, not a grey stand-in
    kept = np.asarray(Image.open(out / "frames" / "clip_f000006.jpg"), dtype=float)
    assert kept.shape == (48, 64, 3) and np.abs(kept - reference[6]).mean() < 4
    page = (out / "index.html").read_text()
    assert page.count('data-i="') == 3
    shown = decode(page_data(page)["images"][2]["photo"], "jpeg").astype(float)
    assert shown.std() > 20  # the gradient and the square, not a flat grey


def test_rerun_keeps_frames_and_remakes_the_video_only_when_needed(setup, tmp_path):
    out = tmp_path / "o"
    first = predict(setup["ckpt"], setup["clip"], out, device="cpu", progress=False, every=4)
    assert len(first.predicted) == 2 and len(first.videos) == 1
    video = Path(first.videos[0])
    again = predict(setup["ckpt"], setup["clip"], out, device="cpu", progress=False, every=4)
    assert again.kept == first.predicted and not again.predicted and not again.videos
    video.unlink()
    remade = predict(setup["ckpt"], setup["clip"], out, device="cpu", progress=False, every=4)
    assert not remade.predicted and remade.videos == [str(video)] and len(decoded(video)) == 2
    assert len(_rows(out)) == 2
    forced = predict(setup["ckpt"], setup["clip"], out, device="cpu", progress=False, every=4, force=True)
    assert len(forced.predicted) == 2 and forced.videos == [str(video)]


@pytest.mark.parametrize("encoders", [None, ("no_such_encoder", "mpeg4")])
def test_odd_sized_video_is_padded_to_even(setup, tmp_path, monkeypatch, encoders):
    from anomalyseg.data import video as V

    if encoders:  # a PyAV build without libx264 falls back
        monkeypatch.setattr(V, "ENCODERS", encoders)
    odd = [f.rgb()[:47, :63] for f in V.read_frames(setup["clip"], every=5)]
    assert V.write_video(tmp_path / "even.mp4", iter(odd), 5) == 2
    frames = decoded(tmp_path / "even.mp4")
    assert len(frames) == 2 and frames[0].shape == (48, 64, 3)
    with av.open(str(tmp_path / "even.mp4")) as container:
        assert container.streams.video[0].codec_context.name == ("mpeg4" if encoders else "h264")


def test_without_pyav_one_line_exit_2_nothing_written(setup, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` raises ImportError
    out = tmp_path / "o"
    code = main(["predict", "--checkpoint", str(setup["ckpt"]), str(setup["clip"]), "--out", str(out),
                 "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("anomalyseg: error:") and 'pip install "anomalyseg[video]"' in err
    assert not out.exists()


def test_corrupt_video_among_images_is_skipped_and_named(setup, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for p in sorted(setup["images"].rglob("*.png"))[:2]:
        (folder / f"{p.parent.name}_{p.name}").write_bytes(p.read_bytes())
    (folder / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    code = main(["predict", "--checkpoint", str(setup["ckpt"]), str(folder), "--out", str(tmp_path / "o"),
                 "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1
    assert "1 file(s) could not be read" in err and "broken.mp4" in err
    assert len(_rows(tmp_path / "o")) == 2 and not (tmp_path / "o" / "videos").exists()


def test_every_zero_refused(setup, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:  # argparse's usage error
        main(["predict", "--checkpoint", str(setup["ckpt"]), str(setup["clip"]), "--out", str(tmp_path / "o"),
              "--every", "0"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "argument --every: expected a number >= 1, got 0" in err
    with pytest.raises(UserError, match="--every"):
        predict(setup["ckpt"], setup["clip"], tmp_path / "o", every=0)
    assert not (tmp_path / "o").exists()


def test_image_named_like_a_frame_is_refused_before_anything_is_written(setup, tmp_path, capsys):
    """``clip_f000003.png`` beside ``clip.mp4`` would share output names with the video's frame 3."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "clip.mp4").write_bytes(setup["clip"].read_bytes())
    Image.fromarray(decoded(setup["clip"])[3]).save(folder / "clip_f000003.png")
    code = main(["predict", "--checkpoint", str(setup["ckpt"]), str(folder), "--out", str(tmp_path / "o"),
                 "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "clip_f000003.png" in err[0] and "same names" in err[0]
    assert not (tmp_path / "o" / "scores").exists()


def test_rerun_remakes_a_deleted_frame_photo(setup, tmp_path):
    out = tmp_path / "o"
    predict(setup["ckpt"], setup["clip"], out, device="cpu", progress=False, every=4)
    (out / "frames" / "clip_f000004.jpg").unlink()
    again = predict(setup["ckpt"], setup["clip"], out, device="cpu", progress=False, every=4)
    assert again.predicted == ["clip_f000004"] and again.kept == ["clip_f000000"]
    assert (out / "frames" / "clip_f000004.jpg").is_file()
