"""One contract tester run over every registered model (smp's BaseModelTester idea), plus checks
against the upstream libraries' own forward passes and state dicts."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from anomalyseg.errors import UserError
from anomalyseg.models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SegOutput,
    available_models,
    build_model,
    count_parameters,
    model_spec,
    parameter_count,
)

NUM_CLASSES = 5
ODD = (37, 51)  # divisible by neither 2 nor 16: exercises padding / interpolation back to the input size


def _device_for(name: str) -> torch.device:
    """Small models run for real; big ones on the meta device (shapes only, no memory, no time)."""
    return torch.device("cpu" if model_spec(name).small else "meta")


@pytest.fixture(scope="module", params=available_models())
def built(request):
    """Each model once per module, with every feature it offers (learned on the meta device); the small
    ones (run for real) also with an auxiliary head, so that the generic aux head is trained too."""
    name = request.param
    with torch.device("meta"):
        names = build_model(name, NUM_CLASSES).available_features
    torch.manual_seed(0)
    real = _device_for(name).type != "meta"
    with _device_for(name):
        return build_model(name, NUM_CLASSES, features=names, aux=True if real else None)


def test_registry_lists_required_names():
    required = {
        "deeplabv3_resnet50", "deeplabv3_resnet101", "deeplabv3plus_resnet18", "deeplabv3plus_resnet50",
        "deeplabv3plus_resnet101", "lraspp_mobilenet_v3_large", "deeplabv3plus_efficientnet_lite0",
        "deeplabv3plus_efficientnet_lite2", *(f"segformer_b{i}" for i in range(6)),
    }
    assert required <= set(available_models())
    assert {n for n in available_models() if model_spec(n).small} >= {
        "deeplabv3plus_resnet18", "lraspp_mobilenet_v3_large", "deeplabv3plus_efficientnet_lite0"}


def test_eval_output_record(built):
    model = built.eval()
    x = torch.randn(2, 3, *ODD, device=_device_for(model.name))
    with torch.no_grad():
        out = model(x)
        with_feats = model(x, return_features=True)
    assert isinstance(out, SegOutput)
    assert out.logits.shape == (2, NUM_CLASSES, *ODD) and out.logits.dtype == torch.float32
    assert out.aux_logits is None and out.features == {}  # no aux in eval mode, even with an aux head
    if x.device.type != "meta":
        assert torch.isfinite(out.logits).all()
        assert torch.allclose(with_feats.logits, out.logits, atol=1e-5)  # asking for features changes nothing
    assert with_feats.aux_logits is None
    assert next(iter(with_feats.features)) == model.default_feature  # scorers take the first one by default
    assert set(with_feats.features) == set(model.feature_names) == set(model.available_features)
    for key, feat in with_feats.features.items():
        stride = model.feature_strides[key]
        expected = (2, model.feature_channels[key], math.ceil(ODD[0] / stride), math.ceil(ODD[1] / stride))
        assert feat.shape == expected, key


def test_train_mode_aux_and_backward(built):
    """Aux logits in training mode only; for the small models the loss reaches every parameter."""
    model = built.train()
    device = _device_for(model.name)
    # batch 2: BatchNorm after global pooling needs more than one value per channel in training mode
    x = torch.randn(2, 3, *ODD, device=device)
    out = model(x)
    assert out.logits.shape == (2, NUM_CLASSES, *ODD)
    if model.has_aux:
        assert out.aux_logits is not None and out.aux_logits.shape == out.logits.shape
    else:
        assert out.aux_logits is None
    model.eval()
    if device.type == "meta":
        return
    assert model.has_aux
    target = torch.randint(0, NUM_CLASSES, (2, *ODD))
    target[:, :4] = 255
    loss = F.cross_entropy(out.logits, target, ignore_index=255) + 0.4 * F.cross_entropy(
        out.aux_logits, target, ignore_index=255)
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert no_grad == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    model.zero_grad(set_to_none=True)


def test_attributes_and_input_contract(built):
    assert built.name in available_models() and built.num_classes == NUM_CLASSES
    with torch.device("meta"):  # default: an aux head only where the seed had one
        assert build_model(built.name, NUM_CLASSES).has_aux == built.name.startswith("deeplabv3_")
    assert isinstance(built.feature_names, tuple) and built.default_feature in built.feature_names
    expected_default = "layer3" if "resnet" in built.name else {
        "lraspp": "high", "segformer": "stage3", "hiera": "stage3", "sam2": "stage3", "enet": "encoder",
        "erfnet": "encoder"}.get(
        built.name.split("_")[0], "stage4")
    assert built.default_feature == expected_default
    assert built.feature_strides[built.default_feature] in (8, 16)  # a mid-level map
    contract = built.input_contract
    assert contract["mean"] == list(IMAGENET_MEAN) and contract["std"] == list(IMAGENET_STD)
    assert contract["renormalised_inside"] == ("efficientnet_lite" in built.name)
    with torch.device("meta"):  # the meta-device count (used by `models list`) equals the real one
        same = build_model(built.name, NUM_CLASSES, aux=built.has_aux)
    assert count_parameters(built) == count_parameters(same)


def test_torchvision_deeplabv3_matches_torchvision_builder():
    """Same state-dict layout as torchvision's builder (seed checkpoints load) and the same logits."""
    from torchvision.models.segmentation import deeplabv3_resnet50

    torch.manual_seed(0)
    ours = build_model("deeplabv3_resnet50", NUM_CLASSES, features=("decoder",)).eval()
    ref = deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=NUM_CLASSES, aux_loss=True).eval()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    ref.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(1, 3, *ODD)
    with torch.no_grad():
        out = ours(x, return_features=True)
        expected = ref(x)["out"]
        # "decoder" is the input of the last 1x1 conv: applying it reproduces the logits
        head = F.interpolate(ours.classifier[-1](out.features["decoder"]), size=ODD, mode="bilinear")
    assert torch.allclose(out.logits, expected, atol=1e-5)
    assert torch.allclose(head, out.logits, atol=1e-5)


def test_lraspp_matches_torchvision():
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    ours = build_model("lraspp_mobilenet_v3_large", NUM_CLASSES).eval()
    ref = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=NUM_CLASSES).eval()
    ref.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(1, 3, *ODD)
    with torch.no_grad():
        assert torch.allclose(ours(x).logits, ref(x)["out"], atol=1e-5)


def test_smp_deeplabv3plus_matches_smp_and_pads_odd_inputs():
    import segmentation_models_pytorch as smp

    ours = build_model("deeplabv3plus_resnet18", NUM_CLASSES).eval()
    ref = smp.DeepLabV3Plus("resnet18", encoder_weights=None, classes=NUM_CLASSES).eval()
    ref.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        assert torch.allclose(ours(x).logits, ref(x), atol=1e-5)
        # an odd input is zero-padded to the encoder stride and cropped back
        odd = x[..., :ODD[0], :ODD[1]]
        padded = F.pad(odd, (0, 64 - ODD[1], 0, 48 - ODD[0]))
        assert torch.allclose(ours(odd).logits, ref(padded)[..., :ODD[0], :ODD[1]], atol=1e-5)
    with pytest.raises(RuntimeError):  # smp itself refuses such input: the wrapper is what makes it work
        ref(odd)


def test_segformer_matches_transformers():
    from transformers import SegformerForSemanticSegmentation

    ours = build_model("segformer_b0", NUM_CLASSES, features=("decoder",)).eval()
    config = ours.segformer.config
    ref = SegformerForSemanticSegmentation(config).eval()
    ref.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(1, 3, *ODD)
    with torch.no_grad():
        out = ours(x, return_features=True)
        expected = F.interpolate(ref(pixel_values=x).logits, size=ODD, mode="bilinear", align_corners=False)
        head = ours.decode_head.classifier(out.features["decoder"])
    assert torch.allclose(out.logits, expected, atol=1e-5)
    assert torch.allclose(F.interpolate(head, size=ODD, mode="bilinear"), out.logits, atol=1e-5)
    assert config.num_labels == NUM_CLASSES and list(config.depths) == [2, 2, 2, 2]


def test_efficientnet_lite_input_is_renormalised_for_its_backbone():
    """Callers give ImageNet-normalised input; the Lite encoder sees TF's (x - 0.5) / 0.5."""
    model = build_model("deeplabv3plus_efficientnet_lite0", NUM_CLASSES).eval()
    raw = torch.rand(1, 3, 32, 32)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    seen = []
    hook = model.encoder.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    with torch.no_grad():
        model((raw - mean) / std)
    hook.remove()
    assert torch.allclose(seen[0], (raw - 0.5) / 0.5, atol=1e-5)


def test_options():
    with torch.device("meta"):
        os16 = build_model("deeplabv3_resnet50", 13, output_stride=16)
        assert os16.feature_strides["layer3"] == 16 and os16.feature_strides["layer4"] == 16
        assert build_model("deeplabv3_resnet50", 13).feature_strides["layer4"] == 8
        no_aux = build_model("deeplabv3_resnet101", 13, aux=False)
        assert not no_aux.has_aux and not any(k.startswith("aux_classifier.") for k in no_aux.state_dict())
        with_aux = build_model("deeplabv3plus_resnet50", 13, aux=True)
        assert with_aux.has_aux and any(k.startswith("aux_head.") for k in with_aux.state_dict())
        assert build_model("deeplabv3plus_resnet50", 13, output_stride=8).feature_strides["layer3"] == 8
        assert build_model("segformer_b1", 13, features="decoder").feature_names == ("stage3", "decoder")
    errors = [
        (dict(name="deeplabv3_resnet51"), "unknown model 'deeplabv3_resnet51'; known: deeplabv3_resnet50"),
        (dict(output_stride=32), "supports output_stride 8 or 16, got 32"),
        (dict(features=("layer9",)), "has no feature(s) 'layer9'; available: layer1, layer2"),
        (dict(dropout=0.1), "does not take option(s) dropout; it takes: output_stride, features"),
        (dict(num_classes=0), "num_classes must be a positive integer"),
    ]
    for kwargs, message in errors:
        args = {"name": "deeplabv3plus_resnet18", "num_classes": 13, **kwargs}
        with torch.device("meta"), pytest.raises(UserError) as info:
            build_model(**args)
        assert message in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(UserError, match="supports output_stride 16"):
        build_model("lraspp_mobilenet_v3_large", 13, output_stride=8)


def test_parameter_counts_match_torchvision_published_figures():
    """torchvision documents its COCO-VOC models' sizes (21 classes, aux head): an independent reference."""
    from torchvision.models.segmentation import (
        DeepLabV3_ResNet50_Weights,
        DeepLabV3_ResNet101_Weights,
        LRASPP_MobileNet_V3_Large_Weights,
    )

    for name, weights in [
        ("deeplabv3_resnet50", DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1),
        ("deeplabv3_resnet101", DeepLabV3_ResNet101_Weights.COCO_WITH_VOC_LABELS_V1),
        ("lraspp_mobilenet_v3_large", LRASPP_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1),
    ]:
        assert parameter_count(name, 21) == weights.meta["num_params"], name
