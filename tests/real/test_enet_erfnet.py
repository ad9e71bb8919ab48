"""ENet / ERFNet written here: upstream key names, strict loading of foreign checkpoints, and the real
Cityscapes ENet (``../shared/models``) segmenting real Road Anomaly photos."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from anomalyseg.checkpoints.foreign import import_checkpoint
from anomalyseg.data.anomaly_folder import AnomalyImageFolder, ModelResize
from anomalyseg.errors import UserError
from anomalyseg.models import IMAGENET_MEAN, IMAGENET_STD, build_model, count_parameters

# A few key names of the upstream codebases (davidtvs/PyTorch-ENet models/enet.py, Eromera/erfnet_pytorch
# train/erfnet.py), written out here as the reference the state dicts must follow.
ENET_KEYS = ["initial_block.main_branch.weight", "initial_block.out_activation.weight",
             "downsample1_0.ext_conv1.0.weight", "regular1_4.ext_conv3.2.weight", "dilated2_2.ext_conv2.0.weight",
             "asymmetric2_3.ext_conv2.3.weight", "dilated3_7.out_activation.weight",
             "upsample4_0.main_conv1.1.running_var", "upsample5_0.ext_tconv1_bnorm.weight",
             "regular5_1.ext_conv1.0.weight", "transposed_conv.weight"]
ERFNET_KEYS = ["encoder.initial_block.conv.weight", "encoder.initial_block.bn.running_mean",
               "encoder.layers.0.conv.bias", "encoder.layers.1.conv3x1_1.weight", "encoder.layers.14.conv1x3_2.bias",
               "encoder.output_conv.weight", "decoder.layers.0.conv.weight", "decoder.layers.5.bn2.num_batches_tracked",
               "decoder.output_conv.bias"]


@pytest.mark.parametrize(("name", "keys", "tensors"), [("enet", ENET_KEYS, 622), ("erfnet", ERFNET_KEYS, 345)])
def test_state_dicts_use_upstream_key_names(name: str, keys: list[str], tensors: int | None) -> None:
    with torch.device("meta"):
        state = build_model(name, 20).state_dict()
    assert set(keys) <= set(state)
    if tensors is not None:
        # ENet: the real PyTorch-ENet checkpoint holds 622 tensors (its README); ERFNet: counted off the
        # upstream definition (3 downsamplers x 7, 17 non-bottleneck blocks x 18, 2 upsamplers x 7, 2 heads x 2)
        assert len(state) == tensors
    with torch.device("meta"):  # dilation / asymmetric layout: shapes of the stage-2 special blocks
        model = build_model(name, 20)
    if name == "enet":
        assert model.dilated2_8.ext_conv2[0].dilation == (16, 16)
        assert model.asymmetric3_6.ext_conv2[0].kernel_size == (5, 1)
        assert model.asymmetric3_6.ext_conv2[3].kernel_size == (1, 5)
    else:
        assert [layer.conv3x1_2.dilation[0] for layer in model.encoder.layers[7:]] == [2, 4, 8, 16] * 2
        assert model.encoder.layers[1].bn1.eps == 1e-3


def test_erfnet_checkpoint_as_saved_by_its_training_script_imports(tmp_path: Path) -> None:
    """erfnet_pytorch saves ``{"epoch", "arch", "state_dict" (DataParallel), "best_acc", "optimizer"}``."""
    torch.manual_seed(0)
    source = build_model("erfnet", 20).eval()
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    path = tmp_path / "checkpoint.pth.tar"
    torch.save({"epoch": 150, "arch": "Net", "state_dict": state, "best_acc": 0.7, "optimizer": {}}, path)
    ckpt = import_checkpoint(path, "erfnet", "norm=none,classes=19,void=19")
    assert ckpt["num_classes"] == 20 and ckpt["class_names"][19] == "void"
    model = build_model("erfnet", 20, **ckpt["config"]["model"]["options"]).eval()
    model.load_state_dict(ckpt["model"])
    x = torch.rand(1, 3, 64, 96)
    norm = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():  # the imported model takes ImageNet-normalised input and sees [0, 1] inside
        torch.testing.assert_close(model(norm).logits, source.__class__.forward(source, x).logits, atol=2e-4,
                                   rtol=1e-4)


def test_missing_and_unexpected_keys_are_listed(tmp_path: Path) -> None:
    with torch.device("meta"):
        state = build_model("enet", 20).state_dict()
    state = {k: torch.zeros(v.shape) for k, v in state.items()}
    state["regular1_1.ext_conv1.0.weights"] = state.pop("regular1_1.ext_conv1.0.weight")
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "enet.pth")
    with pytest.raises(UserError) as info:
        import_checkpoint(tmp_path / "enet.pth", "enet", "norm=none")
    message = str(info.value)
    assert "\n" not in message and "1 missing key(s): regular1_1.ext_conv1.0.weight" in message
    assert "1 unexpected key(s): regular1_1.ext_conv1.0.weights" in message
    with pytest.raises(UserError, match="predicts 20 classes but the input contract names 19"):
        import_checkpoint(tmp_path / "enet.pth", "enet", "classes=cityscapes")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match=r"junk\.pth is not a PyTorch checkpoint"):
        import_checkpoint(tmp_path / "junk.pth", "enet", "norm=none")
    torch.save({"epoch": 3}, tmp_path / "empty.pth")
    with pytest.raises(UserError, match="holds no state dict"):
        import_checkpoint(tmp_path / "empty.pth", "enet", "norm=none")


def test_erfnet_encoder_head_is_its_aux_head() -> None:
    model = build_model("erfnet", 5, aux=True).train()
    out = model(torch.randn(2, 3, 32, 48))
    assert model.has_aux and out.aux_logits is not None and out.aux_logits.shape == out.logits.shape
    assert not build_model("erfnet", 5).has_aux
    with pytest.raises(UserError, match="no ImageNet weights"):
        build_model("enet", 5, pretrained=True)


@pytest.mark.shared
def test_real_enet_loads_strictly(enet_checkpoint_path: Path, enet_imported: dict) -> None:
    raw = torch.load(enet_checkpoint_path, map_location="cpu", weights_only=True)
    assert len(raw) == 622 and all(k.startswith("module.") for k in raw)
    with torch.device("meta"):
        own = build_model("enet", 20).state_dict()
    assert {k.removeprefix("module.") for k in raw} == set(own)  # zero missing, zero unexpected
    for key, value in raw.items():
        assert torch.equal(enet_imported["model"][key.removeprefix("module.")], value)
    assert count_parameters(build_model("enet", 20)) == pytest.approx(352_000, rel=0.01)  # README: ~352k
    contract = enet_imported["input_contract"]
    assert contract["size"] == [512, 1024] and contract["normalisation"] == "none"
    assert contract["void_index"] == 19 and contract["class_names"][0] == "road"


@pytest.mark.shared
@pytest.mark.slow
def test_real_enet_sees_road_at_the_bottom_centre(road_anomaly_root: Path, enet_real) -> None:
    """On real Road Anomaly photos at 512x1024 the known-class prediction of the normal pixels in the bottom
    quarter, middle third, is mostly road (train id 0)."""
    ds = AnomalyImageFolder(road_anomaly_root, "road_anomaly", transform=ModelResize((512, 1024)))
    for index in range(3):
        sample = ds[index]
        with torch.no_grad():
            logits = enet_real(sample["image"][None]).logits
        assert logits.shape == (1, 20, 512, 1024)
        pred = logits[0, :19].argmax(0)
        region = (slice(384, 512), slice(341, 683))
        normal = sample["label"][region] == 0
        counts = torch.bincount(pred[region][normal], minlength=19)
        assert int(counts.argmax()) == 0 and counts[0] > 0.5 * counts.sum(), counts.tolist()
