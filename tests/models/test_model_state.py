"""load_model_state: aux heads on either side, wrapper prefixes, and one-line errors on mismatch."""

from __future__ import annotations

import logging

import pytest
import torch

from anomalyseg.errors import UserError
from anomalyseg.models import build_model, load_model_state


def _build(name: str = "lraspp_mobilenet_v3_large", num_classes: int = 13, **kwargs) -> torch.nn.Module:
    return build_model(name, num_classes, **kwargs).eval()


def _logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x).logits


def _same_weights(a: torch.nn.Module, b: torch.nn.Module, skip: str = "aux_head.") -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    keys = [k for k in sa if not k.startswith(skip)]
    return keys == [k for k in sb if not k.startswith(skip)] and all(torch.equal(sa[k], sb[k]) for k in keys)


@pytest.fixture(scope="module")
def trained_with_aux() -> torch.nn.Module:
    torch.manual_seed(1)
    return _build(aux=True)


def test_aux_checkpoint_into_model_without_aux(trained_with_aux, caplog):
    target = _build(aux=False)
    with caplog.at_level(logging.INFO, logger="anomalyseg.models.state"):
        report = load_model_state(target, trained_with_aux.state_dict())
    assert report.dropped_aux and all(k.startswith("aux_head.") for k in report.dropped_aux)
    assert not report.missing and not report.unexpected and not report.mismatched
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(_logits(target, x), _logits(trained_with_aux, x))
    assert "auxiliary head" in caplog.text


def test_checkpoint_without_aux_into_model_with_aux(trained_with_aux, caplog):
    plain = {k: v for k, v in trained_with_aux.state_dict().items() if not k.startswith("aux_head.")}
    target = _build(aux=True)
    aux_before = target.aux_head[0].weight.clone()
    with caplog.at_level(logging.WARNING):
        report = load_model_state(target, plain)
    assert report.missing_aux and not report.missing
    assert torch.equal(target.aux_head[0].weight, aux_before)  # left as initialised
    assert _same_weights(target, trained_with_aux)
    assert "no auxiliary head" in caplog.text


def test_torchvision_aux_classifier_keys_are_aux_too():
    with torch.device("meta"):
        with_aux = build_model("deeplabv3_resnet50", 13)  # torchvision's aux_classifier
        without = build_model("deeplabv3_resnet50", 13, aux=False)
    state = {k: torch.zeros(v.shape) for k, v in with_aux.state_dict().items()}
    without.to_empty(device="cpu")
    report = load_model_state(without, state)
    assert report.dropped_aux and all(k.startswith("aux_classifier.") for k in report.dropped_aux)


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod."])
def test_wrapper_prefixes_are_stripped(trained_with_aux, prefix):
    state = {prefix + k: v for k, v in trained_with_aux.state_dict().items()}
    target = _build(aux=True)
    load_model_state(target, state)
    assert _same_weights(target, trained_with_aux, skip="-")


def test_class_count_mismatch_is_one_line(trained_with_aux):
    with pytest.raises(UserError) as info:
        load_model_state(_build(num_classes=19), trained_with_aux.state_dict())
    message = str(info.value)
    assert "\n" not in message
    assert "it was trained for 13 classes, the model has 19" in message
    assert "classifier.low_classifier.weight (13, 40, 1, 1) vs (19, 40, 1, 1)" in message


def test_architecture_mismatch_lists_keys(trained_with_aux):
    with torch.device("meta"):
        other = build_model("deeplabv3plus_efficientnet_lite0", 13)
    with pytest.raises(UserError) as info:
        load_model_state(other, trained_with_aux.state_dict())
    message = str(info.value)
    assert "\n" not in message and "checkpoint does not fit model 'deeplabv3plus_efficientnet_lite0'" in message
    assert "missing key(s): encoder.model.conv_stem.weight" in message
    assert "unexpected key(s): backbone.0.0.weight" in message and "more)" in message


def test_non_strict_loads_what_fits(trained_with_aux):
    target = _build(num_classes=19)
    state = trained_with_aux.state_dict()
    report = load_model_state(target, state, strict=False)
    assert set(report.mismatched) == {
        "classifier.low_classifier.weight", "classifier.low_classifier.bias",
        "classifier.high_classifier.weight", "classifier.high_classifier.bias"}
    assert torch.equal(target.backbone["0"][0].weight, state["backbone.0.0.weight"])


def test_not_a_state_dict():
    with pytest.raises(UserError, match="expected a model state dict"):
        load_model_state(_build(), {"model": {"a": torch.zeros(1)}})
