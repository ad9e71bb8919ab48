"""A model whose output holds NaN: evaluate, fit-scorers and visualize stop with one line that names the model's
logits (not a scorer), before anything is written."""

from __future__ import annotations

import pytest
import torch
from tests.engine.test_evaluate import make_checkpoint, make_tree

from anomalyseg.checkpoints.io import load_checkpoint, save_checkpoint
from anomalyseg.cli import main
from anomalyseg.engine.tta import TTA, forward
from anomalyseg.errors import UserError
from anomalyseg.models.outputs import SegOutput


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("nan")
    tree = make_tree(base / "sh")
    ckpt = load_checkpoint(make_checkpoint(base / "good.pt"))
    first = next(k for k, v in ckpt["model"].items() if k.endswith("weight") and v.dim() == 4)
    ckpt["model"][first][0, 0, 0, 0] = float("nan")  # one NaN weight: NaN logits downstream
    return tree, save_checkpoint(base / "nan.pt", ckpt)


@pytest.mark.parametrize("command, extra", [
    ("evaluate", ["--scorers", "max_logit", "--out", "{tmp}/r.json"]),
    ("fit-scorers", ["--scorers", "sml"]),
    ("visualize", ["--scorer", "max_logit", "--num-samples", "1", "--out", "{tmp}/panels"]),
])
def test_nan_logits_are_one_line_naming_the_model(setup, tmp_path, capsys, command, extra):
    tree, ckpt = setup
    extra = [e.replace("{tmp}", str(tmp_path)) for e in extra]
    capsys.readouterr()
    code = main([command, "--checkpoint", str(ckpt), "--data-root", str(tree), "--device", "cpu",
                 *(["--workers", "0", "--no-progress"] if command != "visualize" else []), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "the model's logits contain" in err[0] and "non-finite" in err[0] and "scorer before" not in err[0]
    assert [p.name for p in tmp_path.iterdir()] in ([], ["cache"])  # no results, no panels (a label-scan cache)
    assert not ckpt.with_name("nan.scorers.pt").exists()  # no fitted states


def test_forward_checks_every_tta_view():
    class Bad(torch.nn.Module):
        def forward(self, x, return_features=False):
            logits = torch.zeros(x.shape[0], 2, *x.shape[-2:])
            if x.shape[-1] != 8:  # only the rescaled view is broken
                logits[..., 0, 0] = float("inf")
            return SegOutput(logits)

    images = torch.zeros(1, 3, 8, 8)
    assert forward(Bad(), images).logits.isfinite().all()
    with pytest.raises(UserError, match="the model's logits contain 2 non-finite"):
        forward(Bad(), images, tta=TTA.parse("scales=1.0,0.5"))
