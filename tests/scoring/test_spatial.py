"""Box smoothing, SML boundary suppression and dilated smoothing against scipy.ndimage references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from anomalyseg.scoring.spatial import boundary_suppression, box_smooth, dilated_smoothing, find_boundaries

CROSS = ndimage.generate_binary_structure(2, 1)


def _boundaries_ref(pred: np.ndarray) -> np.ndarray:
    dil = ndimage.grey_dilation(pred, footprint=CROSS, mode="nearest")
    ero = ndimage.grey_erosion(pred, size=(3, 3), mode="nearest")
    return dil != ero


def _suppression_ref(score: np.ndarray, pred: np.ndarray, width: int, iterations: int) -> np.ndarray:
    """The official loop, re-written with scipy morphology and explicit 3x3 window sums."""
    b = _boundaries_ref(pred)
    out = score.astype(np.float64)
    step = width // iterations
    for i in range(iterations):
        r = 0 if i == iterations - 1 else width - step * i - 1
        expanded = ndimage.binary_dilation(b, structure=CROSS, iterations=r) if r > 0 else b
        keep = (~expanded).astype(np.float64)
        xp, kp = np.pad(out * keep, 1, mode="edge"), np.pad(keep, 1, mode="edge")
        H, W = out.shape
        total = sum(xp[dy : dy + H, dx : dx + W] for dy in range(3) for dx in range(3))
        count = sum(kp[dy : dy + H, dx : dx + W] for dy in range(3) for dx in range(3))
        mean = np.where(count > 0, total / np.maximum(count, 1e-12), out)
        out = np.where(keep == 0, mean, out)
    return out


def _pred_map() -> np.ndarray:
    pred = np.zeros((24, 30), dtype=np.int64)
    pred[:, 12:] = 1
    pred[5:14, 3:9] = 2
    pred[16:22, 18:27] = 3
    return pred


def test_find_boundaries_matches_scipy() -> None:
    pred = _pred_map()
    got = find_boundaries(torch.from_numpy(pred)[None])[0].numpy().astype(bool)
    np.testing.assert_array_equal(got, _boundaries_ref(pred))


@pytest.mark.parametrize(("width", "iterations"), [(4, 4), (4, 2), (2, 1)])
def test_boundary_suppression_matches_reference(width: int, iterations: int) -> None:
    pred = _pred_map()
    score = np.random.default_rng(3).normal(size=pred.shape).astype(np.float32)
    got = boundary_suppression(torch.from_numpy(score)[None], torch.from_numpy(pred)[None], width, iterations)
    np.testing.assert_allclose(got[0].numpy(), _suppression_ref(score, pred, width, iterations), atol=1e-5)


def test_boundary_suppression_replaces_boundary_values_only() -> None:
    pred = _pred_map()
    score = np.random.default_rng(4).normal(size=pred.shape).astype(np.float32)
    got = boundary_suppression(torch.from_numpy(score)[None], torch.from_numpy(pred)[None])[0].numpy()
    far = ~ndimage.binary_dilation(_boundaries_ref(pred), structure=CROSS, iterations=3)
    np.testing.assert_array_equal(got[far], score[far])
    assert not np.allclose(got[~far], score[~far])


def _dilated_ref(score: np.ndarray, k: int, d: int, sigma: float) -> np.ndarray:
    c = (k - 1) / 2
    g = np.fromfunction(lambda x, y: np.exp(-((x - c) ** 2 + (y - c) ** 2) / (2 * sigma**2)), (k, k))
    g /= g.sum()
    kernel = np.zeros(((k - 1) * d + 1,) * 2)
    kernel[::d, ::d] = g
    return ndimage.correlate(score.astype(np.float64), kernel, mode="nearest")


@pytest.mark.parametrize(("k", "d"), [(7, 6), (3, 2)])
def test_dilated_smoothing_matches_scipy(k: int, d: int) -> None:
    score = np.random.default_rng(5).normal(size=(20, 26)).astype(np.float32)
    got = dilated_smoothing(torch.from_numpy(score)[None], k, d, 1.0)[0].numpy()
    np.testing.assert_allclose(got, _dilated_ref(score, k, d, 1.0), atol=1e-5)


def test_box_smooth_matches_valid_pixel_mean() -> None:
    score = np.random.default_rng(6).normal(size=(9, 12))
    got = box_smooth(torch.from_numpy(score)[None], 3)[0].numpy()
    total = ndimage.uniform_filter(score, 3, mode="constant", cval=0.0)
    count = ndimage.uniform_filter(np.ones_like(score), 3, mode="constant", cval=0.0)
    np.testing.assert_allclose(got, total / count, atol=1e-12)
    assert box_smooth(torch.from_numpy(score)[None], 1) is not None
    np.testing.assert_array_equal(box_smooth(torch.from_numpy(score)[None], 0)[0].numpy(), score)


def test_constant_map_stays_constant_and_spike_is_smoothed() -> None:
    pred = torch.from_numpy(_pred_map())[None]
    const = torch.full((1, *pred.shape[1:]), 2.5)
    for out in (
        box_smooth(const, 3),
        boundary_suppression(const, pred),
        dilated_smoothing(const),
    ):
        torch.testing.assert_close(out, const)
    spike = torch.zeros(1, 40, 40)
    spike[0, 20, 20] = 1.0
    for out in (box_smooth(spike, 3), dilated_smoothing(spike)):
        assert out.max() < 0.5 and out.min() >= 0
        assert math.isclose(out.sum().item(), 1.0, rel_tol=1e-5)  # interior: mass kept, only spread
