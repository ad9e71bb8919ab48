"""``anomalyseg export``: one ONNX graph (uint8 image -> logits + one score per scorer) that onnxruntime runs to
within 1e-4 of the library's own PyTorch path, fitted states baked in, any batch size; bad input in one line.
The real ENet on real road photos when ``../shared`` is there."""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.conftest import shared_path
from tests.export.helpers import fit_states, normalise, tiny_checkpoint

from anomalyseg import cli
from anomalyseg.checkpoints.io import FORMAT, save_checkpoint
from anomalyseg.checkpoints.reload import load_model
from anomalyseg.errors import UserError
from anomalyseg.models.outputs import SegOutput
from anomalyseg.scoring import register_scorer, scorers_from_spec
from anomalyseg.scoring.base import Scorer
from anomalyseg.scoring.registry import SCORERS
from anomalyseg.workflows.export import export_onnx, onnx_session

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

SIZE = (32, 48)
#: Every built-in scorer but void (the tiny net has no void channel); the fitted ones read the states file.
ALL = "max_logit,msp,energy:temperature=2,entropy,rba,gen,sml,sml_full,heat,mahalanobis"


def reference(checkpoint: Path, spec: str, images: np.ndarray) -> list[np.ndarray]:
    """What ``evaluate`` computes: the model on ImageNet-normalised input, each scorer on its default (CPU:
    numpy where it has one) path, fitted states loaded from the checkpoint's states file."""
    from anomalyseg.checkpoints.scorer_states import default_states_path, load_fitted

    loaded = load_model(checkpoint)
    made = scorers_from_spec(spec, void_index=loaded.contract.void_index)
    load_fitted(made, default_states_path(loaded.path), loaded.sha256)
    with torch.no_grad():
        out = loaded.model(normalise(torch.from_numpy(images)), return_features=True)
    return [out.logits.numpy(), *(s.score(SegOutput(out.logits, features=dict(out.features))).numpy()
                                  for s in made)]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> Path:
    ckpt = tiny_checkpoint(tmp_path_factory.mktemp("export") / "tiny.pt")
    fit_states(ckpt, load_model(ckpt).model, ALL, SIZE)
    return ckpt


@pytest.fixture(scope="module")
def exported(fitted: Path) -> tuple[Path, object]:
    out = fitted.with_name("tiny.onnx")
    return out, export_onnx(fitted, out, scorers=ALL, size=SIZE)


def test_every_scorer_exports_and_matches_the_pytorch_path(fitted, exported):
    out, result = exported
    names = ["logits", *(f"score_{s.name}" for s in scorers_from_spec(ALL))]
    assert result.outputs == names and result.size == SIZE
    assert result.max_abs_diff <= 1e-4 and result.differing == 0.0
    session = onnx_session(out)
    assert [i.name for i in session.get_inputs()] == ["image"]
    assert session.get_inputs()[0].type == "tensor(uint8)"
    assert [o.name for o in session.get_outputs()] == names
    images = np.random.default_rng(5).integers(0, 256, (3, 3, *SIZE), dtype=np.uint8)  # batch 3: N is free
    got = session.run(None, {"image": images})
    want = reference(fitted, ALL, images)
    for name, g, w in zip(names, got, want):
        assert g.shape == w.shape, name
        assert np.abs(g - w).max() <= 1e-4, (name, float(np.abs(g - w).max()))


def test_fixed_batch_and_cli_line(fitted, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert cli.main(["export", "--checkpoint", str(fitted), "--scorers", "max_logit,mahalanobis", "--size",
                     f"{SIZE[0]}x{SIZE[1]}", "--out", str(out), "--fixed-batch"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"wrote {out}") and "score_mahalanobis" in line and "1x3x32x48" in line
    shape = onnx_session(out).get_inputs()[0].shape
    assert shape == [1, 3, *SIZE]


def _error(argv: list[str], capsys) -> str:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_bad_inputs_one_line(fitted, exported, tmp_path, capsys):
    out, _ = exported
    base = ["export", "--checkpoint", str(fitted), "--size", "32x48"]
    before = out.stat().st_mtime_ns
    assert "already exists" in _error([*base, "--scorers", "max_logit", "--out", str(out)], capsys)
    assert out.stat().st_mtime_ns == before
    assert "unknown scorer 'nope'" in _error([*base, "--scorers", "max_logit,nope", "--out", str(tmp_path / "a.onnx")],
                                            capsys)
    no_size = ["export", "--checkpoint", str(fitted), "--scorers", "max_logit", "--out", str(tmp_path / "b.onnx")]
    assert "--size" in _error(no_size, capsys)
    unfitted = tiny_checkpoint(tmp_path / "unfitted.pt")
    assert "fit-scorers" in _error(["export", "--checkpoint", str(unfitted), "--size", "32x48", "--scorers",
                                    "mahalanobis", "--out", str(tmp_path / "c.onnx")], capsys)
    assert not any(tmp_path.glob("*.onnx")) and not any(tmp_path.glob(".*tmp"))


class _NumpyOnly(Scorer):
    """A user scorer that leaves torch for numpy: it cannot be traced."""

    kind = "numpy_only"

    def __init__(self, name: str | None = None) -> None:
        super().__init__(name=name)

    def _score(self, output: SegOutput) -> torch.Tensor:
        return torch.from_numpy(-output.logits.detach().numpy().max(1))


def test_unexportable_scorer_named_in_one_line(fitted, tmp_path):
    register_scorer("numpy_only", _NumpyOnly)
    try:
        with pytest.raises(UserError, match=r"^scorer\(s\) numpy_only cannot be exported to ONNX"):
            export_onnx(fitted, tmp_path / "x.onnx", scorers="max_logit,numpy_only", size=SIZE)
    finally:
        SCORERS.pop("numpy_only")
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_deeplabv3plus_resnet18_exports(tmp_path):
    """A real architecture of the registry (random weights, offline) at an odd size (padding inside)."""
    from anomalyseg.models import build_model

    torch.manual_seed(0)
    model = build_model("deeplabv3plus_resnet18", 13, pretrained=False, aux=False).eval()
    ckpt = save_checkpoint(tmp_path / "r18.pt", {
        "format": FORMAT, "model_name": "deeplabv3plus_resnet18", "num_classes": 13, "model": model.state_dict(),
        "config": {"model": {"name": "deeplabv3plus_resnet18", "aux": False}},
        "input_contract": {"size": [60, 100], "class_names": [f"c{i}" for i in range(13)]}})
    result = export_onnx(ckpt, tmp_path / "r18.onnx", scorers="max_logit,energy,rba,gen")
    assert result.size == (60, 100) and result.max_abs_diff <= 1e-4
    images = np.random.default_rng(2).integers(0, 256, (2, 3, 60, 100), dtype=np.uint8)
    got = onnx_session(tmp_path / "r18.onnx").run(None, {"image": images})
    for g, w in zip(got, reference(ckpt, "max_logit,energy,rba,gen", images)):
        assert np.abs(g - w).max() <= 1e-4


@pytest.mark.shared
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:TF32 acceleration:UserWarning")
def test_real_enet_on_real_photos(tmp_path):
    """The imported ENet at its contract size on road-anomaly photos. Its max-unpooling reuses max-pool indices,
    so where two pooled values are within float32 rounding the value lands on another pixel: PyTorch with
    another convolution kernel (oneDNN off) differs from itself the same way. Scores agree to 1e-4 on all but
    a small fraction of pixels, and that fraction is no larger than PyTorch's own."""
    from PIL import Image

    from anomalyseg.checkpoints.foreign import import_checkpoint

    weights = shared_path("models", "enet_cityscapes_void20.pth")
    photos = sorted(glob.glob(str(shared_path("data", "road_anomaly") / "*" / "images" / "*")))[:3]
    ckpt = tmp_path / "enet.pt"
    import_checkpoint(weights, "enet", "size=512x1024,norm=none,void=19,classes=cityscapes", out=ckpt)
    spec = "max_logit:known_classes=19,energy:known_classes=19,msp:known_classes=19,void"
    result = export_onnx(ckpt, tmp_path / "enet.onnx", scorers=spec)
    assert result.size == (512, 1024) and result.differing < 0.005
    session = onnx_session(tmp_path / "enet.onnx")
    loaded = load_model(ckpt)
    for photo in photos:
        image = np.asarray(Image.open(photo).convert("RGB").resize((1024, 512), Image.BILINEAR))
        batch = np.ascontiguousarray(image.transpose(2, 0, 1)[None])
        got = session.run(None, {"image": batch})
        want = reference(ckpt, spec, batch)
        with torch.no_grad(), torch.backends.mkldnn.flags(enabled=False):
            own = loaded.model(normalise(torch.from_numpy(batch))).logits.numpy()
        own_frac = float((np.abs(own - want[0]) > 1e-4).mean())
        for g, w in zip(got, want):
            frac = float((np.abs(g - w) > 1e-4).mean())
            assert frac < max(0.005, 2 * own_frac), (photo, frac, own_frac)
        assert (got[0].argmax(1) == want[0].argmax(1)).mean() > 0.9999
