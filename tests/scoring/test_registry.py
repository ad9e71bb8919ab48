"""Registry, naming, command-line specs, score_all, and the contract every registered scorer keeps."""

from __future__ import annotations

import pytest
import torch

from anomalyseg.errors import UserError
from anomalyseg.models.outputs import SegOutput
from anomalyseg.scoring import available_scorers, get_scorer, score_all, scorer_settings, scorers_from_spec

EXPECTED = {"max_logit", "msp", "energy", "entropy", "rba", "gen", "sml", "sml_full", "heat", "mahalanobis"}


def _output(seed: int = 0) -> tuple[SegOutput, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 13, 16, 20, generator=g) * 3
    return SegOutput(logits, features={"layer3": torch.randn(2, 8, 4, 5, generator=g)}), logits.argmax(1)


def test_registry_lists_every_scorer() -> None:
    assert set(available_scorers()) == EXPECTED | {"void"}  # void: tests/real/test_void_and_known_classes.py
    assert scorer_settings("sml_full")["boundary_suppression"] is True
    assert scorer_settings("energy") == {"temperature": 1.0, "known_classes": None}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_contract_shape_dtype_fit_and_finite(name: str) -> None:
    scorer = get_scorer(name)
    assert scorer.name == name
    out, label = _output()
    assert scorer.needs_features == (name in ("heat", "mahalanobis"))
    if not scorer.needs_features:  # logits alone must do
        out = SegOutput(out.logits)
    if scorer.requires_fit:
        assert not scorer.is_fitted
        scorer.fit([(out, label)])
    s = scorer.score(out)
    assert s.shape == (2, 16, 20) and s.dtype == torch.float32 and torch.isfinite(s).all()


def test_unknown_names_and_settings_are_user_errors() -> None:
    with pytest.raises(UserError, match="unknown scorer 'nope'; known: max_logit"):
        get_scorer("nope")
    with pytest.raises(UserError, match=r"has no setting \['tempreature'\]"):
        get_scorer("energy", tempreature=2)


def test_spec_parsing_and_unique_names() -> None:
    scorers = scorers_from_spec("max_logit, energy:temperature=2, heat:use_feature=false:smoothing=0, sml_full")
    assert [s.name for s in scorers] == ["max_logit", "energy_T2", "heat_nofeat_k0", "sml_full"]
    assert scorers[2].params["use_feature"] is False and scorers[2].params["smoothing"] == 0
    assert [s.name for s in scorers_from_spec("all")] == [n for n in available_scorers() if n != "void"]
    named = scorers_from_spec("energy:temperature=2:name=hot,energy")
    assert [s.name for s in named] == ["hot", "energy"]
    with pytest.raises(UserError, match="two scorers are named 'energy'"):
        scorers_from_spec("energy,energy:temperature=1")
    with pytest.raises(UserError, match="not KEY=VALUE"):
        scorers_from_spec("energy:2")
    with pytest.raises(UserError, match="no scorer given"):
        scorers_from_spec(" , ")


def test_score_all_keys_by_name() -> None:
    out, _ = _output()
    scorers = [get_scorer("energy"), get_scorer("energy", temperature=2), get_scorer("msp")]
    maps = score_all(scorers, out)
    assert list(maps) == ["energy", "energy_T2", "msp"]
    torch.testing.assert_close(maps["energy_T2"], -2 * torch.logsumexp(out.logits / 2, 1))
    with pytest.raises(UserError, match="two scorers"):
        score_all([get_scorer("msp"), get_scorer("msp")], out)
