"""rba: -sum_c tanh(z_c) (Rejected by All)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anomalyseg.models.outputs import SegOutput
from anomalyseg.scoring import get_scorer


def test_matches_numpy_formula() -> None:
    z = (np.random.default_rng(1).normal(size=(2, 13, 7, 5)) * 2).astype(np.float32)
    got = get_scorer("rba").score(SegOutput(torch.from_numpy(z)))
    np.testing.assert_allclose(got.numpy(), -np.tanh(z.astype(np.float64)).sum(1), rtol=1e-5, atol=1e-5)


def test_rejected_by_all_scores_highest() -> None:
    C = 13
    z = torch.full((1, C, 1, 3), -6.0)  # pixel 0: every class rejects it
    z[0, 2, 0, 1] = 6.0  # pixel 1: accepted by one class
    z[0, :, 0, 2] = 0.0  # pixel 2: all logits at 0 (tanh-neutral)
    s = get_scorer("rba").score(SegOutput(z))[0, 0]
    assert s[0] > s[1] > s[2]
    assert s[0].item() == pytest.approx(C * np.tanh(6.0), rel=1e-6)
    assert s[1].item() == pytest.approx((C - 2) * np.tanh(6.0), rel=1e-6)
    assert s[2].item() == 0.0
