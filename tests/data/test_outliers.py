"""Outlier exposure, data side: the three outlier sources (folder of RGBA PNGs, COCO-style json, procedural)
and the paster (probability, count, scale, position, feathering, label 254 exactly where alpha >= 0.5, the
crop / flip / jitter draws untouched), checked against small independent references written here."""

from __future__ import annotations

import json
import pickle
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anomalyseg.constants import OUTLIER_LABEL
from anomalyseg.data.io import SampleError
from anomalyseg.data.outliers import Cutout, OutlierSource, open_outlier_source
from anomalyseg.data.outliers.coco import DEFAULT_EXCLUDED, MIN_AREA, CocoSource, default_exclusions
from anomalyseg.data.outliers.folder import FolderSource
from anomalyseg.data.outliers.paste import PasteOutliers, paste_image, paste_label
from anomalyseg.data.outliers.procedural import ProceduralSource
from anomalyseg.data.transforms import TrainTransform
from anomalyseg.errors import UserError

#: The 80 COCO 2017 instance categories (cocodataset.org), an independent list for the default exclusions.
COCO_NAMES = {
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow", "elephant",
    "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard",
    "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange", "broccoli",
    "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed", "dining table", "toilet",
    "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
}


def _rgba(path: Path, size=(40, 30), box=(5, 4, 25, 20), colour=(200, 40, 10)) -> Path:
    """An RGBA PNG (w, h = size), opaque ``colour`` inside ``box`` (x0, y0, x1, y1), transparent elsewhere."""
    a = np.zeros((size[1], size[0], 4), np.uint8)
    a[..., :3] = 77  # colour of transparent pixels: must never show up in a cutout's opaque part
    x0, y0, x1, y1 = box
    a[y0:y1, x0:x1] = (*colour, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a, "RGBA").save(path)
    return path


class Square:
    """A stub source: a ``side`` x ``side`` square of one colour, alpha 1 (hard edge)."""

    name, roots, files = "square", (), ()

    def __init__(self, colour=(250, 10, 120), side: int = 10) -> None:
        self.colour, self.side = colour, side

    def sample(self, rng: np.random.Generator, longer_side: int) -> Cutout:
        return Cutout(np.full((self.side, self.side, 3), self.colour, np.uint8), np.ones((self.side,) * 2, np.float32))


def _one_line(exc: pytest.ExceptionInfo, *needles: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg and all(n in msg for n in needles), msg


# -- folder --------------------------------------------------------------------------------------------
def test_folder_source_reads_rgba_cutouts_cropped_to_their_opaque_pixels(tmp_path):
    _rgba(tmp_path / "b.png", box=(5, 4, 25, 20), colour=(200, 40, 10))
    _rgba(tmp_path / "sub" / "a.png", box=(0, 0, 3, 7), colour=(1, 2, 3))
    (tmp_path / "notes.txt").write_text("not a cutout")
    src = FolderSource(tmp_path)
    assert isinstance(src, OutlierSource) and len(src) == 2 and src.roots == (tmp_path,)
    assert [p.relative_to(tmp_path).as_posix() for p in src.files] == ["b.png", "sub/a.png"]
    cut = src.read(0)
    assert cut.rgb.shape == (16, 20, 3) and cut.alpha.shape == (16, 20) and cut.rgb.dtype == np.uint8
    assert (cut.alpha == 1).all() and (cut.rgb == (200, 40, 10)).all()
    assert src.read(1).rgb.shape == (7, 3, 3)
    picks = [src.sample(np.random.default_rng(s), 50).rgb.shape for s in range(20)]
    assert {(16, 20, 3), (7, 3, 3)} == set(picks)
    assert picks == [src.sample(np.random.default_rng(s), 50).rgb.shape for s in range(20)]


@pytest.mark.parametrize("case", ["missing", "empty", "rgb", "corrupt"])
def test_folder_source_refuses_an_empty_or_unreadable_folder_in_one_line(tmp_path, case):
    root = tmp_path / "cutouts"
    if case != "missing":
        root.mkdir()
    if case == "rgb":
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "plain.png")
    if case == "corrupt":
        _rgba(root / "good.png")
        (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(UserError) as exc:
        open_outlier_source("folder", root=root)
    needle = {"missing": "no folder", "empty": "no *.png", "rgb": "no alpha channel", "corrupt": "cannot be read"}
    _one_line(exc, needle[case], str(root))


def test_folder_cutout_without_an_opaque_pixel_is_a_sample_error(tmp_path):
    Image.fromarray(np.zeros((8, 8, 4), np.uint8), "RGBA").save(tmp_path / "clear.png")
    with pytest.raises(SampleError, match="no opaque pixel"):
        FolderSource(tmp_path).read(0)


def test_open_outlier_source_names_the_missing_setting():
    with pytest.raises(UserError, match=r"needs outlier_exposure\.root"):
        open_outlier_source("folder")
    with pytest.raises(UserError, match=r"needs outlier_exposure\.annotations"):
        open_outlier_source("coco", root=".")
    with pytest.raises(UserError, match="choose one of procedural, folder, coco"):
        open_outlier_source("imagenet")
    assert isinstance(open_outlier_source("procedural"), ProceduralSource)


# -- COCO ----------------------------------------------------------------------------------------------
def _coco(root: Path) -> tuple[Path, np.ndarray]:
    """Two 64x48 images; instances: dog (kept), person (excluded by default), a crowd kite, a small dog,
    a kite as compressed RLE (kept). Returns (json path, image 1 pixels)."""
    from pycocotools import mask as mask_api

    rng = np.random.default_rng(0)
    (root / "img").mkdir(parents=True)
    pixels = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(root / "img" / "1.png")
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(root / "img" / "2.png")
    kite = np.zeros((48, 64), np.uint8)
    kite[10:46, 20:62] = 1
    rle = mask_api.encode(np.asfortranarray(kite))
    rle["counts"] = rle["counts"].decode()
    rect = [4.0, 6.0, 44.0, 6.0, 44.0, 40.0, 4.0, 40.0]  # 40 x 34 rectangle at (4, 6)
    anns = [
        {"id": 1, "image_id": 1, "category_id": 18, "segmentation": [rect], "bbox": [4, 6, 40, 34], "area": 1360,
         "iscrowd": 0},
        {"id": 2, "image_id": 2, "category_id": 1, "segmentation": [rect], "bbox": [4, 6, 40, 34], "area": 1360,
         "iscrowd": 0},
        {"id": 3, "image_id": 2, "category_id": 38, "segmentation": {"size": [48, 64], "counts": [100, 2000, 972]},
         "bbox": [1, 2, 40, 40], "area": 2000, "iscrowd": 1},
        {"id": 4, "image_id": 1, "category_id": 18, "segmentation": [[0, 0, 10, 0, 10, 10, 0, 10]],
         "bbox": [0, 0, 10, 10], "area": 100, "iscrowd": 0},
        {"id": 5, "image_id": 2, "category_id": 38, "segmentation": rle, "bbox": [20, 10, 42, 36], "iscrowd": 0},
    ]
    data = {"images": [{"id": 1, "file_name": "1.png", "height": 48, "width": 64},
                       {"id": 2, "file_name": "2.png", "height": 48, "width": 64}],
            "annotations": anns,
            "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}, {"id": 38, "name": "kite"}]}
    path = root / "instances_tiny.json"
    path.write_text(json.dumps(data))
    return path, pixels


def test_coco_source_cuts_out_instances_of_classes_the_target_does_not_know(tmp_path):
    pytest.importorskip("pycocotools")
    ann, pixels = _coco(tmp_path)
    src = open_outlier_source("coco", root=tmp_path / "img", annotations=ann, dataset="streethazards")
    assert isinstance(src, CocoSource) and len(src) == 2  # dog + RLE kite; person, crowd and small skipped
    assert "person" in src.excluded and [p.name for p in src.files] == ["1.png", "2.png"]
    dog = src.read(0)
    assert dog.rgb.shape == (34, 40, 3) and (dog.rgb == pixels[6:40, 4:44]).all()
    assert abs(dog.alpha.sum() - 40 * 34) <= 40 + 34  # the rectangle polygon, up to its border pixels
    kite = src.read(1)
    assert kite.alpha.shape == (36, 42) and (kite.alpha == 1).all()
    assert MIN_AREA > 100


def test_coco_exclude_classes_overrides_the_default_and_must_name_real_categories(tmp_path):
    pytest.importorskip("pycocotools")
    ann, _ = _coco(tmp_path)
    src = CocoSource(tmp_path / "img", ann, exclude_classes=["dog"])
    assert len(src) == 2 and src.excluded == ("dog",)  # person + kite
    with pytest.raises(UserError) as exc:
        CocoSource(tmp_path / "img", ann, exclude_classes=["persn"])
    _one_line(exc, "'persn'", "categories: dog, kite, person")
    with pytest.raises(UserError) as exc:
        CocoSource(tmp_path / "img", ann, exclude_classes=["dog", "kite", "person"])
    _one_line(exc, "no usable instance")


@pytest.mark.parametrize("case", ["no json", "not coco", "missing image", "no pycocotools"])
def test_coco_source_bad_input_is_one_line(tmp_path, monkeypatch, case):
    pytest.importorskip("pycocotools")
    ann, _ = _coco(tmp_path)
    needle = {"no json": "no file", "not coco": "not a COCO instances file", "missing image": "2.png",
              "no pycocotools": "anomalyseg[coco]"}[case]
    if case == "no json":
        ann = tmp_path / "nothing.json"
    elif case == "not coco":
        ann.write_text("[1, 2]")
    elif case == "missing image":
        (tmp_path / "img" / "2.png").unlink()
    else:
        monkeypatch.setitem(sys.modules, "pycocotools", None)
    with pytest.raises(UserError) as exc:
        CocoSource(tmp_path / "img", ann)
    _one_line(exc, needle)


def test_sources_and_the_paster_pickle_for_spawned_loader_workers(tmp_path):
    pytest.importorskip("pycocotools")
    ann, _ = _coco(tmp_path / "coco")
    _rgba(tmp_path / "cutouts" / "a.png")
    sources = [ProceduralSource(), FolderSource(tmp_path / "cutouts"), CocoSource(tmp_path / "coco" / "img", ann)]
    for src in sources:
        copy = pickle.loads(pickle.dumps(PasteOutliers(src, p=1.0))).source
        a, b = src.sample(np.random.default_rng(1), 30), copy.sample(np.random.default_rng(1), 30)
        assert (a.rgb == b.rgb).all() and (a.alpha == b.alpha).all()


def test_default_exclusions_are_coco_categories_of_the_target_domain():
    for names in DEFAULT_EXCLUDED.values():
        assert set(names) <= COCO_NAMES
        assert {"person", "car", "bicycle", "motorcycle", "bus", "truck", "traffic light"} <= set(names)
        assert "dog" not in names and "kite" not in names
    assert set(default_exclusions("my_dataset")) == set().union(*DEFAULT_EXCLUDED.values())
    assert default_exclusions("cityscapes") == DEFAULT_EXCLUDED["cityscapes"]


# -- procedural ----------------------------------------------------------------------------------------
def test_procedural_source_draws_sized_deterministic_objects():
    src = ProceduralSource()
    assert src.roots == () and list(src.files) == []
    for seed in range(40):
        cut = src.sample(np.random.default_rng(seed), 48)
        again = src.sample(np.random.default_rng(seed), 48)
        assert (cut.rgb == again.rgb).all() and (cut.alpha == again.alpha).all()
        assert cut.rgb.dtype == np.uint8 and cut.alpha.dtype == np.float32 and cut.rgb.shape[:2] == cut.alpha.shape
        assert cut.alpha.min() >= 0 and cut.alpha.max() <= 1 and (cut.alpha >= 0.5).sum() >= 4
        assert max(cut.alpha.shape) <= 48  # cropped to the object: never larger than asked


# -- the paster ----------------------------------------------------------------------------------------
def _expected(background: np.ndarray, label: np.ndarray, layers) -> tuple[np.ndarray, np.ndarray]:
    """Reference compositing in numpy, pixel by layer pixel (no slicing shared with the code under test)."""
    img, lab = background.astype(np.float64), label.copy()
    H, W = label.shape
    for layer in layers:
        alpha, rgb = layer.alpha.numpy(), layer.rgb.numpy()
        for (y, x), a in np.ndenumerate(alpha):
            yy, xx = layer.top + y, layer.left + x
            if 0 <= yy < H and 0 <= xx < W:
                img[:, yy, xx] = a * rgb[:, y, x] + (1 - a) * img[:, yy, xx]
                if a >= 0.5:
                    lab[yy, xx] = OUTLIER_LABEL
    return np.clip(np.rint(img), 0, 255), lab


@pytest.mark.parametrize("blend_px", [0.0, 3.0])
def test_p1_pastes_k_objects_labelled_254_exactly_where_alpha_is_half_or_more(blend_px):
    paster = PasteOutliers(ProceduralSource(), p=1.0, k=(2, 4), scale_range=(0.1, 0.5), blend_px=blend_px)
    rng = np.random.default_rng(3)
    counts = set()
    for _ in range(6):
        background = torch.from_numpy(rng.integers(0, 256, (3, 40, 56), dtype=np.uint8))
        label = torch.from_numpy(rng.integers(0, 13, (40, 56)))
        layers = paster.plan(40, 56, rng)
        counts.add(len(layers))
        want_img, want_lab = _expected(background.numpy(), label.numpy(), layers)
        got_lab = paste_label(label, layers)
        assert (got_lab.numpy() == want_lab).all() and got_lab.dtype == label.dtype
        assert (got_lab == OUTLIER_LABEL).any()
        assert np.abs(paste_image(background, layers).numpy().astype(int) - want_img).max() <= 1
    assert counts <= {2, 3, 4} and len(counts) > 1


def test_paster_size_position_and_probability():
    paster = PasteOutliers(Square(), p=0.3, k=(1, 3), scale_range=(0.1, 0.4), blend_px=2.0)
    rng = np.random.default_rng(0)
    H, W = 60, 100
    plans = [paster.plan(H, W, rng) for _ in range(400)]
    assert abs(sum(bool(p) for p in plans) / 400 - 0.3) < 0.08
    layers = [layer for p in plans for layer in p]
    for layer in layers:
        h, w = layer.size
        assert 0.1 * H - 1 <= max(h, w) <= 0.4 * H + 1  # relative to the crop's shorter side
        pad = (layer.alpha.shape[0] - h) // 2
        cy, cx = layer.top + pad + h // 2, layer.left + pad + w // 2
        assert 0 <= cy < H and 0 <= cx < W  # centred inside the crop: never entirely outside
    sides = [max(layer.size) / H for layer in layers]
    assert min(sides) < 0.15 and max(sides) > 0.35  # the range is used, not one size


def test_feathered_edge_fades_the_object_itself_into_the_scene():
    colour = (250, 10, 120)
    paster = PasteOutliers(Square(colour, side=30), p=1.0, k=(1, 1), scale_range=(0.5, 0.5), blend_px=6.0)
    layer = paster.layer(Square(colour, side=30).sample(np.random.default_rng(0), 30), 30, np.random.default_rng(0))
    alpha, rgb = layer.alpha.numpy(), layer.rgb.numpy()
    pad = (alpha.shape[0] - 30) // 2
    row = alpha[pad + 15]
    assert row[0] < 0.01 and abs(row[pad] - 0.5) < 0.1 and row[pad + 15] > 0.99  # ramp centred on the edge
    ramp = np.flatnonzero((row > 0.1) & (row < 0.9))
    assert 3 <= ramp[ramp < pad + 15].size <= 9  # ~blend_px wide
    seen = alpha > 0.01
    assert np.abs(rgb[:, seen] - np.array(colour)[:, None]).max() < 1  # only the object's colour, even outside
    assert abs((alpha >= 0.5).sum() - 900) <= 4 * 30  # the label covers the square, up to its border


def test_p0_is_bit_identical_to_no_paster_and_pasting_leaves_the_crop_draws_alone():
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.integers(0, 256, (3, 70, 90), dtype=np.uint8))
    label = torch.from_numpy(rng.integers(0, 13, (70, 90)))

    def run(tf: TrainTransform, seed: int):
        random.seed(seed)
        torch.manual_seed(seed)
        return tf(image, label)

    plain, zero = TrainTransform((32, 48)), TrainTransform((32, 48), paster=PasteOutliers(Square(), p=0.0))
    for seed in range(5):
        (a, b), (c, d) = run(plain, seed), run(zero, seed)
        assert torch.equal(a, c) and torch.equal(b, d)
    # p=1 without photometric steps: outside the objects the crop is exactly the unpasted one
    kw = {"color_jitter": False, "blur": False, "mean": None, "std": None}
    paster = PasteOutliers(Square(), p=1.0, k=(2, 2), scale_range=(0.2, 0.4), blend_px=2.0)
    ref, pasted = TrainTransform((32, 48), **kw), TrainTransform((32, 48), paster=paster, **kw)
    for seed in range(5):
        (a, b), (c, d) = run(ref, seed), run(pasted, seed)
        random.seed(seed)  # the paster's draws: Python's random only
        layers = paster.plan(32, 48, np.random.default_rng(random.getrandbits(64)))
        cover = paste_label(torch.zeros(32, 48, dtype=torch.long), [ly._replace(alpha=(ly.alpha > 0).float())
                                                                     for ly in layers]) == OUTLIER_LABEL
        assert torch.equal(d, paste_label(b, layers)) and (d == OUTLIER_LABEL).any()
        assert torch.equal(a[:, ~cover], c[:, ~cover]) and not torch.equal(a, c)


def test_paster_sits_between_the_geometric_and_the_photometric_steps():
    tf = TrainTransform(32, paster=PasteOutliers(Square(), p=0.5))
    names = [type(t).__name__ for t in tf.pipeline.transforms]
    assert names[:4] == ["ScaleCrop", "RandomHorizontalFlip", "PasteOutliers", "ColorJitter"]
    image, label = torch.zeros(3, 40, 40, dtype=torch.uint8), torch.zeros(40, 40, dtype=torch.long)
    out, lab = TrainTransform(32, paster=PasteOutliers(Square(), p=1.0))(image, label)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32 and lab.dtype == torch.long
    assert set(lab.unique().tolist()) == {0, OUTLIER_LABEL}


def test_procedural_shapes_subset_draws_only_those(monkeypatch):
    """``shapes`` restricts the procedural family (the benchmark holds one shape out for choosing settings)."""
    from anomalyseg.data.outliers import open_outlier_source
    from anomalyseg.data.outliers import procedural as P

    drawn: list[str] = []
    for name, real in dict(P._DRAW).items():
        monkeypatch.setitem(P._DRAW, name, lambda *a, _n=name, _f=real: (drawn.append(_n), _f(*a))[1])
    rng = np.random.default_rng(0)
    source = open_outlier_source("procedural", shapes=["glyph", "plank"])
    for _ in range(40):
        assert source.sample(rng, 24).alpha.max() > 0
    assert set(drawn) == {"glyph", "plank"}
    drawn.clear()
    for _ in range(40):
        open_outlier_source("procedural").sample(rng, 24)
    assert set(drawn) == set(P.SHAPES)  # the default draws every shape
    with pytest.raises(UserError, match="'star'; the procedural shapes are polygon, glyph, blocks, plank"):
        open_outlier_source("procedural", shapes=["glyph", "star"])
    with pytest.raises(UserError, match="source=folder has none"):
        open_outlier_source("folder", root=".", shapes=["glyph"])
