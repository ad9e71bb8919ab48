"""gen: generalized entropy sum over the top-M probabilities of p^g (1-p)^g."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anomalyseg.models.outputs import SegOutput
from anomalyseg.scoring import get_scorer


def _reference(z: np.ndarray, gamma: float, m: int) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    p = e / e.sum(1, keepdims=True)
    top = np.sort(p, axis=1)[:, -m:]
    return (top**gamma * (1 - top) ** gamma).sum(1)


@pytest.mark.parametrize(("gamma", "m"), [(0.1, 100), (0.1, 5), (0.5, 1)])
def test_matches_numpy_formula(gamma: float, m: int) -> None:
    z = (np.random.default_rng(2).normal(size=(2, 13, 6, 4)) * 3).astype(np.float32)
    got = get_scorer("gen", gamma=gamma, top_m=m).score(SegOutput(torch.from_numpy(z)))
    np.testing.assert_allclose(got.numpy(), _reference(z.astype(np.float64), gamma, m), rtol=1e-4, atol=1e-5)


def test_uniform_and_dominant_cases() -> None:
    C, g = 13, 0.1
    flat = get_scorer("gen").score(SegOutput(torch.zeros(1, C, 1, 1))).item()
    assert flat == pytest.approx(C * (1 / C) ** g * (1 - 1 / C) ** g, rel=1e-5)
    z = torch.zeros(1, C, 1, 1)
    z[0, 0] = 12.0
    assert get_scorer("gen").score(SegOutput(z)).item() < flat
    assert get_scorer("gen", gamma=0.5).name == "gen_g0.5"
