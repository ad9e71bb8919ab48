"""``register_scorer``: user scorers join the closed registry; any other name is one line, never an import."""

from __future__ import annotations

import sys
from typing import ClassVar

import pytest
import torch

from anomalyseg.errors import UserError
from anomalyseg.models.outputs import SegOutput
from anomalyseg.scoring import Scorer, available_scorers, get_scorer, register_scorer, scorers_from_spec
from anomalyseg.scoring import registry as R


@pytest.fixture(autouse=True)
def _own_registry(monkeypatch):
    """Every test registers into a copy of the registry: nothing leaks into other tests."""
    monkeypatch.setattr(R, "SCORERS", dict(R.SCORERS))


class ScaledMin(Scorer):
    """``-scale * min_c z_c``: a user's scorer."""

    kind = "scaled_min"
    abbreviations: ClassVar[dict[str, str]] = {"scale": "s"}

    def __init__(self, scale: float = 1.0, name: str | None = None) -> None:
        super().__init__(name=name, scale=float(scale))

    def _score(self, output: SegOutput) -> torch.Tensor:
        return -self.params["scale"] * output.logits.float().amin(1)


def test_register_scorer_round_trip() -> None:
    with pytest.raises(UserError, match=r"^unknown scorer 'scaled_min'; known: max_logit, "):
        get_scorer("scaled_min")
    register_scorer("scaled_min", ScaledMin)
    register_scorer("scaled_min_x3", ScaledMin, scale=3)
    assert available_scorers()[-2:] == ["scaled_min", "scaled_min_x3"]
    assert R.scorer_settings("scaled_min_x3") == {"scale": 3}
    logits = torch.randn(2, 5, 4, 6)
    out = SegOutput(logits)
    a, b, c = scorers_from_spec("scaled_min,scaled_min_x3,scaled_min:scale=2")
    assert [a.name, b.name, c.name] == ["scaled_min", "scaled_min_x3", "scaled_min_s2"]
    torch.testing.assert_close(b.score(out), -3 * logits.amin(1))
    torch.testing.assert_close(c.score(out), -2 * logits.amin(1))
    assert "scaled_min" in [s.name for s in scorers_from_spec("all")]


def test_duplicates_and_bad_registrations_are_refused() -> None:
    register_scorer("scaled_min", ScaledMin)
    with pytest.raises(ValueError, match="'scaled_min' is already registered; pass replace=True"):
        register_scorer("scaled_min", ScaledMin, scale=2)
    with pytest.raises(ValueError, match="'energy' is already registered"):
        register_scorer("energy", ScaledMin)
    register_scorer("scaled_min", ScaledMin, replace=True, scale=2)
    assert get_scorer("scaled_min").params["scale"] == 2
    with pytest.raises(TypeError, match="no setting \\['scael'\\]"):
        register_scorer("typo", ScaledMin, scael=2)
    with pytest.raises(TypeError, match="expected a Scorer subclass"):
        register_scorer("by_string", "anomalyseg.scoring.posthoc:MaxLogit")
    for bad in ("a:b", "a,b", "a=b", ""):
        with pytest.raises(ValueError, match="use letters, digits"):
            register_scorer(bad, ScaledMin)
    assert not {"typo", "by_string"} & set(available_scorers())


def test_module_attr_scorer_names_are_one_line_and_not_imported() -> None:
    for spec, name in (("anomalyseg.scoring.posthoc:MaxLogit", "anomalyseg.scoring.posthoc"),
                       ("json", "json"), ("evil_scorer_mod.Evil", "evil_scorer_mod.Evil")):
        with pytest.raises(UserError) as info:
            scorers_from_spec(spec)
        assert str(info.value).startswith(f"unknown scorer {name!r}; known: max_logit, msp, ")
        assert "\n" not in str(info.value)
    assert "evil_scorer_mod" not in sys.modules
