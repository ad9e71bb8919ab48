"""Hiera / SAM2-Hiera + Semantic-FPN: every variant builds without weights, trains (forward + backward) at the
training crop, the full frame and an odd size, logits come back at the input size; the resized Hiera equals
timm's own Hiera built at that size; pretrained weights that cannot be fetched fail in seconds."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

from anomalyseg.errors import UserError
from anomalyseg.models import build_model, model_spec
from anomalyseg.models.hiera import HIERA_VARIANTS, _hiera_stages
from anomalyseg.models.registry import weights_offline

NUM_CLASSES = 13
TINY = ("hiera_tiny_fpn", "sam2_hiera_tiny_fpn")
BIG = tuple(n for n in HIERA_VARIANTS if n not in TINY)
CROP, FULL, ODD, SMALL_ODD = (512, 512), (720, 1280), (500, 900), (100, 164)


def _train_step(name: str, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = build_model(name, NUM_CLASSES, pretrained=False, aux=True, features=("stage1", "decoder")).train()
    x = torch.randn(1, 3, *size)
    out = model(x, return_features=True)
    assert out.logits.shape == (1, NUM_CLASSES, *size)
    assert out.aux_logits is not None and out.aux_logits.shape == out.logits.shape
    assert next(iter(out.features)) == "stage3" == model.default_feature
    for key, feat in out.features.items():
        stride = model.feature_strides[key]
        assert feat.shape[-2:] == (-(-size[0] // stride), -(-size[1] // stride)), key
    target = torch.randint(0, NUM_CLASSES, (1, *size))
    loss = F.cross_entropy(out.logits, target) + 0.4 * F.cross_entropy(out.aux_logits, target)
    loss.backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []  # no dead weights (DDP-safe)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("size", [CROP, SMALL_ODD], ids=["512x512", "100x164"])
def test_tiny_trains_at_any_size(name, size):
    _train_step(name, size)


@pytest.mark.slow  # 8 s (odd) and 25-30 s (full frame) each on 2 CPU cores
@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("size", [FULL, ODD], ids=["720x1280", "500x900"])
def test_tiny_trains_at_full_frame_and_odd_size(name, size):
    _train_step(name, size)


@pytest.mark.slow
@pytest.mark.parametrize("name", BIG)
def test_big_variants_train_at_a_small_odd_size(name):
    _train_step(name, SMALL_ODD)


def test_registry_entries():
    assert set(HIERA_VARIANTS) <= set(model_spec.__globals__["MODELS"])
    for name, (arch, tag) in HIERA_VARIANTS.items():
        spec = model_spec(name)
        assert spec.family == "timm" and spec.args == (arch, tag) and f"{arch}.{tag}" in spec.weights
        with torch.device("meta"):
            model = build_model(name, NUM_CLASSES)
        assert model.default_feature == "stage3" and model.feature_strides["stage3"] == 16
        assert model.input_contract["size_divisor"] == 32


def test_resized_hiera_equals_timm_hiera_built_at_that_size():
    """Our per-input unroll + resampled position embedding == timm's Hiera created with img_size=(H, W) whose
    position embedding is the same resampling; at 224 (no resampling) == timm's forward_intermediates."""
    import timm

    torch.manual_seed(0)
    model = build_model("hiera_tiny_fpn", NUM_CLASSES).eval()
    enc = model.encoder
    with torch.no_grad():
        x = torch.randn(1, 3, 224, 224)
        ours = _hiera_stages(enc, x)
        ref = enc.forward_intermediates(x, intermediates_only=True)
        assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(ours, ref))

        size = (160, 288)
        fixed = timm.create_model("hiera_tiny_224", img_size=size).eval()
        state = {k: v for k, v in enc.state_dict().items() if k != "pos_embed"}
        grid = enc.pos_embed.reshape(1, 56, 56, -1).permute(0, 3, 1, 2)
        pos = F.interpolate(grid, size=(size[0] // 4, size[1] // 4), mode="bicubic", align_corners=False)
        state["pos_embed"] = pos.flatten(2).transpose(1, 2)
        missing, unexpected = fixed.load_state_dict(state, strict=False)
        assert unexpected == [] and all(k.startswith("head.") for k in missing)
        x = torch.randn(1, 3, *size)
        ours = _hiera_stages(enc, x)
        ref = fixed.forward_intermediates(x, intermediates_only=True)
        assert [tuple(a.shape) for a in ours] == [tuple(b.shape) for b in ref]
        assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(ours, ref))


def test_options_are_checked():
    with pytest.raises(UserError, match="drop_path_rate"):
        build_model("sam2_hiera_tiny_fpn", NUM_CLASSES, drop_path_rate=1.5)
    with pytest.raises(UserError, match="does not take option"):
        build_model("sam2_hiera_tiny_fpn", NUM_CLASSES, output_stride=8)
    with pytest.raises(UserError, match="no feature"):
        build_model("hiera_tiny_fpn", NUM_CLASSES, features=("layer3",))
    model = build_model("sam2_hiera_tiny_fpn", NUM_CLASSES, drop_path_rate=0.2)
    assert model.encoder.blocks[-1].drop_path1.__class__.__name__ == "DropPath"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", ["hiera_base_fpn", "sam2_hiera_base_plus_fpn"])
def test_pretrained_without_network_fails_in_seconds(monkeypatch, tmp_path, name):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: refused at once
    assert not weights_offline(name)
    arch, tag = HIERA_VARIANTS[name]
    start = time.monotonic()
    with pytest.raises(UserError) as info:
        build_model(name, NUM_CLASSES, pretrained=True)
    message = str(info.value)
    assert time.monotonic() - start < 5
    assert "\n" not in message and message.startswith(f"pretrained weights for {name} could not be loaded (")
    assert f"http://127.0.0.1:9/timm/{arch}.{tag}" in message and message.endswith("or set `pretrained: false`")


def test_pretrained_with_hf_offline_set_names_it(monkeypatch, tmp_path):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="HF_HUB_OFFLINE is set"):
        build_model("sam2_hiera_tiny_fpn", NUM_CLASSES, pretrained=True)
