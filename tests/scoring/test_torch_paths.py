"""RbA and GEN on both sides of their "numpy on CPU / torch elsewhere" branch (the torch side, which CUDA
takes, run here on CPU tensors), against float64 numpy formulas, with saturated and tied logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.metrics.paths import PATHS, on_path

from anomalyseg.models.outputs import SegOutput
from anomalyseg.scoring import get_scorer


def _logits() -> np.ndarray:
    z = (np.random.default_rng(5).normal(size=(2, 13, 7, 5)) * 3).astype(np.float32)
    z[0, :, 0, 0] = 40.0  # every class saturates tanh; uniform softmax
    z[1, :, 0, 0] = -40.0
    z[0, :, 1, 1] = 0.0
    z[1, 3, 2, 2] = 60.0  # one dominant class: probabilities 1 and ~0
    return z


@pytest.mark.parametrize("path", PATHS)
def test_rba_equals_the_formula(path):
    z = _logits()
    got = on_path(path, lambda: get_scorer("rba").score(SegOutput(torch.from_numpy(z))))
    assert got.dtype == torch.float32 and got.shape == (2, 7, 5)
    np.testing.assert_allclose(got.numpy(), -np.tanh(z.astype(np.float64)).sum(1), rtol=1e-5, atol=1e-5)
    assert got[0, 0, 0].item() == pytest.approx(-13.0) and got[1, 0, 0].item() == pytest.approx(13.0)


def _gen_reference(z: np.ndarray, gamma: float, m: int) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    p = e / e.sum(1, keepdims=True)
    top = np.sort(p, axis=1)[:, -m:]
    return (top**gamma * (1 - top) ** gamma).sum(1)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(("gamma", "m"), [(0.1, 100), (0.1, 5), (0.5, 1), (2.0, 13)])
def test_gen_equals_the_formula(path, gamma, m):
    z = _logits()
    got = on_path(path, lambda: get_scorer("gen", gamma=gamma, top_m=m).score(SegOutput(torch.from_numpy(z))))
    assert got.dtype == torch.float32 and got.shape == (2, 7, 5)
    np.testing.assert_allclose(got.numpy(), _gen_reference(z.astype(np.float64), gamma, m), rtol=1e-4, atol=1e-5)
