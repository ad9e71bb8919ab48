"""A checkpoint or run folder cannot name code to run.

The attacker's files load cleanly with ``torch.load(weights_only=True)``: a real tiny checkpoint (trained here)
whose ``model_name`` and ``config.model.name`` were rewritten to a ``module:attr`` string. Two payloads: a
module written into a folder on ``sys.path`` that leaves marker files when imported or called, and
``logging:basicConfig`` with ``filename=<a user's file>, filemode=w, force=true``, which would empty that file.
``evaluate``, ``fit-scorers``, ``visualize`` and ``train --resume`` must refuse with one line (exit 2) naming
the unknown model, leave no marker, the user's file intact and the module unimported. ``import-checkpoint``
never reads a model name from the foreign file: its ``--arch`` is a closed choice, and a config the foreign
file carries is ignored, not copied into the imported checkpoint.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml
from tests.engine.helpers import tiny_overrides

from anomalyseg import cli
from anomalyseg.data.synthetic import write_synthetic
from anomalyseg.models import build_model

USER_TEXT = "precious user data\n"
COMMANDS = ("evaluate", "fit-scorers", "visualize", "train --resume")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A tiny synthetic tree and a real one-step run of the test suite's tiny model on it."""
    base = tmp_path_factory.mktemp("security")
    tree = write_synthetic(base / "sh", train=4, val=2, test=2, size=(64, 48), seed=5)
    (base / "base.yaml").write_text("train:\n  device: cpu\n", encoding="utf-8")
    argv = ["train", str(base / "base.yaml"), *tiny_overrides(tree, base / "runs", "good", **{
        "train.epochs": 1, "train.num_vis_images": 0, "train.checkpoint_every_steps": 0,
        "model.options": "{width: 4}"})]
    assert cli.main(argv) == 0
    return {"tree": tree, "run": base / "runs" / "good"}


class Attack:
    """The attacker's payload, the traces it would leave, and the files it is planted in."""

    def __init__(self, kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.user_file = tmp_path / "user_notes.txt"
        self.user_file.write_text(USER_TEXT, encoding="utf-8")
        self.imported, self.called = tmp_path / "marker_imported", tmp_path / "marker_called"
        self.module = f"evil_{kind}_{tmp_path.name}".replace("-", "_").replace("[", "_").replace("]", "_")
        if kind == "module":
            code = (f"from pathlib import Path\nPath({str(self.imported)!r}).write_text('imported')\n"
                    f"def make(*args, **kwargs):\n    Path({str(self.called)!r}).write_text('called')\n"
                    f"    raise SystemExit(0)\n")
            (tmp_path / f"{self.module}.py").write_text(code, encoding="utf-8")
            monkeypatch.syspath_prepend(str(tmp_path))
            self.name, self.options = f"{self.module}:make", {}
        else:
            self.name = "logging:basicConfig"
            self.options = {"filename": str(self.user_file), "filemode": "w", "force": True}

    def model_section(self, model: dict) -> dict:
        return {**model, "name": self.name, "options": dict(self.options)}

    def checkpoint(self, source: Path, out: Path) -> Path:
        """``source`` with the model name (and options) rewritten; still a weights_only-clean file."""
        ckpt = torch.load(source, map_location="cpu", weights_only=True)
        ckpt["model_name"] = self.name
        ckpt["config"]["model"] = self.model_section(ckpt["config"]["model"])
        out.parent.mkdir(parents=True, exist_ok=True)
        torch.save(ckpt, out)
        assert torch.load(out, weights_only=True)["config"]["model"]["name"] == self.name
        return out

    def run_dir(self, source: Path, out: Path) -> Path:
        """A copy of the run folder whose config.yaml and checkpoints/last.pt name the payload."""
        shutil.copytree(source, out)
        for stale in (out / "checkpoints").glob("*.pt"):
            if stale.name != "last.pt":
                stale.unlink()
        config = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))
        config["model"] = self.model_section(config["model"])
        (out / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
        self.checkpoint(out / "checkpoints" / "last.pt", out / "checkpoints" / "last.pt")
        return out

    def assert_no_trace(self) -> None:
        assert not self.imported.exists() and not self.called.exists()
        assert self.module not in sys.modules
        assert self.user_file.read_text(encoding="utf-8") == USER_TEXT


def _argv(command: str, target: Path, tree: Path, out: Path) -> list[str]:
    common = ["--data-root", str(tree), "--device", "cpu"]
    return {
        "evaluate": ["evaluate", "--checkpoint", str(target), *common, "--scorers", "max_logit", "--limit", "1",
                     "--workers", "0", "--no-progress", "--out", str(out / "results.json")],
        "fit-scorers": ["fit-scorers", "--checkpoint", str(target), *common, "--scorers", "sml", "--limit", "1",
                        "--workers", "0", "--no-progress"],
        "visualize": ["visualize", "--checkpoint", str(target), *common, "--scorer", "max_logit",
                      "--num-samples", "1", "--out", str(out / "figures")],
        "train --resume": ["train", "--resume", str(target), "--device", "cpu"],
    }[command]


@pytest.mark.parametrize("kind", ["module", "basicConfig"])
@pytest.mark.parametrize("command", COMMANDS)
def test_checkpoint_naming_code_is_refused(command, kind, trained, tmp_path, monkeypatch, capsys):
    attack = Attack(kind, tmp_path, monkeypatch)
    out = tmp_path / "out"
    if command == "train --resume":
        target = attack.run_dir(trained["run"], tmp_path / "evil_run")
        before = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    else:
        target = attack.checkpoint(trained["run"] / "checkpoints" / "last.pt", tmp_path / "evil.pt")
    capsys.readouterr()

    code = cli.main(_argv(command, target, trained["tree"], out))

    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith(f"anomalyseg: error: unknown model {attack.name!r}; known: deeplabv3_resnet50, "), err
    attack.assert_no_trace()
    assert not out.exists() and not (tmp_path / "evil.scorers.pt").exists()
    if command == "train --resume":  # nothing in the run folder was rewritten
        assert {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()} == before


def test_a_good_checkpoint_still_works(trained, tmp_path, capsys):
    """The same commands on the untouched checkpoint succeed (the refusals above are about the name)."""
    ckpt = trained["run"] / "checkpoints" / "last.pt"
    assert cli.main(_argv("evaluate", ckpt, trained["tree"], tmp_path)) == 0
    assert (tmp_path / "results.json").is_file()


@pytest.mark.parametrize("kind", ["module", "basicConfig"])
def test_import_checkpoint_never_takes_the_name_from_the_foreign_file(kind, tmp_path, monkeypatch, capsys):
    attack = Attack(kind, tmp_path, monkeypatch)
    torch.manual_seed(0)
    weights = build_model("enet", 13).state_dict()
    foreign = tmp_path / "foreign.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in weights.items()}, "arch": attack.name,
                "model_name": attack.name, "config": {"model": attack.model_section({})}}, foreign)
    assert torch.load(foreign, weights_only=True)["config"]["model"]["name"] == attack.name

    with pytest.raises(SystemExit) as exc:  # the architecture is a closed choice on the command line
        cli.main(["import-checkpoint", str(foreign), "--arch", attack.name, "--contract", "norm=none",
                  "--out", str(tmp_path / "a.pt")])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err.strip().splitlines()[-1]
    attack.assert_no_trace()
    assert not (tmp_path / "a.pt").exists()

    out = tmp_path / "imported.pt"
    assert cli.main(["import-checkpoint", str(foreign), "--arch", "enet", "--contract", "norm=none",
                     "--out", str(out)]) == 0
    attack.assert_no_trace()
    imported = torch.load(out, weights_only=True)
    assert imported["model_name"] == "enet" and imported["config"]["model"]["name"] == "enet"
    assert attack.name not in repr({k: v for k, v in imported.items() if k != "model"})
