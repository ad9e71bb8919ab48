"""The softmax statistics shared by the scorers of one pass: computed once, equal to float64 formulas."""

from __future__ import annotations

import numpy as np
import torch

from anomalyseg.models.outputs import SegOutput
from anomalyseg.scoring import get_scorer
from anomalyseg.scoring.softmax import softmax_stats


def _reference(z: np.ndarray, t: float = 1.0) -> dict[str, np.ndarray]:
    z = z.astype(np.float64) / t
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p32 = p.astype(np.float32)  # GEN as the official float32 code computes it (1 - p is 0 where p rounds to 1)
    return {"msp": -p.max(1), "energy": -t * np.log(np.exp(z).sum(1)), "entropy": -(p * np.log(p)).sum(1),
            "gen": (p32**0.1 * (1 - p32) ** 0.1).sum(1)}


def test_one_softmax_feeds_every_scorer_and_matches_float64():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 4, (2, 7, 5, 6)).astype(np.float32)
    z[0, 3, 0, 0] = 40.0  # a very confident pixel: entropy ~1e-16, must not cancel to noise
    out = SegOutput(torch.from_numpy(z))
    ref = _reference(z)
    for name in ("msp", "energy", "entropy", "gen"):
        got = get_scorer(name).score(out).numpy()
        rtol = 2e-4 if name == "gen" else 1e-5  # gen: float32 (1 - p) near p = 1 differs by evaluation order
        np.testing.assert_allclose(got, ref[name], rtol=rtol, atol=1e-6, err_msg=name)
    assert len(out.cache) == 1  # four scorers, one softmax
    ent = get_scorer("entropy").score(out)[0, 0, 0].item()
    assert 0 <= ent < 1e-12


def test_cache_separates_temperature_and_channel_selection():
    z = torch.randn(1, 5, 4, 4) * 3
    out = SegOutput(z)
    a = softmax_stats(out, z, None, 1.0)
    b = softmax_stats(out, z, None, 2.0)
    c = softmax_stats(out, z[:, :4], 4, 1.0)
    assert a is softmax_stats(out, z, None, 1.0) and len(out.cache) == 3
    torch.testing.assert_close(b.probs, torch.softmax(z / 2, 1))
    torch.testing.assert_close(c.probs, torch.softmax(z[:, :4], 1))
    assert SegOutput(z).cache == {} and out.resized((8, 8)).cache == {}
    msp_t2 = get_scorer("msp", temperature=2.0).score(out)
    torch.testing.assert_close(msp_t2, -torch.softmax(z / 2, 1).amax(1))
