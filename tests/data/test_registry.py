"""The dataset registry: every dataset declares what evaluation needs once; names resolve only to registered
datasets; a user dataset is registered once and opened like the package's."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from anomalyseg.data import registry as R
from anomalyseg.data.info import STREETHAZARDS
from anomalyseg.data.samples import make_sample
from anomalyseg.errors import UserError


def test_builtin_specs_declare_what_evaluation_needs():
    sh = R.dataset_spec("streethazards")
    assert sh.class_names == STREETHAZARDS.class_names and sh.anomaly_ids == (13,)
    assert sh.protocols == ("per_image", "pooled") and sh.fpr_rule == "first" and sh.void_is_normal
    assert (sh.eval_split, sh.fit_split, sh.train_split) == ("test", "val", "train")
    city = R.dataset_spec("cityscapes")
    assert city.num_classes == 19 and city.anomaly_ids == () and city.eval_split == "val"
    ra = R.dataset_spec("Road-Anomaly")  # case and '-' / '_' alike
    assert ra.name == "road_anomaly" and not ra.has_class_labels and ra.anomaly_ids == (1,)
    assert ra.protocols == ("pooled",) and ra.fpr_rule == "interp" and not ra.void_is_normal
    assert ra.train_split is None and ra.group == R.ALL_ANOMALY_SETS
    assert R.available_datasets(R.ALL_ANOMALY_SETS) == ["road_anomaly", "smiyc_ra21", "smiyc_ro21", "fs_static",
                                                        "fs_lost_found"]


@pytest.mark.parametrize("name", ["nope", "anomalyseg.data.streethazards:StreetHazards", "os:system"])
def test_unknown_names_are_one_line_and_import_nothing(name):
    with pytest.raises(UserError) as err:
        R.dataset_spec(name)
    assert str(err.value).startswith(f"unknown dataset {name!r}; known: streethazards, cityscapes")
    assert "\n" not in str(err.value)


def test_listing_the_names_imports_no_torch():
    probe = ("import sys; from anomalyseg.data.registry import available_datasets; available_datasets(); "
             "print(any(m.split('.')[0] == 'torch' for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_parse_datasets_combines_only_anomaly_sets():
    assert [s.name for s in R.parse_datasets("road_anomaly,fs_static")] == ["road_anomaly", "fs_static"]
    with pytest.raises(UserError, match="only anomaly sets"):
        R.parse_datasets("cityscapes,road_anomaly")
    with pytest.raises(UserError, match="no split 'train'"):
        R.dataset_spec("road_anomaly").open(".", "train")


class _Squares(torch.utils.data.Dataset):
    """Two 8x8 frames: class 0 left, class 1 right, anomaly id 2 in a corner of the second."""

    class info:  # noqa: N801 - the attribute the engine reads, as the package's datasets have
        name = "Squares"
        palette = ((0, 0, 0), (255, 255, 255), (255, 0, 0))

    def __init__(self, transform=None):
        self.transform = transform

    def __len__(self):
        return 2

    def __getitem__(self, i):
        label = np.zeros((8, 8), dtype=np.int64)
        label[:, 4:] = 1
        if i == 1:
            label[:2, :2] = 2
        image = np.zeros((8, 8, 3), dtype=np.uint8)
        return make_sample(image, label, sample_id=f"s{i}", image_path=None, label_path=None,
                           transform=self.transform, what="label")


def test_a_user_dataset_is_registered_once_and_refused_twice(monkeypatch):
    monkeypatch.setattr(R, "_USER", {})
    spec = R.DatasetSpec("squares", "Squares", ("left", "right"), (2,), ("pooled",), "first", False, (8, 8),
                         ("test",), "test", None, None, lambda root, split, transform, on_error: _Squares(transform))
    R.register_dataset(spec)
    assert R.dataset_spec("squares") is spec and "squares" in R.available_datasets()
    with pytest.raises(UserError, match="already registered"):
        R.register_dataset(spec)
    with pytest.raises(UserError, match="already registered"):
        R.register_dataset(R.DatasetSpec("streethazards", *[getattr(spec, f) for f in (
            "title", "class_names", "anomaly_ids", "protocols", "fpr_rule", "void_is_normal", "native_size", "splits",
            "eval_split", "fit_split", "train_split", "opener")]))
    opened = spec.open("anywhere")
    assert len(opened) == 2 and opened[1]["label"][0, 0] == 2
