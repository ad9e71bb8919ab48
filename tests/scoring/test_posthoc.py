"""max_logit, msp, energy, entropy against their formulas written in numpy, plus hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anomalyseg.models.outputs import SegOutput
from anomalyseg.scoring import get_scorer


def _lse(z: np.ndarray, axis: int = 1) -> np.ndarray:
    m = z.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


REFERENCES = {
    ("max_logit", 1.0): lambda z: -z.max(1),
    ("msp", 1.0): lambda z: -_softmax(z).max(1),
    ("msp", 2.0): lambda z: -_softmax(z / 2.0).max(1),
    ("energy", 1.0): lambda z: -_lse(z),
    ("energy", 0.5): lambda z: -0.5 * _lse(z / 0.5),
    ("entropy", 1.0): lambda z: -(_softmax(z) * np.log(_softmax(z))).sum(1),
}


def _scorer(name: str, t: float):
    return get_scorer(name, temperature=t) if name in ("msp", "energy") else get_scorer(name)


@pytest.mark.parametrize(("name", "t"), list(REFERENCES))
def test_matches_numpy_formula_on_random_logits(name: str, t: float) -> None:
    rng = np.random.default_rng(0)
    z = (rng.normal(size=(2, 13, 9, 11)) * 4).astype(np.float32)
    got = _scorer(name, t).score(SegOutput(torch.from_numpy(z)))
    assert got.shape == (2, 9, 11) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), REFERENCES[(name, t)](z.astype(np.float64)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["max_logit", "msp", "energy", "entropy"])
def test_dominant_logit_scores_lower_than_flat(name: str) -> None:
    z = torch.zeros(1, 13, 1, 2)
    z[0, 3, 0, 0] = 8.0  # pixel 0: one dominant class; pixel 1: flat
    s = get_scorer(name).score(SegOutput(z))
    assert s[0, 0, 0] < s[0, 0, 1]


def test_hand_made_values() -> None:
    C = 13
    flat = SegOutput(torch.zeros(1, C, 1, 1))
    assert get_scorer("msp").score(flat).item() == pytest.approx(-1 / C)
    assert get_scorer("energy").score(flat).item() == pytest.approx(-np.log(C))
    assert get_scorer("energy", temperature=2).score(flat).item() == pytest.approx(-2 * np.log(C))
    assert get_scorer("entropy").score(flat).item() == pytest.approx(np.log(C))
    z = torch.tensor([1.0, 3.0, 2.0]).reshape(1, 3, 1, 1)
    assert get_scorer("max_logit").score(SegOutput(z)).item() == pytest.approx(-3.0)
    assert get_scorer("msp").score(SegOutput(z)).item() == pytest.approx(-np.exp(3) / np.exp([1, 2, 3]).sum())


def test_extreme_logits_stay_finite_and_half_input_gives_float32() -> None:
    z = torch.tensor([1000.0, -1000.0, 0.0]).reshape(1, 3, 1, 1)
    for name in ("max_logit", "msp", "energy", "entropy"):
        s = get_scorer(name).score(SegOutput(z))
        assert torch.isfinite(s).all(), name
    half = get_scorer("entropy").score(SegOutput(torch.randn(1, 4, 3, 3).half()))
    assert half.dtype == torch.float32


def test_temperature_names_and_validation() -> None:
    assert get_scorer("energy").name == "energy"
    assert get_scorer("energy", temperature=2).name == "energy_T2"
    assert get_scorer("msp", temperature=0.5, name="msp_cold").name == "msp_cold"
    from anomalyseg.errors import UserError

    with pytest.raises(UserError, match="temperature"):
        get_scorer("energy", temperature=0)
