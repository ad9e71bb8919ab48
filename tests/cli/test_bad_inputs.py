"""Every bad input ends with ONE readable line on stderr and a non-zero exit, no traceback (``--debug`` shows
it); ``anomalyseg --help`` lists every subcommand with one line each and every subcommand's help has examples.

All through ``anomalyseg.cli.main`` in-process, plus one subprocess check that ``python -m anomalyseg`` and the
console script behave the same.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from anomalyseg import cli
from anomalyseg.checkpoints.io import FORMAT, save_checkpoint
from anomalyseg.data.info import STREETHAZARDS
from anomalyseg.data.synthetic import write_synthetic
from anomalyseg.errors import UserError

TINY = "tiny"


class _Evil:
    """A pickle that would run a shell command when loaded without weights_only."""

    def __reduce__(self):
        return (os.system, ("echo pwned",))
  # entry point of the fake distribution in tests/plugins
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _with_demo(monkeypatch, tmp_path):
    """``demo`` registered (whether or not cli.py lists it yet); label-scan cache in the test's folder."""
    monkeypatch.setenv("ANOMALYSEG_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A tiny synthetic tree, a folder that is not StreetHazards, bad configs, good and mismatched checkpoints."""
    base = tmp_path_factory.mktemp("bad_inputs")
    tree = write_synthetic(base / "sh", train=4, val=2, test=2, size=(64, 48), seed=1)
    (base / "not_sh" / "images").mkdir(parents=True)
    (base / "not_sh" / "images" / "a.png").write_bytes(b"not a png")
    (base / "unknown_key.yaml").write_text("data:\n  batch_sise: 4\n", encoding="utf-8")
    (base / "wrong_type.yaml").write_text("train:\n  epochs: many\n", encoding="utf-8")
    (base / "not_yaml.yaml").write_text("data: [unclosed\n", encoding="utf-8")
    (base / "garbage.pt").write_bytes(b"this is not a checkpoint")
    (base / "sweep.yaml").write_text(f"train:\n  device: cpu\nsweep:\n  out: {base / 'sweep'}\n", encoding="utf-8")
    (base / "results.json").write_text('{"not": "results"}', encoding="utf-8")
    (base / "a_file").write_text("a regular file: paths under it cannot be written, even as root\n", encoding="utf-8")
    from anomalyseg.report.results import RESULTS_FORMAT

    protocols = {"pooled": {"fpr_rule": "first"}}
    for name, scorers in (("no_scorers", {}), ("broken_entry", {"energy": "broken"}),
                          ("broken_metrics", {"energy": {"metrics": None}})):
        (base / name).mkdir()
        (base / name / "r.json").write_text(json.dumps({"format": RESULTS_FORMAT, "protocols": protocols,
                                                        "segmentation": {"miou": 0.5}, "scorers": scorers}))
    torch.save({"model": _Evil()}, base / "evil.pt")
    from tests.engine.tiny_model import build

    def ckpt(name: str, num_classes: int, width: int, config_width: int) -> Path:
        torch.manual_seed(0)
        model = build(num_classes, aux=False, width=width)
        config = {"model": {"name": TINY, "aux": False, "options": {"width": config_width}}}
        return save_checkpoint(base / name, {"format": FORMAT, "model_name": TINY, "num_classes": num_classes,
                                             "class_names": list(STREETHAZARDS.class_names)[:num_classes],
                                             "model": model.state_dict(), "config": config})

    return {"base": base, "tree": tree, "good": ckpt("good.pt", 13, 6, 6),
            "classes19": ckpt("classes19.pt", 19, 6, 6), "arch": ckpt("arch.pt", 13, 6, 8)}


def _cases(f: dict[str, Path]) -> dict[str, tuple[list[str], str]]:
    """case -> (argv, a phrase the one-line message must contain)."""
    b, tree, good = f["base"], str(f["tree"]), str(f["good"])
    cfg = str(REPO_ROOT / "configs" / "demo" / "synthetic_cpu.yaml")
    ev = ["--data-root", tree, "--workers", "0", "--no-progress"]
    run = ["data.workers=0", "data.batch_size=2", f"out_dir={b / 'runs'}", "train.progress=false"]
    return {
        # missing paths
        "check missing root": (["data", "check", "--root", str(b / "nowhere")], "not found"),
        "train missing config": (["train", str(b / "nowhere.yaml")], "config file not found"),
        "train missing data root": (["train", cfg, f"data.root={b / 'nowhere'}", *run], "not found"),
        "resume missing run": (["train", "--resume", str(b / "nowhere")], "no config.yaml"),
        "evaluate missing checkpoint": (["evaluate", "--checkpoint", str(b / "no.pt"), *ev, "--out",
                                         str(b / "r1.json")], "checkpoint not found"),
        "evaluate missing data root": (["evaluate", "--checkpoint", good, "--data-root", str(b / "nowhere"),
                                        "--out", str(b / "r2.json")], "not found"),
        "fit missing checkpoint": (["fit-scorers", "--checkpoint", str(b / "no.pt"), *ev], "checkpoint not found"),
        "visualize missing checkpoint": (["visualize", "--checkpoint", str(b / "no.pt"), "--data-root", tree,
                                          "--out", str(b / "v1")], "checkpoint not found"),
        "report missing results": (["report", str(b / "none.json"), "--out", str(b / "rep1")], "not found"),
        "report on a checkpoint": (["report", str(b / "garbage.pt"), "--out", str(b / "rep3")],
                                   "report reads results JSON files"),
        "sweep missing base": (["sweep", str(b / "nowhere.yaml"), "--grid", "optim.lr=0.1,0.01"], "not found"),
        "demo missing config": (["demo", "--config", str(b / "nowhere.yaml"), "--out", str(b / "d1")],
                                "config file not found"),
        # wrong layout / wrong file
        "check wrong layout": (["data", "check", "--root", str(b / "not_sh")], "no StreetHazards"),
        "train wrong layout": (["train", cfg, f"data.root={b / 'not_sh'}", *run], "no StreetHazards train split"),
        "evaluate wrong layout": (["evaluate", "--checkpoint", good, "--data-root", str(b / "not_sh"), "--out",
                                   str(b / "r3.json")], "no StreetHazards test split"),
        "garbage checkpoint": (["evaluate", "--checkpoint", str(b / "garbage.pt"), *ev, "--out",
                                str(b / "r4.json")], f"{b / 'garbage.pt'} is not a PyTorch checkpoint"),
        "report not results": (["report", str(b / "results.json"), "--out", str(b / "rep2")],
                               "not an anomalyseg results file"),
        "config not yaml": (["train", str(b / "not_yaml.yaml")], "cannot read config"),
        # unknown config key / wrong type
        "unknown key in file": (["train", str(b / "unknown_key.yaml")], "unknown config key 'data.batch_sise'"),
        "unknown key override": (["train", cfg, "optim.learning_rate=0.1"], "unknown config key"),
        "wrong type in file": (["train", str(b / "wrong_type.yaml")], "'train.epochs': expected int"),
        "wrong type override": (["train", cfg, "data.hflip=sometimes"], "'data.hflip': expected true/false"),
        "wrong choice override": (["train", cfg, "optim.name=rmsprop"], "'optim.name': expected one of"),
        "demo unknown key": (["demo", "--out", str(b / "d2"), "data.trian=10"], "unknown config key 'data.trian'"),
        "demo wrong type": (["demo", "--out", str(b / "d3"), "data.size=big"], "'data.size': expected a list"),
        "demo stray argument": (["demo", "--out", str(b / "d4"), "fast"], "unexpected argument 'fast'"),
        # unknown names
        "unknown model": (["train", cfg, f"data.root={tree}", "model.name=resnet9000", *run], "unknown model"),
        "unknown scorer (evaluate)": (["evaluate", "--checkpoint", good, *ev, "--scorers", "max_logit,maxlogit",
                                       "--out", str(b / "r5.json")], "unknown scorer 'maxlogit'"),
        "unknown scorer (fit)": (["fit-scorers", "--checkpoint", good, *ev, "--scorers", "smll"],
                                 "unknown scorer 'smll'"),
        "unknown scorer (visualize)": (["visualize", "--checkpoint", good, "--data-root", tree, "--scorer", "nope",
                                        "--out", str(b / "v2")], "unknown scorer 'nope'"),
        "unknown class to ignore": (["evaluate", "--checkpoint", good, *ev, "--ignore", "trees", "--out",
                                     str(b / "r6.json")], "not a known class"),
        # checkpoints that do not match
        "checkpoint with 19 classes": (["evaluate", "--checkpoint", str(f["classes19"]), *ev, "--out",
                                        str(b / "r7.json")], "19 classes"),
        "checkpoint of another architecture": (["evaluate", "--checkpoint", str(f["arch"]), *ev, "--out",
                                                str(b / "r8.json")], str(f["arch"])),
        "init-from with resume": (["train", cfg, "--resume", str(b / "nowhere"), "--init-from", good],
                                  "--resume continues a run with its own: give one of them"),
        "init-from missing": (["train", cfg, f"data.root={tree}", *run, "--init-from", str(b / "no.pt")],
                              "model.init_from: checkpoint not found"),
        "init-from 19 classes": (["train", cfg, f"data.root={tree}", f"model.name={TINY}", "model.options={width: 6}",
                                  *run, "--init-from", str(f["classes19"])], "19 classes"),
        "init-from other architecture": (["train", cfg, f"data.root={tree}", f"model.name={TINY}",
                                          "model.options={width: 8}", *run, "--init-from", good], "shape mismatch"),
        "fitting on the test split": (["fit-scorers", "--checkpoint", good, *ev, "--split", "test"],
                                      "never used for fitting"),
        # numbers out of range: one check per config field, the bound in the message
        "lr nan": (["train", cfg, "optim.lr=nan"], "'optim.lr': expected a finite number, got 'nan'"),
        "lr negative": (["train", cfg, "optim.lr=-1"], "'optim.lr': must be > 0 and <= 10, got -1.0"),
        "lr inf": (["train", cfg, "optim.lr=.inf"], "'optim.lr': expected a finite number, got inf"),
        "grad clip nan": (["train", cfg, "optim.grad_clip_norm=nan"], "'optim.grad_clip_norm': expected a finite"),
        "crop zero": (["train", cfg, "data.crop_size=[0,0]"], "'data.crop_size': each value must be >= 1 and <= 8192"),
        "crop negative": (["train", cfg, "data.crop_size=[-5,10]"], "'data.crop_size': each value must be >= 1"),
        "crop huge": (["train", cfg, "data.crop_size=[100000,100000]"], "<= 8192, got [100000, 100000]"),
        "scale negative": (["train", cfg, "data.scale_range=[-1,0]"], "'data.scale_range': each value must be > 0"),
        "scale reversed": (["train", cfg, "data.scale_range=[2,0.5]"], "[low, high] with low <= high"),
        "val size zero": (["train", cfg, "data.val_size=[0,0]"], "'data.val_size': each value must be >= 1"),
        "workers negative (config)": (["train", cfg, "data.workers=-1"], "'data.workers': must be >= 0 and <= 256"),
        "momentum 2": (["train", cfg, "optim.momentum=2"], "'optim.momentum': must be >= 0 and < 1"),
        "betas 1.5": (["train", cfg, "optim.betas=[1.5,0.9]"], "'optim.betas': each value must be >= 0 and < 1"),
        "seed negative": (["train", cfg, "train.seed=-1"], "'train.seed': must be >= 0"),
        "class weight nan": (["train", cfg, "train.class_weights=[nan,1]"], "'train.class_weights[0]': expected a "
                             "finite number"),
        "demo lr nan": (["demo", "--out", str(b / "d5"), "training.optim.lr=nan"], "'training.optim.lr': expected a "
                        "finite number"),
        "demo size huge": (["demo", "--out", str(b / "d6"), "data.size=[200000,200000]"], "<= 4096"),
        "demo seed negative": (["demo", "--out", str(b / "d7"), "data.seed=-1"], "'data.seed': must be >= 0"),
        "sweep grid lr nan": (["sweep", str(b / "sweep.yaml"), "--grid", "optim.lr=nan,0.01", "--dry-run"],
                              "'optim.lr': expected a finite number"),
        "models with a billion classes": (["models", "list", "--num-classes", "1000000000"],
                                          "--num-classes must be at most 1000"),
        # scorer settings of the wrong type
        "scorer setting not a number": (["evaluate", "--checkpoint", good, *ev, "--scorers", "energy:temperature=abc",
                                         "--out", str(b / "r9.json")],
                                        "scorer 'energy': setting 'temperature' expects a finite number, got 'abc'"),
        "scorer setting nan": (["evaluate", "--checkpoint", good, *ev, "--scorers", "energy:temperature=nan",
                                "--out", str(b / "r10.json")], "setting 'temperature' expects a finite number"),
        "fit setting not a number": (["fit-scorers", "--checkpoint", good, *ev, "--scorers", "heat:smoothing=abc",
                                      "--states", str(b / "s1.pt")], "scorer 'heat': setting 'smoothing' expects a "
                                     "whole number"),
        "fit no scorer": (["fit-scorers", "--checkpoint", good, *ev, "--scorers", "", "--states", str(b / "s2.pt")],
                          "no scorer given"),
        # outputs that cannot be written: one line naming the path, before any work
        "train out_dir under a file": (["train", cfg, f"data.root={tree}", f"out_dir={b / 'a_file' / 'runs'}"],
                                       f"{b / 'a_file'} is a file, not a folder"),
        "synth out under a file": (["data", "synth", "--out", str(b / "a_file" / "s"), "--size", "64x48"],
                                   f"cannot write --out {b / 'a_file' / 's'}"),
        "evaluate out under a file": (["evaluate", "--checkpoint", good, *ev, "--out", str(b / "a_file" / "r.json")],
                                      f"cannot write {b / 'a_file' / 'r.json'}"),
        "evaluate out is a folder": (["evaluate", "--checkpoint", good, *ev, "--out", str(b / "no_scorers")],
                                     "is a folder; give a results file name"),
        "save-scores under a file": (["evaluate", "--checkpoint", good, *ev, "--save-scores", str(b / "a_file" / "s"),
                                      "--out", str(b / "r11.json")], f"cannot write --save-scores {b / 'a_file'}/s"),
        "fit states is a folder": (["fit-scorers", "--checkpoint", good, *ev, "--scorers", "mahalanobis", "--states",
                                    str(b / "no_scorers")], f"--states {b / 'no_scorers'} is a folder, not a file"),
        "fit states under a file": (["fit-scorers", "--checkpoint", good, *ev, "--scorers", "mahalanobis", "--states",
                                     str(b / "a_file" / "st.pt")], f"cannot write --states {b / 'a_file'}/st.pt"),
        "visualize out is a file": (["visualize", "--checkpoint", good, "--data-root", tree, "--out",
                                     str(b / "a_file")], "is a file, not a folder"),
        "visualize out under a file": (["visualize", "--checkpoint", good, "--data-root", tree, "--out",
                                        str(b / "a_file" / "v")], f"cannot write --out {b / 'a_file'}/v"),
        "report out under a file": (["report", str(b / "no_scorers" / "r.json"), "--out", str(b / "a_file" / "rep")],
                                    f"cannot write --out {b / 'a_file'}/rep"),
        "import out under a file": (["import-checkpoint", good, "--arch", "enet", "--contract", "norm=none", "--out",
                                     str(b / "a_file" / "x.pt")], f"cannot write --out {b / 'a_file'}/x.pt"),
        "sweep out under a file": (["sweep", str(b / "sweep.yaml"), "--grid", "optim.lr=0.1,0.01", "--dry-run",
                                    "--out", str(b / "a_file" / "sw")], f"cannot write --out {b / 'a_file'}/sw"),
        "demo out under a file": (["demo", "--out", str(b / "a_file" / "d")], f"{b / 'a_file'}/d"),
        # results that hold nothing to report
        "report without scorers": (["report", str(b / "no_scorers" / "r.json"), "--out", str(b / "rep4")],
                                   "holds no scorer results"),
        "report with a broken scorer": (["report", str(b / "broken_entry" / "r.json"), "--out", str(b / "rep5")],
                                        "the entry of scorer 'energy' is broken"),
        "report with broken metrics": (["report", str(b / "broken_metrics" / "r.json"), "--out", str(b / "rep6")],
                                       "the entry of scorer 'energy' is broken"),
        # a refused pickle keeps its cause, whole
        "pickle that runs a command": (["evaluate", "--checkpoint", str(b / "evil.pt"), *ev, "--out",
                                        str(b / "r12.json")], "GLOBAL posix.system"),
    }


CASES = list(_cases({k: Path(k) for k in ("base", "tree", "good", "classes19", "arch")}))

#: Command lines whose numbers argparse itself refuses (usage, then one line; exit 2), with the phrase of that line.
ARGUMENT_CASES = [
    (["data", "synth", "--out", "x", "--size", "12"], "argument --size: expected WIDTHxHEIGHT"),
    (["data", "synth", "--out", "x", "--size", "200000x200000"], "--size: each side must be at most 4096 pixels"),
    (["data", "synth", "--out", "x", "--seed", "-1"], "--seed: expected a number >= 0"),
    (["data", "synth", "--out", "x", "--workers", "-1"], "--workers: expected a number >= 0 and <= 256"),
    (["data", "check", "--root", ".", "--workers", "100000"], "--workers: expected a number >= 0 and <= 256"),
    (["evaluate", "--checkpoint", "a.pt", "--data-root", ".", "--out", "r.json", "--batch-size", "two"],
     "argument --batch-size: expected a whole number"),
    (["evaluate", "--checkpoint", "a.pt", "--data-root", ".", "--out", "r.json", "--batch-size", "10000000"],
     "--batch-size: expected a number >= 1 and <= 4096"),
    (["evaluate", "--checkpoint", "a.pt", "--data-root", ".", "--out", "r.json", "--size", "100000x100000"],
     "--size: each side must be at most 8192 pixels"),
    (["evaluate", "--checkpoint", "a.pt", "--data-root", ".", "--out", "r.json", "--workers", "-1"],
     "--workers: expected a number >= 0"),
    (["evaluate", "--checkpoint", "a.pt", "--data-root", ".", "--out", "r.json", "--component-threshold", "nan"],
     "--component-threshold: expected a finite number"),
    (["fit-scorers", "--checkpoint", "a.pt", "--data-root", ".", "--workers", "-1"], "--workers: expected a number"),
    (["visualize", "--checkpoint", "a.pt", "--data-root", ".", "--out", "v", "--dpi", "100000"],
     "--dpi: expected a number >= 10 and <= 600"),
    (["visualize", "--checkpoint", "a.pt", "--data-root", ".", "--out", "v", "--dpi", "0"], "--dpi: expected a number"),
    (["visualize", "--checkpoint", "a.pt", "--data-root", ".", "--out", "v", "--size", "100000x100000"],
     "at most 8192 pixels"),
    (["visualize", "--checkpoint", "a.pt", "--data-root", ".", "--out", "v", "--seed", "-1"], "--seed: expected"),
    (["report", "r.json", "--out", "rep", "--max-panels", "-1"], "--max-panels: expected a number >= 0 and <= 1000"),
    (["evaluate", "--checkpoint", "a.pt", "--data-root", "."], "the following arguments are required: --out"),
    (["trian"], "invalid choice: 'trian'"),
]


def _one_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert lines, "nothing on stderr"
    assert "Traceback" not in err
    return lines[-1]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line(case, files, capsys):
    argv, phrase = _cases(files)[case]
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code != 0
    last = _one_line(err)
    assert last.startswith("anomalyseg: error: "), err
    assert phrase in last, last
    # the message is the only thing on stderr apart from log lines of the stages that ran before it
    assert all(ln.startswith(("INFO ", "WARNING ")) for ln in err.strip().splitlines()[:-1]), err


@pytest.mark.parametrize("argv, phrase", ARGUMENT_CASES)
def test_argument_errors_end_with_one_line(argv, phrase, capsys):
    """argparse's own errors: usage, then one error line; exit code 2."""
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert phrase in _one_line(err) and "error:" in _one_line(err)


GARBAGE = ("is not a PyTorch checkpoint (text starting 'this is not a checkpoint'; "
           "expected a file written by torch.save)")


@pytest.mark.parametrize("command", ["evaluate", "fit-scorers", "visualize", "import-checkpoint", "states"])
def test_garbage_checkpoint_says_it_is_not_pytorch(command, files, capsys):
    """A file that is not a PyTorch file at all: exit 2 and one line naming it and what it looks like."""
    b, tree, good, garbage = files["base"], str(files["tree"]), str(files["good"]), files["base"] / "garbage.pt"
    ev = ["--data-root", tree, "--workers", "0", "--no-progress"]
    argv, expected = {
        "evaluate": (["evaluate", "--checkpoint", str(garbage), *ev, "--out", str(b / "g1.json")], GARBAGE),
        "fit-scorers": (["fit-scorers", "--checkpoint", str(garbage), *ev], GARBAGE),
        "visualize": (["visualize", "--checkpoint", str(garbage), "--data-root", tree, "--out", str(b / "g2")],
                      GARBAGE),
        "import-checkpoint": (["import-checkpoint", str(garbage), "--arch", "enet", "--contract", "norm=none",
                               "--out", str(b / "g3.pt")], GARBAGE),
        "states": (["fit-scorers", "--checkpoint", good, *ev, "--states", str(garbage)],
                   GARBAGE.replace("checkpoint (", "scorer-states file (")),
    }[command]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert _one_line(err) == f"anomalyseg: error: {garbage} {expected}", err
    assert not (b / "g3.pt").exists()


def test_debug_shows_the_traceback(files):
    with pytest.raises(UserError, match="config file not found"):
        cli.main(["--debug", "train", str(files["base"] / "nowhere.yaml")])


def _subcommands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, child in action.choices.items():
                yield (*path, name), child, helps.get(name)
                yield from _subcommands(child, (*path, name))


def test_help_lists_every_subcommand_with_examples(capsys):
    parser = cli.build_parser()
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    top = capsys.readouterr().out
    found = list(_subcommands(parser))
    assert {p[0] for p, _, _ in found} >= {"data", "models", "train", "evaluate", "fit-scorers", "visualize",
                                            "report", "sweep", "demo"}
    for path, child, help_text in found:
        assert help_text and "\n" not in help_text, f"{' '.join(path)}: no one-line help"
        assert "examples:" in (child.epilog or ""), f"`anomalyseg {' '.join(path)} --help` has no examples"
        assert f"anomalyseg {' '.join(path)}" in child.epilog, f"{' '.join(path)}: examples do not run it"
        if len(path) == 1:
            assert any(ln.split()[:1] == [path[0]] for ln in top.splitlines()), f"{path[0]} not in --help"


def test_module_and_console_script_behave_the_same(tmp_path):
    """``python -m anomalyseg`` and the installed ``anomalyseg`` script: same exit code, same one line."""
    script = shutil.which("anomalyseg", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                               os.environ.get("PATH", "")]))
    assert script, "the console script `anomalyseg` is not installed beside this Python"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "ANOMALYSEG_CACHE_DIR": str(tmp_path / "cache")}
    argv = ["train", str(tmp_path / "missing.yaml")]
    outs = [subprocess.run(cmd + argv, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
            for cmd in ([sys.executable, "-m", "anomalyseg"], [script])]
    for res in outs:
        assert res.returncode == 2
        assert res.stderr.strip() == f"anomalyseg: error: config file not found: {tmp_path / 'missing.yaml'}"
    assert outs[0].stdout == outs[1].stdout == ""


def test_version(capsys):
    from anomalyseg import __version__

    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"anomalyseg {__version__}"


def test_read_only_outputs_are_one_line(files, tmp_path, capsys):
    """A folder without write permission (the test is meaningless as root, who may write anywhere)."""
    ro = tmp_path / "read_only"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who may write into read-only folders (root)")
        tree, good = str(files["tree"]), str(files["good"])
        for argv in (["data", "synth", "--out", str(ro / "s"), "--size", "64x48"],
                     ["evaluate", "--checkpoint", good, "--data-root", tree, "--workers", "0", "--out",
                      str(ro / "r.json")],
                     ["report", str(files["base"] / "no_scorers" / "r.json"), "--out", str(ro / "rep")]):
            assert cli.main(argv) == 2
            assert f"the folder {ro} is not writable" in _one_line(capsys.readouterr().err)
    finally:
        ro.chmod(0o700)


def test_os_error_while_writing_is_one_line(tmp_path):
    """atomic_write turns what the file system refuses into one UserError naming the path; nothing is left."""
    from anomalyseg.files import atomic_write

    (tmp_path / "a_file").write_text("x")
    blocker = tmp_path / "a_file"
    with pytest.raises(UserError, match=rf"cannot write {blocker}/out.json: {blocker} is a file, not a folder"):
        atomic_write(tmp_path / "a_file" / "out.json", "{}")
    with pytest.raises(UserError, match="it is a folder"):
        atomic_write(tmp_path, "{}")

    def full_disk(fh):
        raise OSError(28, "No space left on device")

    with pytest.raises(UserError, match=rf"cannot write {tmp_path / 'r.json'}: No space left on device"):
        atomic_write(tmp_path / "r.json", full_disk)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_os_error_anywhere_in_a_command_is_one_line(monkeypatch, capsys):
    """The last resort in cli.main: an OSError of the user's disk names the path in one line, exit 2."""
    from anomalyseg.cli import report as report_cli

    def refuse(args):
        raise PermissionError(13, "Permission denied", "/somewhere/report.html")

    monkeypatch.setattr(report_cli, "handle_report", refuse)
    assert cli.main(["report", "r.json", "--out", "rep"]) == 2
    assert _one_line(capsys.readouterr().err) == "anomalyseg: error: Permission denied: /somewhere/report.html"


def test_refused_pickle_keeps_its_whole_cause(files):
    from anomalyseg.files import load_torch_file

    with pytest.raises(UserError) as exc:
        load_torch_file(files["base"] / "evil.pt")
    message = str(exc.value)
    assert "\n" not in message
    assert "Trying to load unsupported GLOBAL posix.system whose module posix is blocked." in message
    assert "weights_only" in message
