"""Pixel anomaly scorers: every scorer reads one :class:`~anomalyseg.models.outputs.SegOutput` and returns a
``(B, H, W)`` float32 map at logits resolution, higher = more anomalous.

>>> from anomalyseg.scoring import get_scorer, score_all
>>> scorers = [get_scorer("max_logit"), get_scorer("energy", temperature=2)]   # names: max_logit, energy_T2
>>> maps = score_all(scorers, output)                                          # {name: (B, H, W)}

``void`` reads a trained void output (``void_index`` from the model's input contract); logit scorers take
``known_classes`` to score with the known-class channels only.

Scorers with ``requires_fit`` (``sml``, ``sml_full``, ``heat``, ``mahalanobis``) first stream over
in-distribution data: ``scorer.fit([(output, label), ...])``, or ``fit_update`` / ``sync_fit`` /
``fit_finalize`` per pass; their state goes through ``state_dict()`` / ``load_state_dict()``.

Your own scorer: subclass :class:`Scorer` and ``register_scorer("my_score", MyScorer, **defaults)``; names
are only looked up in the registry, never imported.
"""

from anomalyseg.scoring.base import FIT_COMMAND, Scorer
from anomalyseg.scoring.features import FeatureScorer
from anomalyseg.scoring.gen import GEN
from anomalyseg.scoring.heat import HEAT
from anomalyseg.scoring.mahalanobis import Mahalanobis
from anomalyseg.scoring.posthoc import MSP, Energy, Entropy, MaxLogit
from anomalyseg.scoring.rba import RbA
from anomalyseg.scoring.registry import (
    SCORERS,
    available_scorers,
    check_unique,
    get_scorer,
    register_scorer,
    score_all,
    scorer_settings,
    scorers_from_spec,
)
from anomalyseg.scoring.sml import SML
from anomalyseg.scoring.void import VoidProbability

__all__ = [
    "FIT_COMMAND",
    "GEN",
    "HEAT",
    "MSP",
    "SCORERS",
    "SML",
    "Energy",
    "Entropy",
    "FeatureScorer",
    "Mahalanobis",
    "MaxLogit",
    "RbA",
    "Scorer",
    "VoidProbability",
    "available_scorers",
    "check_unique",
    "get_scorer",
    "register_scorer",
    "score_all",
    "scorer_settings",
    "scorers_from_spec",
]
