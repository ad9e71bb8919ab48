"""Checkpoints: atomic writes, weights_only round trip, RNG capture, class-count / architecture errors, aux heads."""

from __future__ import annotations

import io
import pickle
import random
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image
from tests.engine.tiny_model import build

from anomalyseg.checkpoints import io as ck
from anomalyseg.checkpoints.reload import load_model
from anomalyseg.config import Config
from anomalyseg.configio import config_to_dict
from anomalyseg.errors import UserError
from anomalyseg.files import is_torch_file


class Evil:
    """Not allow-listed for weights_only loading."""


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    ck.save_checkpoint(path, {"model": {"w": torch.ones(3)}, "step": 1})
    real_save = torch.save

    def crash(obj, fh, *a, **k):
        fh.write(b"partial garbage")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(UserError, match=rf"cannot write {path}: disk full"):  # one line naming the file
        ck.save_checkpoint(path, {"model": {"w": torch.zeros(3)}, "step": 2})
    monkeypatch.setattr(torch, "save", real_save)
    assert ck.load_checkpoint(path)["step"] == 1  # the previous checkpoint is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temporary left behind


def test_round_trip_with_weights_only_and_rng(tmp_path):
    model = build(13)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 3, 8, 8)).logits.mean().backward()
    opt.step()
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    rng = ck.rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    payload = {"format": ck.FORMAT, "model": model.state_dict(), "optimizer": opt.state_dict(),
               "rng": [rng], "config": config_to_dict(Config()), "num_classes": 13, "model_name": "tiny"}
    ck.save_checkpoint(tmp_path / "c.pt", payload)
    loaded = ck.load_checkpoint(tmp_path / "c.pt")  # weights_only=True inside
    for k, v in model.state_dict().items():
        assert torch.equal(loaded["model"][k], v)
    opt2 = torch.optim.AdamW(build(13).parameters(), lr=1e-3)
    opt2.load_state_dict(loaded["optimizer"])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    assert loaded["config"] == config_to_dict(Config())
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    ck.set_rng_state(loaded["rng"][0])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_unreadable_and_foreign_files_are_user_errors(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(UserError, match=r"junk\.pt is not a PyTorch checkpoint"):
        ck.load_checkpoint(tmp_path / "junk.pt")
    with pytest.raises(UserError, match="checkpoint not found"):
        ck.load_checkpoint(tmp_path / "missing.pt")
    torch.save({"model": {}, "x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(UserError, match=r"cannot read checkpoint .*evil\.pt: WeightsUnpickler error"):
        ck.load_checkpoint(tmp_path / "evil.pt")  # a PyTorch file, but weights_only refuses arbitrary objects
    torch.save({"weights": torch.zeros(1)}, tmp_path / "plain.pt")
    with pytest.raises(UserError, match="not an anomalyseg checkpoint"):
        ck.load_checkpoint(tmp_path / "plain.pt")


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def _zip(path, names):
    with zipfile.ZipFile(path, "w") as archive:
        for name in names:
            archive.writestr(name, b"x")


@pytest.mark.parametrize("name, write, looks_like", [
    ("empty.pt", lambda p: p.write_bytes(b""), "an empty file"),
    ("text.pt", lambda p: p.write_text("  hello\n  world " + "x" * 60), "text starting 'hello world xxx"),
    ("results.json", lambda p: p.write_text('{"format": "anomalyseg.results/1"}'), "text starting '{\"format"),
    ("photo.pt", lambda p: Image.new("RGB", (4, 4)).save(p, format="PNG"), "a PNG image"),
    ("arr.pt", lambda p: p.write_bytes(_npy(np.zeros(3))), "a NumPy .npy array"),
    ("pickled.pt", lambda p: p.write_bytes(pickle.dumps({"model": 1}, protocol=4)), "a Python pickle not written"),
    ("archive.pt", lambda p: _zip(p, ["weights/params.bin"]), "a ZIP archive without PyTorch data"),
    ("noise.pt", lambda p: p.write_bytes(b"\x00\x01\xfe\xff" * 64), "binary data of an unknown format"),
])
def test_non_pytorch_file_says_what_it_got(tmp_path, name, write, looks_like):
    """One line: '<path> is not a PyTorch checkpoint (<what the file looks like>; expected ...)'."""
    path = tmp_path / name
    write(path)
    assert not is_torch_file(path)
    with pytest.raises(UserError) as info:
        ck.load_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"{path} is not a PyTorch checkpoint ({looks_like}"), message
    assert "\n" not in message and message.endswith("expected a file written by torch.save)")


def test_both_torch_save_formats_are_recognised(tmp_path):
    """The zip format and the legacy one load; a truncated zip checkpoint is 'cannot read', not 'not PyTorch'."""
    payload = {"model": {"w": torch.arange(3.0)}}
    torch.save(payload, tmp_path / "zip.pt")
    torch.save(payload, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    for name in ("zip.pt", "legacy.pt"):
        assert is_torch_file(tmp_path / name)
        assert torch.equal(ck.load_checkpoint(tmp_path / name)["model"]["w"], payload["model"]["w"])
    data = (tmp_path / "zip.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"cannot read checkpoint .*cut\.pt: "):
        ck.load_checkpoint(tmp_path / "cut.pt")
    bad_zip = tmp_path / "badzip.pt"  # a torch-style archive whose pickle is garbage
    _zip(bad_zip, ["badzip/data.pkl", "badzip/version"])
    assert is_torch_file(bad_zip)
    with pytest.raises(UserError, match="cannot read checkpoint"):
        ck.load_checkpoint(bad_zip)


def test_class_count_and_architecture_mismatch():
    state = build(13).state_dict()
    with pytest.raises(UserError, match="trained for 13 classes, the model has 19"):
        ck.load_model_state(build(19), state)
    with pytest.raises(UserError, match="missing key"):
        ck.load_model_state(torch.nn.Sequential(torch.nn.Conv2d(3, 13, 1)), state)
    with pytest.raises(UserError, match="predicts 13 classes but the dataset has 19"):
        ck.check_compatible({"num_classes": 13, "model_name": "tiny"}, num_classes=19)
    with pytest.raises(UserError, match="holds a 'tiny' model, not 'deeplabv3_resnet50'"):
        ck.check_compatible({"num_classes": 13, "model_name": "tiny"}, model_name="deeplabv3_resnet50")


def test_checkpoints_with_and_without_aux_head_load():
    with_aux, without = build(13, aux=True), build(13, aux=False)
    assert any(k.startswith("aux_head.") for k in with_aux.state_dict())
    ck.load_model_state(without, with_aux.state_dict())  # training checkpoint -> inference model
    ck.load_model_state(build(13, aux=True), without.state_dict())  # aux-less checkpoint -> aux model
    x = torch.randn(1, 3, 8, 8)
    assert torch.equal(with_aux.eval()(x).logits, without.eval()(x).logits)


def test_load_model_rebuilds_eval_model(tmp_path):
    cfg = Config()
    cfg.model.name = "tiny"
    cfg.model.options = {"width": 4}
    model = build(13, width=4)
    ck.save_checkpoint(tmp_path / "best.pt", {"format": ck.FORMAT, "model": model.state_dict(), "num_classes": 13,
                                             "model_name": cfg.model.name, "config": config_to_dict(cfg)})
    loaded = load_model(tmp_path / "best.pt", "cpu", class_names=[f"c{i}" for i in range(13)])
    rebuilt, meta = loaded.model, loaded.checkpoint
    assert not rebuilt.training and rebuilt.aux_head is None
    x = torch.randn(2, 3, 6, 6)
    assert torch.equal(rebuilt(x).logits, model.eval()(x).logits)
    assert meta["model_name"] == "tiny"
    with pytest.raises(UserError, match="predicts 13 classes"):
        load_model(tmp_path / "best.pt", class_names=[f"c{i}" for i in range(20)])
