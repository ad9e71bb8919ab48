"""AnomalyImageFolder on the real Validation_Dataset copies (skipped without ../shared) and on small folders
built here for the error paths; model-size resizing against PIL."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anomalyseg.data.anomaly_folder import (
    PRESETS,
    AnomalyImageFolder,
    ModelResize,
    available_presets,
    eval_at_transform,
    open_anomaly_sets,
    resize_pair,
)
from anomalyseg.data.io import SampleError
from anomalyseg.data.samples import collate_samples
from anomalyseg.errors import UserError

# (preset, images, image size (H, W), raw mask values, % of pixels 0 / 1 / 255) as the package README states them
REAL = [
    ("road_anomaly", 60, (720, 1280), {0, 2}, (90.2, 9.85, 0.0)),
    ("smiyc_ra21", 10, (720, 1280), {0, 1, 255}, (82.2, 14.3, 3.5)),
    ("smiyc_ro21", 30, (1080, 1920), {0, 1, 255}, (30.7, 0.21, 69.1)),
    ("fs_static", 30, (1024, 2048), {0, 1, 255}, (83.6, 1.16, 15.2)),
]


def test_presets_carry_metadata() -> None:
    assert available_presets() == ["road_anomaly", "smiyc_ra21", "smiyc_ro21", "fs_static", "fs_lost_found"]
    folders = {k: p.folder for k, p in PRESETS.items()}
    assert folders == {"road_anomaly": "RoadAnomaly", "smiyc_ra21": "RoadAnomaly21", "smiyc_ro21": "RoadObsticle21",
                       "fs_static": "fs_static", "fs_lost_found": "FS_LostFound_full"}
    for p in PRESETS.values():
        assert p.source and p.licence and p.mask_convention and p.paper["url"].startswith("https://")
        assert p.anomaly_value == (2 if p.key == "road_anomaly" else 1)
        assert p.anomaly_id == 1 and p.ignore_index == 255 and not p.has_class_labels


@pytest.mark.shared
@pytest.mark.parametrize(("preset", "count", "size", "raw_values", "shares"), REAL)
def test_real_sets_counts_values_and_pixel_shares(road_anomaly_root: Path, preset: str, count: int,
                                                  size: tuple[int, int], raw_values: set[int],
                                                  shares: tuple[float, float, float]) -> None:
    ds = AnomalyImageFolder(road_anomaly_root, preset)
    assert len(ds) == count and ds.ids[:3] == ["0", "1", "2"]  # numeric order, paired by stem
    # independent count: every mask file read with PIL, raw values tallied in numpy
    raw = np.zeros(256, dtype=np.int64)
    for mask in sorted((road_anomaly_root / PRESETS[preset].folder / "labels_masks").glob("*.png")):
        raw += np.bincount(np.asarray(Image.open(mask)).ravel(), minlength=256)
    assert {int(v) for v in np.flatnonzero(raw)} == raw_values
    expected = {0: int(raw[0]), 1: int(raw[PRESETS[preset].anomaly_value]), 255: int(raw[255])}
    counts = ds.pixel_counts()
    assert counts == expected
    total = sum(counts.values())
    assert total == count * size[0] * size[1]
    for value, share in zip((0, 1, 255), shares):  # the README's rounded percentages
        assert 100 * counts[value] / total == pytest.approx(share, abs=0.051 if share >= 1 else 0.006)
    sample = ds[count - 1]
    assert sample["image"].dtype == torch.uint8 and tuple(sample["image"].shape) == (3, *size)
    assert sample["label"].dtype == torch.int64 and sample["orig_size"] == size
    assert set(sample["label"].unique().tolist()) <= {0, 1, 255}
    assert sample["id"] == str(count - 1)
    assert sample["image_path"].endswith(f"{count - 1}.{PRESETS[preset].image_format}")


@pytest.mark.shared
def test_open_all_real_sets_and_model_resize(road_anomaly_root: Path) -> None:
    sets = open_anomaly_sets(road_anomaly_root, transform=ModelResize((512, 1024)))
    assert list(sets) == ["road_anomaly", "smiyc_ra21", "smiyc_ro21", "fs_static"]  # FS Lost & Found absent
    batch = collate_samples([sets["smiyc_ro21"][0], sets["fs_static"][0]])
    assert batch["image"].shape == (2, 3, 512, 1024) and batch["image"].dtype == torch.float32
    assert batch["label"].shape == (2, 512, 1024) and batch["orig_size"] == [(1080, 1920), (1024, 2048)]
    with pytest.raises(UserError, match=r"folder .*FS_LostFound_full not found"):
        open_anomaly_sets(road_anomaly_root, ["fs_lost_found"])


@pytest.mark.shared
def test_resize_pair_matches_pil(road_anomaly_root: Path) -> None:
    """Masks: exactly PIL's NEAREST at the protocol size; images: PIL's BILINEAR within one grey level."""
    cases = [("RoadObsticle21", "3", "webp"), ("RoadAnomaly21", "1", "png"), ("fs_static", "4", "jpg")]
    for folder, stem, ext in cases:
        mask = Image.open(road_anomaly_root / folder / "labels_masks" / f"{stem}.png")
        image = Image.open(road_anomaly_root / folder / "images" / f"{stem}.{ext}").convert("RGB")
        img_t = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
        got_img, got_mask = resize_pair(img_t, torch.from_numpy(np.asarray(mask).astype(np.int64)), (512, 1024))
        np.testing.assert_array_equal(got_mask.numpy(), np.asarray(mask.resize((1024, 512), Image.NEAREST)))
        ref = np.asarray(image.resize((1024, 512), Image.BILINEAR)).astype(int)
        assert np.abs(got_img.permute(1, 2, 0).numpy().astype(int) - ref).max() <= 1


def test_eval_at_transforms() -> None:
    image = torch.randint(0, 256, (3, 90, 160), dtype=torch.uint8)
    label = torch.zeros(90, 160, dtype=torch.int64)
    label[40:50, 70:90] = 1
    img, lab = eval_at_transform("model", (32, 64))(image, label)
    assert img.shape == (3, 32, 64) and lab.shape == (32, 64) and set(lab.unique().tolist()) == {0, 1}
    img, lab = eval_at_transform("label", (32, 64))(image, label)
    assert img.shape == (3, 32, 64) and lab is label  # stretched to the model size; mask untouched
    torch.testing.assert_close(img, ModelResize((32, 64))(image, label)[0])  # the same image either way
    with pytest.raises(UserError, match="needs the model input size"):
        eval_at_transform("model", None)
    with pytest.raises(UserError, match="eval_at must be one of label, model"):
        eval_at_transform("input", (32, 64))


def _write_set(root: Path, masks: dict[str, np.ndarray], image_ext: str = "png",
               image_sizes: dict[str, tuple[int, int]] | None = None) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "labels_masks").mkdir()
    rng = np.random.default_rng(0)
    for stem, mask in masks.items():
        h, w = (image_sizes or {}).get(stem, mask.shape)
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "images" / f"{stem}.{image_ext}")
        Image.fromarray(mask.astype(np.uint8)).save(root / "labels_masks" / f"{stem}.png")
    return root


def test_generic_folder_road_anomaly_mapping_and_transform(tmp_path: Path) -> None:
    mask = np.zeros((6, 8), dtype=np.uint8)
    mask[2:4, 3:5] = 2
    root = _write_set(tmp_path / "RoadAnomaly", {"0": mask, "1": mask})
    ds = AnomalyImageFolder(root)  # preset recognised from the folder name: value 2 -> 1
    assert ds.preset == "road_anomaly" and ds.info.anomaly_value == 2
    np.testing.assert_array_equal(ds[0]["label"].numpy(), (mask == 2).astype(np.int64))
    seen = []
    ds = AnomalyImageFolder(root, "road_anomaly", transform=lambda im, lab: seen.append(lab.clone()) or (im, lab))
    ds[1]
    assert seen[0].tolist() == (mask == 2).astype(int).tolist()
    other = _write_set(tmp_path / "mine", {"a": np.where(mask == 2, 7, 255).astype(np.uint8)})
    assert AnomalyImageFolder(other, anomaly_value=7).pixel_counts() == {0: 0, 1: 4, 255: 44}


def test_errors_are_one_line(tmp_path: Path) -> None:
    mask = np.zeros((4, 5), dtype=np.uint8)
    cases = []
    with pytest.raises(UserError) as info:
        AnomalyImageFolder(tmp_path / "nowhere")
    cases.append((info, "anomaly set folder not found"))
    (tmp_path / "noimages").mkdir()
    with pytest.raises(UserError) as info:
        AnomalyImageFolder(tmp_path / "noimages")
    cases.append((info, "images/ is missing"))
    lonely = _write_set(tmp_path / "lonely", {"0": mask, "1": mask})
    (lonely / "labels_masks" / "1.png").unlink()
    with pytest.raises(UserError) as info:
        AnomalyImageFolder(lonely)
    cases.append((info, r"1 image\(s\) .* have no mask labels_masks/STEM.png: 1.png"))
    bad = _write_set(tmp_path / "bad", {"0": np.full((4, 5), 2, dtype=np.uint8)})
    with pytest.raises(SampleError) as info:
        AnomalyImageFolder(bad)[0]
    cases.append((info, r"unexpected mask values \[2\] .* use preset 'road_anomaly' or anomaly_value=2"))
    sizes = _write_set(tmp_path / "sizes", {"0": mask}, image_sizes={"0": (6, 5)})
    with pytest.raises(SampleError) as info:
        AnomalyImageFolder(sizes)[0]
    cases.append((info, r"image and mask sizes differ: .*0.png is 5x6, .*0.png is 5x4"))
    with pytest.raises(UserError) as info:
        AnomalyImageFolder(sizes, preset="road_anomly")
    cases.append((info, "unknown anomaly set preset 'road_anomly'; available: road_anomaly"))
    for exc, pattern in cases:
        assert "\n" not in str(exc.value)
        assert re.search(pattern, str(exc.value)), str(exc.value)
