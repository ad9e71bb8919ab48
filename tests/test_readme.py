"""The README's examples are true: its self-contained Python blocks run (on small random inputs standing in for
the names they leave to the reader), every ``anomalyseg ...`` command line parses with the real parser, and
every file of this repository a command names exists."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch

from anomalyseg.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def _metric_batches() -> list[tuple]:
    """(logits, label, anomaly_score, anomaly_target) batches: 13 classes, label 255 void, targets 1 / 0."""
    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(3):
        logits = torch.randn(2, 13, 12, 16, generator=gen)
        label = torch.randint(0, 13, (2, 12, 16), generator=gen)
        label[:, 0] = 255
        target = (torch.rand(2, 12, 16, generator=gen) < 0.1).long()
        target[:, 1, :2] = 1  # every image holds both anomaly and normal pixels
        score = torch.randn(2, 12, 16, generator=gen) + 2.0 * target
        out.append((logits, label, score, target))
    return out


def _synthetic_root(tmp_path: Path) -> Path:
    from anomalyseg.data.synthetic import write_synthetic

    return write_synthetic(tmp_path / "sh", train=2, val=1, test=1, size=(64, 48), seed=0)


#: Python blocks that run here, by a line that identifies them, with the names they expect from the reader.
RUNNABLE = {
    "official = AnomalyMetrics.streethazards()": lambda tmp: {"batches": _metric_batches()},
    "train = StreetHazards(root": lambda tmp: {"root": _synthetic_root(tmp)},
}
#: Python blocks that need what a test cannot give them quickly, and why.
NOT_RUN = {
    'build_model("deeplabv3plus_resnet50"': "downloads ImageNet weights (pretrained=True)",
    "scorers[2].fit(val_batches)": "needs a model's outputs on a validation split",
    'register_model("my_net"': "names the reader's own factory",
    "register_dataset(DatasetSpec(": "names the reader's own dataset class",
}


def _key(block: str, table: dict) -> str | None:
    return next((k for k in table if k in block), None)


def test_every_python_block_is_run_or_explained():
    for block in blocks("python"):
        assert _key(block, RUNNABLE) or _key(block, NOT_RUN), f"README python block neither run nor listed:\n{block}"


@pytest.mark.parametrize("key", list(RUNNABLE))
def test_python_block_runs(key, tmp_path, capsys):
    (block,) = [b for b in blocks("python") if key in b]
    namespace = {"__name__": "readme_example", **RUNNABLE[key](tmp_path)}
    exec(compile(block, f"README.md ({key})", "exec"), namespace)  # the README's own example


def test_metrics_block_values():
    """The example's accumulators give sane numbers on separable scores, and 255 is refused by the official
    protocol (every pixel counted) but accepted by the pooled one, as the comments say."""
    (block,) = [b for b in blocks("python") if "official = AnomalyMetrics.streethazards()" in b]
    namespace = {"batches": _metric_batches()}
    exec(compile(block.replace("print(", "_ = ("), "README.md", "exec"), namespace)
    assert 0.8 < namespace["official"].compute()["auroc"] <= 1
    assert 0.8 < namespace["pooled"].compute()["auroc"] <= 1
    assert np.isfinite(namespace["seg"].compute()["miou"])
    from anomalyseg.metrics import AnomalyMetrics

    score, target = torch.randn(1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, 0] = 1
    target[0, 1, 0] = 255
    with pytest.raises(ValueError, match="ignore_index=None"):
        AnomalyMetrics.streethazards().update(score, target)
    AnomalyMetrics("pooled", fpr_rule="first").update(score, target)
    AnomalyMetrics.streethazards(ignore_index=255).update(score, target)


# ---- command lines --------------------------------------------------------------------------------------
def command_lines() -> list[list[str]]:
    """Every ``anomalyseg ...`` invocation in the README's bash blocks, as argv after the program name."""
    found = []
    for block in blocks("bash"):
        text = re.sub(r"\\\n\s*", " ", block)  # join continuation lines
        for line in text.splitlines():
            line = re.sub(r"(^|\s)#.*$", "", line)  # comments
            for part in line.split("&&"):
                words = shlex.split(part)
                for i, word in enumerate(words):
                    program = word == "anomalyseg" or word.endswith("/anomalyseg")
                    if program and (i == 0 or words[i - 1] == "-m"):
                        found.append(words[i + 1:])
                        break
    return found


def _repo_paths(argv: list[str]) -> list[str]:
    """Tokens naming a file of this repository: under one of its top-level folders, or a config file that is
    not a placeholder (CONFIG.yaml, BASE.yaml)."""
    tops = {p.name for p in REPO.iterdir() if p.is_dir() and not p.name.startswith(".")}
    out = []
    for token in argv:
        value = token.split("=", 1)[1] if token.startswith("-") and "=" in token else token
        if "=" in value or value.startswith(("-", "~", "/", "..")):
            continue
        placeholder = Path(value).stem.isupper()
        if value.split("/")[0] in tops or (value.endswith((".yaml", ".yml")) and not placeholder):
            out.append(value)
    return out


def test_readme_names_commands():
    commands = command_lines()
    assert len(commands) >= 20
    assert ["sweep", "configs/sweeps/energy.yaml", "--grid", "scorer.energy.temperature=0.5,1,2,4"] in commands


@pytest.mark.parametrize("argv", command_lines(), ids=lambda a: " ".join(a)[:60])
def test_readme_command_parses_and_its_repo_files_exist(argv, capsys):
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help exits 0 after printing; anything else is a parse error
        assert exc.code == 0 and "--help" in argv, capsys.readouterr().err
    else:
        assert getattr(args, "func", None) is not None, argv  # a command, not just the group
    missing = [p for p in _repo_paths(argv) if not (REPO / p).exists()]
    assert not missing, f"README command names files that do not exist in the repository: {missing}"
