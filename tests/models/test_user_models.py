"""The closed model registry: only built-in, ``register_model`` and ``anomalyseg.models`` entry-point names build;
a ``module:attr`` name (from a config, a checkpoint or the command line) is one line, never an import."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tests.engine.helpers import tiny_overrides
from tests.engine.tiny_model import TinySeg

from anomalyseg import cli
from anomalyseg.config import ModelConfig
from anomalyseg.data.synthetic import write_synthetic
from anomalyseg.engine.factory import build_model_from_config
from anomalyseg.errors import UserError
from anomalyseg.models import ENTRY_POINT_GROUP, available_models, build_model, model_spec, register_model
from anomalyseg.models import registry as R


@pytest.fixture(autouse=True)
def _own_registry(monkeypatch):
    """Every test registers into a copy of the registry: nothing leaks into other tests."""
    monkeypatch.setattr(R, "MODELS", dict(R.MODELS))


def user_factory(num_classes: int, pretrained: bool = False, aux: bool | None = None, width: int = 4) -> TinySeg:
    """A user's tiny net."""
    return TinySeg(num_classes, aux=bool(aux), width=width)


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_module_attr_names_are_refused_in_one_line_and_never_imported(tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / "evil_registry_mod.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('x')\ndef make(**kw):\n    return None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("evil_registry_mod:make", "os.path:join", "tests.engine.tiny_model:build"):
        with pytest.raises(UserError) as info:
            build_model_from_config(ModelConfig(name=name, pretrained=False), 13)
        message = str(info.value)
        assert message.startswith(f"unknown model {name!r}; known: deeplabv3_resnet50, ") and "\n" not in message
        assert "enet" in message.split("known: ")[1].split(", ")
    assert "evil_registry_mod" not in sys.modules and not marker.exists()
    with pytest.raises(ValueError, match="no ':'"):
        register_model("evil_registry_mod:make", user_factory)


def test_register_model_round_trip_through_train_and_evaluate(tmp_path, capsys):
    """Refused before registration; after it, train one step and evaluate the checkpoint naming it."""
    root = write_synthetic(tmp_path / "sh", train=4, val=2, test=2, size=(64, 48), seed=2)
    (tmp_path / "base.yaml").write_text("train:\n  device: cpu\n", encoding="utf-8")
    train = ["train", str(tmp_path / "base.yaml"), *tiny_overrides(root, tmp_path / "runs", "user", **{
        "model.name": "user_tiny", "model.options": "{width: 5}", "train.epochs": 1, "data.batch_size": 4,
        "train.num_vis_images": 0, "train.checkpoint_every_steps": 0})]
    assert cli.main(train) == 2
    assert _one_line(capsys.readouterr().err).startswith("anomalyseg: error: unknown model 'user_tiny'; known: ")
    assert not (tmp_path / "runs" / "user").exists()

    register_model("user_tiny", user_factory, description="tiny test net", small=True)
    assert "user_tiny" in available_models() and model_spec("user_tiny").family == "user"
    assert model_spec("user_tiny").description == "tiny test net" and model_spec("user_tiny").small
    assert cli.main(train) == 0
    run = tmp_path / "runs" / "user"
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["model_name"] == "user_tiny" and ckpt["step"] == 1
    assert ckpt["model"]["classifier.weight"].shape == (13, 5, 1, 1)  # built with the config's options
    evaluate = ["evaluate", "--checkpoint", str(run), "--data-root", str(root), "--scorers", "max_logit",
                "--limit", "1", "--workers", "0", "--no-progress", "--device", "cpu", "--out",
                str(tmp_path / "r.json")]
    assert cli.main(evaluate) == 0 and (tmp_path / "r.json").is_file()
    capsys.readouterr()

    del R.MODELS["user_tiny"]  # the same checkpoint in a process that did not register the model
    assert cli.main([*evaluate[:-1], str(tmp_path / "r2.json")]) == 2
    assert _one_line(capsys.readouterr().err).startswith("anomalyseg: error: unknown model 'user_tiny'; known: ")
    assert not (tmp_path / "r2.json").exists()


def test_duplicates_are_refused_unless_replace():
    register_model("user_a", user_factory)
    with pytest.raises(ValueError, match="'user_a' is already registered; pass replace=True"):
        register_model("user_a", user_factory)
    with pytest.raises(ValueError, match="'enet' is already registered"):
        register_model("enet", user_factory)

    def wide(num_classes: int, pretrained: bool = False, aux: bool | None = None) -> TinySeg:
        return TinySeg(num_classes, aux=False, width=7)

    register_model("user_a", wide, replace=True)
    assert build_model("user_a", 3).classifier.in_channels == 7
    with pytest.raises(TypeError, match="must be callable"):
        register_model("user_b", "tests.engine.tiny_model:build")  # a string is never resolved
    assert "user_b" not in available_models()


def test_user_model_builds_with_options_and_name():
    register_model("user_opts", user_factory)
    model = build_model_from_config(ModelConfig(name="user_opts", pretrained=False, aux=False,
                                                options={"width": 3}), 5)
    assert isinstance(model, TinySeg) and model.classifier.in_channels == 3 and model.num_classes == 5
    assert model(torch.randn(1, 3, 8, 8)).logits.shape == (1, 5, 8, 8)
    assert not R.weights_offline("user_opts") and R.parameter_count("user_opts", 5) > 0


class FakeEntryPoint:
    """What ``importlib.metadata.entry_points(group=...)`` yields, from a fake installed distribution."""

    def __init__(self, name: str, value: str, load=None) -> None:
        self.name, self.value, self.group = name, value, ENTRY_POINT_GROUP
        self.dist = SimpleNamespace(name="fake-models")
        self._load = load
        self.loaded = 0

    def load(self):
        self.loaded += 1
        if isinstance(self._load, Exception):
            raise self._load
        return self._load


def _fake_entry_points(monkeypatch, *eps: FakeEntryPoint) -> list[str]:
    groups: list[str] = []

    def entry_points(*, group: str):
        groups.append(group)
        return [ep for ep in eps if ep.group == group]

    monkeypatch.setattr("importlib.metadata.entry_points", entry_points)
    return groups


def test_entry_point_is_loaded_only_for_its_own_unregistered_name(monkeypatch):
    plug = FakeEntryPoint("plug_net", "fake_models.nets:build", user_factory)
    other = FakeEntryPoint("other_net", "fake_models.other:build", RuntimeError("must not be loaded"))
    groups = _fake_entry_points(monkeypatch, plug, other)
    assert isinstance(build_model("enet", 4), torch.nn.Module) and groups == []  # registered: no lookup
    model = build_model("plug_net", 4, width=2)
    assert isinstance(model, TinySeg) and model.classifier.in_channels == 2
    assert groups == [ENTRY_POINT_GROUP] and plug.loaded == 1 and other.loaded == 0
    spec = model_spec("plug_net")
    assert spec.family == "user" and "fake_models.nets:build (entry point of fake-models)" in spec.description
    assert "plug_net" not in available_models()  # entry points stay outside the registry
    assert R.entry_point_models() == {"plug_net": "fake_models.nets:build (fake-models)",
                                      "other_net": "fake_models.other:build (fake-models)"}
    with pytest.raises(UserError) as info:  # the known names include the entry points, none of them loaded
        model_spec("nope")
    assert str(info.value).endswith("erfnet, plug_net, other_net") and other.loaded == 0
    with pytest.raises(UserError, match=r"^unknown model 'other_net:build'; known: "):
        model_spec("other_net:build")
    assert other.loaded == 0


def test_broken_entry_point_is_one_line(monkeypatch):
    _fake_entry_points(monkeypatch, FakeEntryPoint("broken", "fake_models.broken:build",
                                                   ImportError("No module named 'fake_models'\nmore")),
                       FakeEntryPoint("notcallable", "fake_models:VALUE", 42))
    with pytest.raises(UserError) as info:
        build_model("broken", 3)
    assert str(info.value) == ("model 'broken': entry point fake_models.broken:build of fake-models cannot be "
                               "loaded (ImportError: No module named 'fake_models')")
    with pytest.raises(UserError, match="fake_models:VALUE of fake-models is not callable"):
        build_model("notcallable", 3)


def test_real_distribution_on_the_path_declares_the_tiny_model():
    """tests/plugins holds a fake installed distribution; importlib.metadata finds its entry point."""
    plugins = str(Path(__file__).resolve().parents[1] / "plugins")
    assert plugins in sys.path
    assert R.entry_point_models()["tiny"] == "tests.engine.tiny_model:build (anomalyseg-test-models)"
    assert isinstance(build_model("tiny", 3, width=2), TinySeg)


def test_models_list_shows_registered_and_entry_point_models(monkeypatch, capsys, caplog):
    """``models list`` lists register_model names and entry points (marked by source, parameters counted), a
    registered name shadowing an entry point once, and a broken entry point as one warning line."""
    register_model("user_listed", user_factory, description="listed", small=True)
    _fake_entry_points(monkeypatch, FakeEntryPoint("plug_net", "fake_models.nets:build", user_factory),
                       FakeEntryPoint("user_listed", "fake_models.shadowed:build", RuntimeError("not loaded")),
                       FakeEntryPoint("broken", "fake_models.broken:build", ImportError("No module named 'x'")))
    assert cli.main(["models", "list", "--json", "--num-classes", "5"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    tiny_params = sum(p.numel() for p in TinySeg(5, aux=False, width=4).parameters())
    assert rows["enet"]["source"] == "built-in"
    assert {k: rows["user_listed"][k] for k in ("source", "params", "small", "offline")} == {
        "source": "register_model", "params": tiny_params, "small": True, "offline": False}
    assert {k: rows["plug_net"][k] for k in ("source", "params", "small", "family")} == {
        "source": "entry point", "params": tiny_params, "small": False, "family": "user"}
    assert list(rows)[-2:] == ["user_listed", "plug_net"] and "broken" not in rows
    assert "entry point fake_models.broken:build of fake-models cannot be loaded" in caplog.text
    assert cli.main(["models", "list", "--small"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "params", "small", "offline", "source", "pretrained", "weights"]
    listed = {ln.split()[0]: ln.split() for ln in lines[1:] if ln.strip() and not ln.startswith("params for")}
    assert listed["user_listed"][1:5] == [f"{tiny_params / 1e6:.1f}M", "yes", "no", "register_model"]
    assert "plug_net" not in listed  # not small


def test_models_list_shows_the_installed_test_distribution(capsys):
    assert cli.main(["models", "list", "--json", "--num-classes", "3"]) == 0
    row = next(r for r in json.loads(capsys.readouterr().out) if r["name"] == "tiny")
    assert row["source"] == "entry point" and "anomalyseg-test-models" in row["pretrained"]
    assert row["params"] == sum(p.numel() for p in build_model("tiny", 3).parameters())
