"""Config schema: YAML loading, typed overrides, one-line errors naming the key, round trip."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest
import yaml

from anomalyseg.config import Config, load_config
from anomalyseg.configio import config_from_dict, config_to_dict, diff_configs, dump_config
from anomalyseg.errors import UserError


def write(tmp_path, text: str):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_yaml_and_overrides_are_typed(tmp_path):
    path = write(tmp_path, "model:\n  name: deeplabv3_resnet50\n  aux: true\noptim:\n  lr: 1e-3\n")
    cfg = load_config(path, ["optim.name=sgd", "data.crop_size=[256, 480]", "train.epochs=3",
                             "train.class_weights=[1, 2.5]", "run_name=007", "schedule.warmup_epochs=1",
                             "model.options.output_stride=8", "train.early_stop_patience=null"])
    assert isinstance(cfg, Config)
    assert cfg.model.name == "deeplabv3_resnet50" and cfg.model.aux is True
    assert cfg.optim.lr == pytest.approx(1e-3) and isinstance(cfg.optim.lr, float)  # "1e-3" is a str in YAML 1.1
    assert cfg.optim.name == "sgd"
    assert cfg.data.crop_size == (256, 480) and isinstance(cfg.data.crop_size, tuple)
    assert cfg.train.epochs == 3
    assert cfg.train.class_weights == [1.0, 2.5] and all(isinstance(v, float) for v in cfg.train.class_weights)
    assert cfg.run_name == "007"  # str field keeps the raw text, not the int 7
    assert cfg.schedule.warmup_epochs == 1.0 and isinstance(cfg.schedule.warmup_epochs, float)
    assert cfg.model.options == {"output_stride": 8}
    assert cfg.train.early_stop_patience is None
    # untouched keys keep their defaults
    assert cfg.data.batch_size == Config().data.batch_size


@pytest.mark.parametrize(
    ("text", "overrides", "needle"),
    [
        ("train:\n  epochz: 3\n", [], "unknown config key 'train.epochz'"),
        ("", ["optim.lrr=0.1"], "unknown config key 'optim.lrr'"),
        ("", ["nope.x=1"], "unknown config key 'nope'"),
        ("train:\n  epochs: three\n", [], "config key 'train.epochs': expected int"),
        ("", ["train.epochs=2.5"], "config key 'train.epochs': expected int"),
        ("", ["train.deterministic=1"], "config key 'train.deterministic': expected true/false"),
        ("", ["optim.name=rmsprop"], "config key 'optim.name': expected one of ['adamw', 'sgd', 'adam']"),
        ("", ["data.crop_size=[1, 2, 3]"], "config key 'data.crop_size': expected a list of 2 values"),
        ("", ["data.crop_size=[1, x]"], "config key 'data.crop_size[1]': expected int"),
        ("", ["optim.lr=fast"], "config key 'optim.lr': expected float"),
        ("data: 3\n", [], "config key 'data': expected a mapping"),
        ("", ["train.epochs.x=1"], "'train.epochs' is not a section"),
        ("", ["train.epochs"], "is not of the form key.sub=value"),
        ("- a\n- b\n", [], "must be a mapping"),
        ("a: [1\n", [], "cannot read config"),
    ],
)
def test_errors_are_one_line_and_name_the_key(tmp_path, text, overrides, needle):
    with pytest.raises(UserError) as info:
        load_config(write(tmp_path, text), overrides)
    msg = str(info.value)
    assert needle in msg
    assert "\n" not in msg


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_dump_and_reload_round_trip(tmp_path):
    cfg = load_config(None, ["data.val_size=[90, 160]", "model.options.encoder_depth=4", "train.seed=5"])
    dump_config(cfg, tmp_path / "out.yaml")
    raw = yaml.safe_load((tmp_path / "out.yaml").read_text())
    assert raw["data"]["val_size"] == [90, 160]  # plain lists in the file
    again = load_config(tmp_path / "out.yaml")
    assert again == cfg
    assert diff_configs(cfg, again) == []
    changed = load_config(tmp_path / "out.yaml", ["train.seed=6", "optim.lr=0.5"])
    assert diff_configs(cfg, changed) == ["optim.lr", "train.seed"]


@dataclass
class Inner:
    scales: tuple[float, ...] = (1.0,)
    mode: Literal["a", "b"] = "a"


@dataclass
class EvalLike:
    checkpoint: str = ""
    inner: Inner = field(default_factory=Inner)
    limit: int | None = None


def test_loader_is_generic_over_any_dataclass(tmp_path):
    path = write(tmp_path, "checkpoint: x.pt\ninner:\n  scales: [0.5, 1, 1.5]\n")
    cfg = load_config(path, ["inner.mode=b", "limit=4"], schema=EvalLike)
    assert cfg == EvalLike("x.pt", Inner((0.5, 1.0, 1.5), "b"), 4)
    assert config_to_dict(cfg) == {"checkpoint": "x.pt", "inner": {"scales": [0.5, 1.0, 1.5], "mode": "b"},
                                   "limit": 4}
    with pytest.raises(UserError, match=r"unknown config key 'inner\.zoom'"):
        config_from_dict(EvalLike, {"inner": {"zoom": 2}})


def test_cli_reports_config_errors_in_one_line(tmp_path, capsys):
    from anomalyseg.cli import main as cli_main

    config = write(tmp_path, "train:\n  epochs: 1\n")
    for argv, needle in (
        (["train", str(config), "optim.lrr=1"], "unknown config key 'optim.lrr'"),
        (["train", str(config), "train.epochs=x"], "config key 'train.epochs': expected int"),
        (["train", str(tmp_path / "none.yaml")], "config file not found"),
        (["train"], "give a config file"),
        (["train", "--resume", str(tmp_path)], "no config.yaml there"),
        (["train", str(config), "extra"], "unexpected argument 'extra'"),
    ):
        assert cli_main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("anomalyseg: error:") and needle in err and "\n" not in err, err


def _numeric_fields(schema: type, prefix: str = ""):
    """(dotted key, owning dataclass, field name, element type) of every int / float leaf of ``schema``."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        tp, key = hints[f.name], f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            yield from _numeric_fields(tp, key + ".")
            continue
        args = [a for a in (typing.get_args(tp) or (tp,)) if a is not type(None)]
        inner = [a for arg in args for a in (typing.get_args(arg) or (arg,)) if a is not Ellipsis]
        kinds = {a for a in inner if a in (int, float)}
        if kinds:
            yield key, schema, f.name, float if float in kinds else int


def _schemas():
    from anomalyseg.workflows.demo_settings import DemoConfig
    from anomalyseg.workflows.sweep import SweepSection

    return [Config, DemoConfig, SweepSection]


def test_every_numeric_field_has_a_bound():
    """One check for every numeric setting: a new int / float field without a Bound fails here."""
    from anomalyseg.configio import field_bounds

    missing = [f"{schema.__name__}: {key}" for top in _schemas() for key, schema, name, _ in _numeric_fields(top)
               if name not in field_bounds(schema)]
    assert not missing, f"numeric config fields without a Bound: {missing}"


def _override_value(schema: type, name: str, value: str) -> str:
    import dataclasses
    import types
    import typing

    tp = typing.get_type_hints(schema)[name]
    default = next(f for f in dataclasses.fields(schema) if f.name == name)
    length = len(default.default) if isinstance(default.default, tuple) else None
    members = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    is_list = any(typing.get_origin(a) in (tuple, list) for a in members)
    if is_list:
        return "[" + ",".join([value] * (length or 2)) + "]"
    return value


@pytest.mark.parametrize("schema_index", [0, 1, 2])
def test_out_of_range_and_non_finite_numbers_are_one_line(schema_index):
    """For every numeric field of every schema: nan / inf (floats) and a value past each bound are refused with
    one line naming the key (and, past a bound, the bound)."""
    from anomalyseg.configio import apply_overrides, field_bounds

    top = _schemas()[schema_index]
    for key, schema, name, kind in _numeric_fields(top):
        bound = field_bounds(schema)[name]
        bad = (["nan", ".inf", "-.inf"] if kind is float else [])
        for edge in (bound.lo, bound.hi):
            if edge is not None:
                step = 1 if kind is int else max(abs(edge), 1) * 1e-3
                bad.append(repr(edge - step if edge == bound.lo else edge + step))
        if bound.lo_open and bound.lo is not None:
            bad.append(repr(bound.lo))
        if bound.hi_open and bound.hi is not None:
            bad.append(repr(bound.hi))
        for value in bad:
            text = f"{key}={_override_value(schema, name, value)}"
            with pytest.raises(UserError) as exc:
                config_from_dict(top, apply_overrides(top, {}, [text]))
            message = str(exc.value)
            assert f"'{key}" in message and "\n" not in message, (text, message)
            assert "finite" in message or bound.describe() in message, (text, message)


def test_bounds_checked_for_configs_built_in_code():
    from anomalyseg.config import DataConfig, OptimConfig
    from anomalyseg.configio import check_values

    check_values(Config())
    with pytest.raises(UserError, match=r"config key 'data.crop_size': each value must be >= 1 and <= 8192"):
        check_values(Config(data=DataConfig(crop_size=(0, 0))))
    with pytest.raises(UserError, match=r"config key 'optim.lr': must be > 0 and <= 10, got nan"):
        check_values(Config(optim=OptimConfig(lr=float("nan"))))


def test_defaults_and_shipped_configs_are_in_range():
    from pathlib import Path

    from anomalyseg.workflows.demo_settings import PRESETS, load_demo_config
    from anomalyseg.workflows.sweep import load_sweep

    for name in PRESETS:
        load_demo_config(name)
    root = Path(__file__).resolve().parents[2] / "configs"
    for path in sorted(root.rglob("*.yaml")):
        if "demo_" in path.name:
            continue
        if path.parent.name == "sweeps":  # a training config plus a sweep: section
            load_sweep(path, ["scorer.energy.temperature=1"])
            continue
        load_config(path)


def test_zero_learning_rate_is_refused():
    """lr = 0 trains nothing while looking like a run: refused at the boundary, one line naming the key."""
    with pytest.raises(UserError, match=r"config key 'optim.lr': must be > 0 and <= 10, got 0"):
        load_config(None, ["optim.lr=0"])
