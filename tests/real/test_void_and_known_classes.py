"""The ``void`` scorer and the ``known_classes`` option of the logit scorers, against numpy formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anomalyseg.errors import UserError
from anomalyseg.models.outputs import SegOutput
from anomalyseg.scoring import get_scorer, scorers_from_spec


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _lse(z: np.ndarray) -> np.ndarray:
    m = z.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0]


FORMULAS = {
    "max_logit": lambda z: -z.max(1),
    "msp": lambda z: -_softmax(z).max(1),
    "energy": lambda z: -_lse(z),
    "entropy": lambda z: -(_softmax(z) * np.log(_softmax(z))).sum(1),
    "rba": lambda z: -np.tanh(z).sum(1),
    "gen": lambda z: (_softmax(z) ** 0.1 * (1 - _softmax(z)) ** 0.1).sum(1),
}


def _logits(seed: int = 0, channels: int = 20) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=(2, channels, 7, 9)) * 3).astype(np.float32)


def test_void_is_the_softmax_probability_of_the_void_channel() -> None:
    z = _logits()
    for index, temperature in [(19, 1.0), (0, 1.0), (19, 2.0), (-1, 1.0)]:
        got = get_scorer("void", void_index=index, temperature=temperature).score(SegOutput(torch.from_numpy(z)))
        expected = _softmax(z.astype(np.float64) / temperature)[:, index]
        assert got.shape == (2, 7, 9) and got.dtype == torch.float32
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-6)
    z = np.zeros((1, 20, 1, 2), dtype=np.float32)
    z[0, 19, 0, 0] = 6.0  # pixel 0: void wins -> more anomalous than pixel 1 (flat)
    s = get_scorer("void", void_index=19).score(SegOutput(torch.from_numpy(z)))
    assert s[0, 0, 0] > s[0, 0, 1] == pytest.approx(1 / 20)


def test_void_needs_a_channel_and_all_leaves_it_out() -> None:
    out = SegOutput(torch.from_numpy(_logits()))
    with pytest.raises(UserError, match="needs the model's void channel: give void:void_index=K"):
        get_scorer("void").score(out)
    with pytest.raises(UserError, match="void channel 20 does not exist, the model has 20 outputs"):
        get_scorer("void", void_index=20).score(out)
    assert "void" not in [s.name for s in scorers_from_spec("all")]
    with_void = scorers_from_spec("all", void_index=19)
    assert with_void[-1].name == "void" and with_void[-1].params["void_index"] == 19
    named = scorers_from_spec("void,msp:known_classes=19,void:void_index=0", void_index=19)
    assert [s.name for s in named] == ["void", "msp_K19", "void_c0"]
    assert named[2].params["void_index"] == 0  # an explicit index wins over the contract's


@pytest.mark.parametrize("name", sorted(FORMULAS))
@pytest.mark.parametrize(("known", "channels"), [
    (19, list(range(19))), (-1, list(range(19))), (slice(0, 19), list(range(19))),
    (slice(2, 7), [2, 3, 4, 5, 6]), ([5, 1, 3], [5, 1, 3]),
])
def test_known_classes_score_the_known_channels_only(name: str, known, channels: list[int]) -> None:
    z = _logits(1)
    scorer = get_scorer(name, known_classes=known)
    got = scorer.score(SegOutput(torch.from_numpy(z)))
    np.testing.assert_allclose(got.numpy(), FORMULAS[name](z.astype(np.float64)[:, channels]), rtol=1e-4, atol=1e-5)
    full = get_scorer(name).score(SegOutput(torch.from_numpy(z)))
    assert not torch.allclose(got, full)  # the option changes the number


def test_known_classes_canonical_forms_and_names() -> None:
    assert get_scorer("max_logit", known_classes=slice(0, 19)).params["known_classes"] == 19
    assert get_scorer("energy", known_classes=[0, 1, 2]).name == "energy_K3"
    assert get_scorer("msp", known_classes=slice(2, 5)).name == "msp_K2.3.4"
    assert get_scorer("entropy", known_classes=-1).name == "entropy_K-1"
    assert scorers_from_spec("max_logit:known_classes=2.3.4")[0].params["known_classes"] == [2, 3, 4]
    out = SegOutput(torch.from_numpy(_logits(channels=5)))
    for value, message in [(0, "leaves no channel"), ([1, 1], "distinct non-negative"), (True, "must be an int")]:
        with pytest.raises(UserError, match=message):
            get_scorer("max_logit", known_classes=value)
    with pytest.raises(UserError, match="does not fit 5 output channels"):
        get_scorer("max_logit", known_classes=19).score(out)
    with pytest.raises(UserError, match="name channels beyond the 5 outputs"):
        get_scorer("max_logit", known_classes=[1, 7]).score(out)


def test_sml_fits_and_scores_on_the_known_channels() -> None:
    """SML with known_classes=19 on 20 outputs equals plain SML on the first 19 logits."""
    z = torch.from_numpy(_logits(2))
    label = z[:, :19].argmax(1)
    label[:, :2] = 255
    restricted = get_scorer("sml", known_classes=19).fit([(SegOutput(z), label)])
    plain = get_scorer("sml").fit([(SegOutput(z[:, :19].contiguous()), label)])
    torch.testing.assert_close(restricted.score(SegOutput(z)), plain.score(SegOutput(z[:, :19].contiguous())))
    assert restricted.fit_config() == {"known_classes": 19} and plain.fit_config() == {}
    state = restricted.state_dict()
    with pytest.raises(ValueError, match="was fitted with"):
        get_scorer("sml").load_state_dict(state)
    again = get_scorer("sml_full", known_classes=19)
    again.load_state_dict(state)  # same fit settings: sml's statistics serve sml_full
    assert again.is_fitted
