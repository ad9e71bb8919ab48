"""anomaly_target / mask_ids: the one builder of the metrics' targets, against a direct numpy formula on
hand-made labels, for numpy arrays and for CPU tensors on both dispatch sides."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.metrics.paths import on_path

import anomalyseg.data
from anomalyseg.data import STREETHAZARDS
from anomalyseg.metrics.targets import STREETHAZARDS_ANOMALY_ID, anomaly_target, mask_ids

LABEL = np.array([[0, 3, 7, 13, 14, 255],
                  [255, 13, 13, 2, 0, 3],
                  [14, 1, 255, 12, 13, 250]])

KINDS = ("numpy", "tensor-numpy-path", "tensor-torch-path")


def _call(kind: str, fn, label: np.ndarray, *args, **kwargs) -> np.ndarray:
    """``fn`` on ``label`` as a numpy array or a CPU tensor (either dispatch side); checks type, dtype, shape
    and that the input is left unchanged; returns a numpy copy."""
    before = label.copy()
    if kind == "numpy":
        out = fn(label, *args, **kwargs)
        assert isinstance(out, np.ndarray)
    else:
        t = torch.from_numpy(label)
        out = on_path("numpy" if kind == "tensor-numpy-path" else "torch", lambda: fn(t, *args, **kwargs))
        assert isinstance(out, torch.Tensor) and out.device == t.device
        out = out.numpy()
    assert out.dtype == label.dtype and out.shape == label.shape
    np.testing.assert_array_equal(label, before)
    return out.copy()


def _formula(label, anomaly_ids, ignore_ids, ignore_index, void_label):
    dropped = [*ignore_ids, *([] if void_label is None else [void_label])]
    return np.where(np.isin(label, dropped), ignore_index, np.isin(label, anomaly_ids).astype(int))


@pytest.mark.parametrize("kind", KINDS)
def test_defaults_on_a_hand_made_label(kind):
    want = np.array([[0, 0, 0, 1, 0, 255],
                     [255, 1, 1, 0, 0, 0],
                     [0, 0, 255, 0, 1, 0]])
    np.testing.assert_array_equal(_call(kind, anomaly_target, LABEL), want)
    official = _call(kind, anomaly_target, LABEL, void_label=None)  # label 255 counts as normal
    np.testing.assert_array_equal(official, np.where(want == 255, 0, want))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.uint8])
@pytest.mark.parametrize(("anomaly_ids", "ignore_ids", "ignore_index", "void_label"), [
    ((13,), (), 255, 255),
    ((13,), (), 255, None),
    ((13, 14), (3, 0), 255, 255),
    ((13, 14), (3, 0), 255, None),  # ids left out, label 255 counted as normal
    ((13,), (3,), 254, 255),  # another written value
    ((13,), (), 255, 250),  # another void label: 255 is then an ordinary (normal) id
    ((13, 255), (), 255, 255),  # void wins over an anomaly id
    ((13, 255), (), 255, None),
    ((), (7,), 255, 255),  # no anomaly id: nothing positive
])
def test_equals_the_numpy_formula(kind, dtype, anomaly_ids, ignore_ids, ignore_index, void_label):
    label = LABEL.astype(dtype)
    got = _call(kind, anomaly_target, label, anomaly_ids, ignore_ids, ignore_index, void_label=void_label)
    np.testing.assert_array_equal(got, _formula(LABEL, anomaly_ids, ignore_ids, ignore_index, void_label))


@pytest.mark.parametrize("kind", KINDS)
def test_batched_labels(kind):
    label = np.stack([LABEL, LABEL[::-1], np.full_like(LABEL, 13)])
    got = _call(kind, anomaly_target, label, (13,), (0,))
    np.testing.assert_array_equal(got, _formula(label, (13,), (0,), 255, 255))


def test_anomaly_and_ignored_ids_may_not_overlap():
    for label in (LABEL, torch.from_numpy(LABEL)):
        with pytest.raises(ValueError, match=r"ids \[13\] are both anomaly and ignored"):
            anomaly_target(label, (13, 14), (13, 3))


def test_default_and_public_names():
    assert STREETHAZARDS.anomaly_id == STREETHAZARDS_ANOMALY_ID
    assert anomalyseg.data.anomaly_target is anomaly_target


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [np.int64, np.uint8])
@pytest.mark.parametrize(("ids", "value"), [((13,), 255), ((13, 14, 3), 255), ((), 255), ((13,), 0)])
def test_mask_ids_equals_np_where(kind, dtype, ids, value):
    label = LABEL.astype(dtype)
    got = _call(kind, mask_ids, label, ids, value)
    np.testing.assert_array_equal(got, np.where(np.isin(LABEL, ids), value, LABEL))
