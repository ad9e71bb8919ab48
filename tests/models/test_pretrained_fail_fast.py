"""``pretrained=True`` without a reachable download host fails in seconds with one line (huggingface_hub and
torch.hub retried for 93 s / 23 s before), and a reachable host still goes through the libraries' download."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import huggingface_hub.constants as hf_constants
import pytest
import torch

from anomalyseg.errors import UserError
from anomalyseg.models import build_model
from anomalyseg.models import pretrained as pt

REFUSED = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused at once


@pytest.fixture
def empty_caches(monkeypatch, tmp_path) -> Path:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch_hub"))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def _fails_fast(name: str, needle: str) -> str:
    start = time.monotonic()
    with pytest.raises(UserError) as info:
        build_model(name, 13, pretrained=True)
    elapsed = time.monotonic() - start
    message = str(info.value)
    assert elapsed < 5, f"{name}: {elapsed:.1f} s"
    assert "\n" not in message and needle in message, message
    assert message.startswith(f"pretrained weights for {name} could not be loaded (")
    assert message.endswith("or set `pretrained: false`")
    return message


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name, repo", [("segformer_b0", "nvidia/mit-b0"),
                                        ("deeplabv3plus_resnet18", "smp-hub/resnet18.imagenet")])
def test_unreachable_hf_endpoint_fails_in_seconds(empty_caches, monkeypatch, name, repo):
    monkeypatch.setenv("HF_ENDPOINT", REFUSED)
    message = _fails_fast(name, f"{REFUSED}/{repo}")
    assert "127.0.0.1 cannot be reached" in message


@pytest.mark.timeout(30)
def test_unreachable_proxy_fails_in_seconds_for_torch_hub(empty_caches, monkeypatch):
    monkeypatch.setenv("https_proxy", REFUSED)  # downloads would go through it: the probe asks the proxy
    monkeypatch.setenv("HTTPS_PROXY", REFUSED)
    message = _fails_fast("deeplabv3_resnet50", "resnet50-0676ba61.pth")
    assert "download.pytorch.org cannot be reached" in message


@pytest.mark.timeout(30)
def test_hf_offline_flag_fails_without_probing(empty_caches, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(pt, "unreachable", lambda *a, **k: pytest.fail("probed although offline"))
    assert "HF_HUB_OFFLINE is set" in _fails_fast("segformer_b0", "nvidia/mit-b0")


@pytest.mark.timeout(30)
def test_a_host_that_never_answers_is_bounded(monkeypatch):
    """A resolver or connect that hangs is cut at the probe timeout."""
    monkeypatch.setenv("ANOMALYSEG_NET_TIMEOUT", "0.5")

    def hang(*_args, **_kwargs):
        time.sleep(3)
        raise OSError("too late")

    monkeypatch.setattr(socket, "create_connection", hang)
    start = time.monotonic()
    why = pt.unreachable("https://huggingface.co/nvidia/mit-b0")
    assert time.monotonic() - start < 1.5
    assert why == "no answer from huggingface.co:443 within 0.5 s"


def test_reachable_host_keeps_the_library_download(empty_caches, monkeypatch):
    """A host that accepts connections passes the probe; the library's own download then runs (here it is
    replaced by a stand-in that records the call)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    assert pt.unreachable(endpoint) is None
    transformers = pytest.importorskip("transformers")

    calls = []

    def fake_from_pretrained(repo, config):
        calls.append(repo)
        raise OSError("stand-in for the real download")

    monkeypatch.setattr(transformers.SegformerForSemanticSegmentation, "from_pretrained", fake_from_pretrained)
    with pytest.raises(UserError, match="stand-in for the real download"):
        build_model("segformer_b0", 13, pretrained=True)
    assert calls == ["nvidia/mit-b0"]
    server.close()
