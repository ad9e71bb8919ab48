"""Input contracts (dict round trip, command-line strings, checkpoint defaults) and imported checkpoints read
back by the engine's own loader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from anomalyseg.checkpoints.contract import (
    InputContract,
    contract_from_checkpoint,
    parse_contract,
    resolve_contract,
)
from anomalyseg.checkpoints.foreign import import_checkpoint
from anomalyseg.checkpoints.io import load_checkpoint
from anomalyseg.checkpoints.reload import load_model
from anomalyseg.data.cityscapes import CITYSCAPES_CLASSES
from anomalyseg.errors import UserError
from anomalyseg.models import IMAGENET_MEAN, IMAGENET_STD, build_model


def test_parse_and_round_trip() -> None:
    c = parse_contract("size=512x1024, norm=none, void=19, classes=cityscapes")
    assert c.size == (512, 1024) and c.mean == (0.0, 0.0, 0.0) and c.std == (1.0, 1.0, 1.0)
    assert c.class_names == (*CITYSCAPES_CLASSES, "void") and c.void_index == 19 and c.num_outputs == 20
    assert c.normalisation == "none" and c.known_classes_option() == 19 and c.known_channels() == list(range(19))
    assert c.known_class_names == CITYSCAPES_CLASSES
    assert c.model_options() == {"input_mean": [0.0, 0.0, 0.0], "input_std": [1.0, 1.0, 1.0]}
    data = json.loads(json.dumps(c.to_dict()))  # plain data
    assert InputContract.from_dict(data) == c
    assert "512x1024 (HxW)" in c.describe() and "void channel 19" in c.describe()
    first = parse_contract("classes=a/b/c,void=0,mean=0.5/0.5/0.5,std=0.25/0.25/0.25")
    assert first.class_names == ("void", "a", "b", "c") and first.known_classes_option() == [1, 2, 3]
    assert first.normalisation == "custom" and first.size is None
    assert parse_contract("norm=imagenet").normalisation == "imagenet" == InputContract().normalisation


def test_overrides_keep_what_is_not_given() -> None:
    base = parse_contract("size=512x1024,norm=none,void=19,classes=cityscapes")
    moved = parse_contract("void=0", base)  # the void name moves with the index
    assert moved.class_names[0] == "void" and moved.class_names[1:] == CITYSCAPES_CLASSES
    assert moved.size == (512, 1024) and moved.normalisation == "none"
    assert parse_contract("void=none", base).void_index is None
    assert parse_contract("size=256x512", base).class_names == base.class_names


@pytest.mark.parametrize(("text", "message"), [
    ("size=512", "size must be HxW such as 512x1024"),
    ("norm=zscore", "norm must be one of"),
    ("mean=0.5/0.5", "mean must be three numbers"),
    ("void=last", "void must be a channel index or none"),
    ("classes=cityscapes,void=25", "void channel 25 is beyond the 19 known classes"),
    ("colour=rgb", "expected KEY=VALUE,...: size=HxW"),
    ("size=1x1,size=2x2", "size given twice"),
    ("classes=road", "classes must be a preset"),
])
def test_parse_errors_are_one_line(text: str, message: str) -> None:
    with pytest.raises(UserError) as info:
        parse_contract(text)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_checkpoint_without_contract_gets_the_project_default() -> None:
    ckpt = {"class_names": ["a", "b"], "config": {"model": {"name": "enet", "options": {}}}}
    c = contract_from_checkpoint(ckpt)
    assert c == InputContract(class_names=("a", "b")) and c.mean == IMAGENET_MEAN and c.std == IMAGENET_STD
    assert resolve_contract(ckpt, "size=64x96").size == (64, 96)
    assert resolve_contract(None) == InputContract()
    with pytest.raises(UserError, match="unknown key"):
        InputContract.from_dict({"sizes": [1, 2]})


def test_imported_checkpoint_is_read_by_the_engine_loader(tmp_path: Path) -> None:
    """import -> save -> checkpoints.load_model: same weights, same logits, no retyping."""
    torch.manual_seed(0)
    foreign = build_model("enet", 4, input_mean=(0, 0, 0), input_std=(1, 1, 1)).eval()
    torch.save({"state_dict": {f"module.{k}": v for k, v in foreign.state_dict().items()}}, tmp_path / "best.pth")
    out = tmp_path / "imported.pt"
    import_checkpoint(tmp_path / "best.pth", "enet", "size=32x64,norm=none,classes=a/b/c,void=3", out=out)
    with pytest.raises(UserError, match="exists; pass force=True"):
        import_checkpoint(tmp_path / "best.pth", "enet", "norm=none", out=out)
    loaded = load_model(out)
    model, ckpt = loaded.model, loaded.checkpoint
    assert ckpt["model_name"] == "enet" and ckpt["num_classes"] == 4 and ckpt["class_names"] == ["a", "b", "c", "void"]
    assert ckpt["imported_from"]["path"].endswith("best.pth") and len(ckpt["imported_from"]["sha256"]) == 64
    contract = contract_from_checkpoint(load_checkpoint(out))
    assert contract.size == (32, 64) and contract.void_index == 3 and contract.normalisation == "none"
    x = torch.rand(2, 3, 32, 64)
    normed = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model(normed).logits, foreign(normed).logits)
        # what the foreign code computed: the raw [0, 1] image into the bare network
        plain = build_model("enet", 4).eval()
        plain.load_state_dict(foreign.state_dict())
        torch.testing.assert_close(model(normed).logits, plain(x).logits, atol=1e-4, rtol=1e-4)
