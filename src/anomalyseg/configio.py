"""Typed configs for any dataclass schema: YAML in, ``key.sub=value`` overrides, bounds, YAML out.

Values are checked against the field annotations (``Optional``, ``Literal``, ``tuple``, ``list``, ``dict``,
nested dataclasses) and the numeric :class:`Bound` declared with :func:`bounded`; an unknown key, a wrong type
or an out-of-range value is one-line :class:`UserError` that names the key. The training-run schema is
:mod:`anomalyseg.config`; the sweep and demo settings reuse the same loader. Own code instead of
OmegaConf/pydantic: ~300 lines, no extra dependency, exact messages.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from anomalyseg.errors import UserError, first_line

T = TypeVar("T")


@dataclass(frozen=True)
class Bound:
    """The allowed range of a numeric config field (each element, for a list or pair); ``ordered``: a pair
    ``[low, high]`` with ``low <= high``. Values are also always finite (see :func:`_coerce`)."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False  # lo itself is not allowed
    hi_open: bool = False
    ordered: bool = False

    def allows(self, v: float) -> bool:
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        return not (self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi))

    def describe(self) -> str:
        def num(x: float) -> str:
            return str(x) if isinstance(x, int) else f"{x:g}"

        parts = []
        if self.lo is not None:
            parts.append(f"{'>' if self.lo_open else '>='} {num(self.lo)}")
        if self.hi is not None:
            parts.append(f"{'<' if self.hi_open else '<='} {num(self.hi)}")
        return " and ".join(parts)


def bounded(**bounds: Bound) -> Callable[[type[T]], type[T]]:
    """Class decorator (above ``@dataclass``): the :class:`Bound` of numeric fields, checked by the loader
    for every value read from YAML or ``key=value`` and by :func:`check_values` for a built config."""

    def wrap(cls: type[T]) -> type[T]:
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(bounds) - names)
        if unknown:
            raise TypeError(f"{cls.__name__}: bounds for unknown fields {unknown}")
        cls.__config_bounds__ = dict(bounds)  # type: ignore[attr-defined]
        return cls

    return wrap


def field_bounds(cls: type) -> dict[str, Bound]:
    """The :class:`Bound` of each bounded field of dataclass ``cls`` (empty when none are declared)."""
    return dict(getattr(cls, "__config_bounds__", {}))


def _check_bounds(obj: Any, prefix: str = "") -> None:
    """One-line :class:`UserError` naming the key and the allowed range when a bounded field of ``obj`` (one
    dataclass, not its sections) is out of range."""
    for name, bound in field_bounds(type(obj)).items():
        value = getattr(obj, name)
        if value is None or isinstance(value, bool):
            continue
        key = f"{prefix}.{name}" if prefix else name
        items = list(value) if isinstance(value, list | tuple) else [value]
        for item in items:
            if isinstance(item, bool) or not isinstance(item, int | float):
                continue
            if not math.isfinite(item) or not bound.allows(item):
                what = "each value must be" if isinstance(value, list | tuple) else "must be"
                shown = list(value) if isinstance(value, tuple) else value
                raise UserError(f"config key '{key}': {what} {bound.describe()}, got {shown}")
        if bound.ordered and len(items) == 2 and items[0] > items[1]:
            raise UserError(f"config key '{key}': expected [low, high] with low <= high, got {list(items)}")


def check_values(config: Any, prefix: str = "") -> None:
    """Check every bounded numeric field of ``config`` and of its sections (a config built in code, not
    read by the loader, which checks as it reads); one-line :class:`UserError` naming the key."""
    _check_bounds(config, prefix)
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_values(value, f"{prefix}.{f.name}" if prefix else f.name)




def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if isinstance(tp, type):
        return tp.__name__
    if typing.get_origin(tp) is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if _is_union(tp):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    return str(tp).replace("typing.", "")


def _numeric(value: Any) -> bool:
    """A number, or text that reads as one (``nan`` included): the numeric member of a union judges it."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    try:
        float(value)
    except (TypeError, ValueError, OverflowError):
        return False
    return True


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """``value`` checked against annotation ``tp``; raises :class:`UserError` naming ``key``."""

    def bad(expected: str | None = None) -> UserError:
        shown = repr(value) if len(repr(value)) < 60 else repr(value)[:57] + "..."
        return UserError(
            f"config key '{key}': expected {expected or _type_name(tp)}, got {type(value).__name__} {shown}"
        )

    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise bad(f"a mapping of {tp.__name__} fields")
        return _build(tp, value, key)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if _is_union(tp):
        if value is None and type(None) in args:
            return None
        errors = {}
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key)
            except UserError as exc:
                errors[arg] = exc
        if len(errors) == 1:
            raise next(iter(errors.values()))
        numeric = [exc for arg, exc in errors.items() if arg in (int, float)]
        if numeric and _numeric(value):  # float | Literal["auto"] given nan: "expected a finite number"
            raise numeric[0]
        raise bad()
    if origin is Literal:
        if value not in args:
            raise UserError(f"config key '{key}': expected one of {list(args)}, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise bad(f"a list ({_type_name(tp)})")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise bad(f"a list of {len(args)} values ({_type_name(tp)})")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is list:
        if not isinstance(value, list | tuple):
            raise bad(f"a list ({_type_name(tp)})")
        return [_coerce(v, args[0] if args else Any, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise bad("a mapping")
        vt = args[1] if args else Any
        return {str(k): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise bad("true/false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        return value
    if tp is float:
        if isinstance(value, bool):
            raise bad()
        number = None
        if isinstance(value, int | float | str):  # YAML 1.1 reads "1e-4" (no dot) as a string
            try:
                number = float(value)
            except ValueError:
                raise bad() from None
            except OverflowError:  # an int beyond float's range
                number = math.inf
        if number is None:
            raise bad()
        if not math.isfinite(number):  # nan / inf
            raise UserError(f"config key '{key}': expected a finite number, got {value!r}")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise bad()
        return value
    if isinstance(tp, type):
        if not isinstance(value, tp):
            raise bad()
        return value
    raise TypeError(f"config key '{key}': unsupported annotation {tp!r}")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build(cls: type[T], data: Mapping[str, Any], prefix: str = "") -> T:
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            raise UserError(f"unknown config key '{full}' (known here: {', '.join(names)})")
        kwargs[key] = _coerce(value, hints[key], full)
    obj = cls(**kwargs)
    _check_bounds(obj, prefix)
    return obj


def config_from_dict(schema: type[T], data: Mapping[str, Any] | None) -> T:
    """Build and check a ``schema`` instance from a plain (YAML-like) mapping; missing keys keep defaults."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise UserError(f"a config must be a mapping of keys, got {type(data).__name__}")
    return _build(schema, data)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A plain dict of lists / dicts / primitives (tuples become lists): YAML-, JSON- and checkpoint-safe."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, Mapping):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        return value

    return plain(config)


def _field_type(schema: type, dotted: str) -> Any:
    """Annotation of the field at ``dotted`` (``Any`` inside free-form dicts); UserError when unknown."""
    tp: Any = schema
    parts = dotted.split(".")
    for i, part in enumerate(parts):
        here = ".".join(parts[: i + 1])
        while _is_union(tp):  # Optional[Dataclass] -> Dataclass
            inner = [a for a in typing.get_args(tp) if a is not type(None)]
            tp = inner[0] if len(inner) == 1 else Any
        if dataclasses.is_dataclass(tp):
            hints = _hints(tp)
            if part not in hints:
                known = ", ".join(f.name for f in dataclasses.fields(tp))
                raise UserError(f"unknown config key '{here}' (known here: {known})")
            tp = hints[part]
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1] if typing.get_args(tp) else Any
        elif tp is Any:
            return Any
        else:
            raise UserError(f"config key '{here}': '{'.'.join(parts[:i])}' is not a section")
    return tp


def parse_override(schema: type, text: str) -> tuple[str, Any]:
    """``"a.b=value"`` -> (``"a.b"``, parsed value). Strings stay raw for ``str`` fields."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UserError(f"override {text!r} is not of the form key.sub=value")
    tp = _field_type(schema, key)
    plain_str = tp is str or (_is_union(tp) and str in typing.get_args(tp) and raw.strip() not in ("null", "~"))
    if plain_str:
        return key, raw
    try:
        return key, yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise UserError(f"override {key}: cannot parse value {raw!r} ({exc.__class__.__name__})") from None


def apply_overrides(schema: type[T], data: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """A deep copy of ``data`` with each ``key.sub=value`` set (sections created as needed)."""
    out = yaml.safe_load(yaml.safe_dump(config_to_dict(dict(data)))) or {}
    for text in overrides:
        key, value = parse_override(schema, text)
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise UserError(f"override {key}: '{part}' is not a section")
            node = child
        node[parts[-1]] = value
    return out


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Parse a YAML mapping; a missing / unreadable / non-mapping file is a UserError naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise UserError(f"cannot read config {path}: {first_line(exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"config {path} must be a mapping of keys, got {type(data).__name__}")
    return data


def dump_config(config: Any, path: str | Path) -> None:
    """Write the resolved config as YAML (keys in schema order)."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False), encoding="utf-8")


def diff_configs(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two configs (or their dict forms)."""
    da = a if isinstance(a, Mapping) else config_to_dict(a)
    db = b if isinstance(b, Mapping) else config_to_dict(b)
    out = []
    for key in sorted(set(da) | set(db)):
        full = f"{prefix}.{key}" if prefix else key
        va, vb = da.get(key), db.get(key)
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            out += diff_configs(va, vb, full)
        elif va != vb:
            out.append(full)
    return out
