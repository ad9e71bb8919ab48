"""Scorers by name: a closed dict, filled explicitly (adding a scorer = one file + one line here + one test).

An entry maps a name to ``(class, preset settings)``; ``sml_full`` is SML with the paper's post-processing.
``void`` applies only to models with a trained void output, so ``all`` leaves it out. User code adds its own
scorers with :func:`register_scorer`; a name from the command line, a sweep file or a results file is only
ever looked up here, never imported.
"""

from __future__ import annotations

import inspect
import math
import numbers
import re
import types
import typing
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch

from anomalyseg.errors import UserError
from anomalyseg.scoring.base import Scorer, known_classes_setting, name_with_settings
from anomalyseg.scoring.gen import GEN
from anomalyseg.scoring.heat import HEAT
from anomalyseg.scoring.mahalanobis import Mahalanobis
from anomalyseg.scoring.posthoc import MSP, Energy, Entropy, MaxLogit
from anomalyseg.scoring.rba import RbA
from anomalyseg.scoring.sml import SML
from anomalyseg.scoring.void import VoidProbability

if TYPE_CHECKING:
    from anomalyseg.models.outputs import SegOutput

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")

SCORERS: dict[str, tuple[type[Scorer], dict[str, Any]]] = {
    "max_logit": (MaxLogit, {}),
    "msp": (MSP, {}),
    "energy": (Energy, {}),
    "entropy": (Entropy, {}),
    "rba": (RbA, {}),
    "gen": (GEN, {}),
    "sml": (SML, {}),
    "sml_full": (SML, {"boundary_suppression": True, "dilated_smoothing": True}),
    "heat": (HEAT, {}),
    "mahalanobis": (Mahalanobis, {}),
    "void": (VoidProbability, {}),
}


def register_scorer(name: str, cls: type[Scorer], /, *, replace: bool = False, **defaults: Any) -> None:
    """Make ``name`` a scorer that :func:`get_scorer`, ``--scorers`` and sweeps accept (user code only).

    ``cls`` is a :class:`Scorer` subclass; ``defaults`` preset some of its constructor settings (as
    ``sml_full`` does for SML). A name already registered is refused unless ``replace=True``. Names hold
    letters, digits, ``_``, ``.`` and ``-`` (the spec syntax uses ``:``, ``,`` and ``=``).
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"scorer name {name!r}: use letters, digits, '_', '.' and '-'")
    if not (isinstance(cls, type) and issubclass(cls, Scorer)):
        raise TypeError(f"register_scorer({name!r}, ...): expected a Scorer subclass, got {cls!r}")
    if name in SCORERS and not replace:
        raise ValueError(f"scorer {name!r} is already registered; pass replace=True to replace it")
    accepted = _constructor_settings(cls)
    unknown = sorted(set(defaults) - set(accepted))
    if unknown:
        raise TypeError(f"register_scorer({name!r}, {cls.__name__}): no setting {unknown}; it accepts "
                        f"{sorted(accepted)}")
    SCORERS[name] = (cls, dict(defaults))


def available_scorers() -> list[str]:
    """Registered scorer names, in registry order."""
    return list(SCORERS)


def scorer_settings(name: str) -> dict[str, Any]:
    """The settings a registered scorer accepts, with their defaults (presets applied)."""
    cls, preset = _lookup(name)
    return {**_constructor_settings(cls), **preset}


def _constructor_settings(cls: type[Scorer]) -> dict[str, Any]:
    return {
        p.name: p.default
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.name not in ("self", "name") and p.default is not inspect.Parameter.empty
    }


def get_scorer(name: str, /, **params: Any) -> Scorer:
    """Build the scorer registered as ``name`` with ``params`` (``name=`` sets the result's label).

    Without an explicit ``name=``, the label is the registry name plus the settings that differ from its
    defaults, e.g. ``get_scorer("energy", temperature=2).name == "energy_T2"``.
    """
    cls, preset = _lookup(name)
    accepted = scorer_settings(name)
    unknown = sorted(set(params) - set(accepted) - {"name"})
    if unknown:
        raise UserError(f"scorer '{name}' has no setting {unknown}; it accepts {sorted(accepted)}")
    label = params.pop("name", None)
    if params.get("known_classes") is not None:  # canonical form, so that the label is a valid name
        params["known_classes"] = known_classes_setting(params["known_classes"], name)
    for key, value in params.items():
        _check_setting_type(cls, name, key, value)
    settings = {**preset, **params}
    if label is None:
        label = name_with_settings(cls, name, params, reference=accepted)
    try:
        return cls(name=label, **settings)
    except (TypeError, ValueError, OverflowError) as exc:  # a check of the scorer itself tripped over a value
        raise UserError(f"scorer '{name}': bad setting in {settings} ({exc})") from None


_SIMPLE = {float: "a finite number", int: "a whole number", bool: "true or false", str: "text"}


def _check_setting_type(cls: type[Scorer], name: str, key: str, value: Any) -> None:
    """One-line :class:`UserError` naming the scorer and the setting when ``value`` does not fit the
    constructor's annotation of ``key`` (plain ``float`` / ``int`` / ``bool`` / ``str``, optionally ``| None``;
    other annotations are left to the scorer's own checks). Numbers must be finite."""
    try:
        hint = typing.get_type_hints(cls.__init__).get(key)
    except Exception:  # an annotation that does not resolve: nothing to check against
        return
    args = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None and type(None) in args:
        return
    kinds = [a for a in args if a is not type(None)]
    if len(kinds) != 1 or kinds[0] not in _SIMPLE:
        return
    kind = kinds[0]
    if kind is float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    elif kind is int:
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise UserError(f"scorer '{name}': setting '{key}' expects {_SIMPLE[kind]}, got {value!r}")


def scorers_from_spec(spec: str | Sequence[str], void_index: int | None = None) -> list[Scorer]:
    """Scorers from a command-line spec: ``"all"`` or ``"max_logit,energy:temperature=2,sml_full"``.

    Each item is ``NAME[:KEY=VALUE[:KEY=VALUE...]]``; values parse as bool (true/false), none, int, float
    or text. Labels must come out unique (give ``:name=LABEL`` to tell two configurations apart).
    ``all`` is every registered scorer except those needing a void channel (``void``), which it includes
    when ``void_index`` (the model's void channel, from its input contract) is given; a ``void`` item
    without its own ``void_index`` gets that one and keeps the label ``void``.
    """
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    if items == ["all"]:
        items = [n for n in available_scorers() if void_index is not None or not SCORERS[n][0].needs_void_channel]
    if not items:
        raise UserError("no scorer given; choose from " + ", ".join(available_scorers()) + " or 'all'")
    scorers = []
    for item in items:
        name, *pairs = item.split(":")
        name = name.strip()
        _lookup(name)  # an unknown name is reported as such, before its settings
        params: dict[str, Any] = {}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise UserError(f"scorer setting {pair!r} in {item!r} is not KEY=VALUE")
            params[key.strip()] = _parse_value(value.strip())
        needs_void = name in SCORERS and SCORERS[name][0].needs_void_channel
        if needs_void and void_index is not None and "void_index" not in params:
            params["void_index"] = int(void_index)
            params.setdefault("name", name)
        scorers.append(get_scorer(name, **params))
    check_unique(scorers)
    return scorers


def check_unique(scorers: Iterable[Scorer]) -> None:
    """Raise :class:`UserError` when two scorers share a name (their results would collide)."""
    seen: set[str] = set()
    for s in scorers:
        if s.name in seen:
            raise UserError(f"two scorers are named '{s.name}'; give one an explicit name (name=...)")
        seen.add(s.name)


def score_all(scorers: Iterable[Scorer], output: SegOutput) -> dict[str, torch.Tensor]:
    """Every scorer on the same forward pass: ``{name: (B, H, W) float32}``."""
    scorers = list(scorers)
    check_unique(scorers)
    return {s.name: s.score(output) for s in scorers}


def _lookup(name: str) -> tuple[type[Scorer], dict[str, Any]]:
    if not isinstance(name, str) or name not in SCORERS:
        raise UserError(f"unknown scorer {name!r}; known: {', '.join(available_scorers())}")
    return SCORERS[name]


def _parse_value(text: str) -> Any:
    low = text.lower()
    if low in ("true", "yes", "on"):
        return True
    if low in ("false", "no", "off"):
        return False
    if low in ("none", "null"):
        return None
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text
