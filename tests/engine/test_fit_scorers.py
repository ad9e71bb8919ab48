"""``fit-scorers``: streaming fits equal a direct fit, states beside the checkpoint (weights_only), the test
split and anomaly-labelled splits refused, nothing overwritten without --force, 2-process fit == 1 process."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tests.engine.helpers import REPO_ROOT, subprocess_env
from tests.engine.test_evaluate import make_checkpoint, make_tree
from torch.utils.data import DataLoader

from anomalyseg.checkpoints.reload import load_model
from anomalyseg.cli import main
from anomalyseg.data import StreetHazards, collate_samples
from anomalyseg.data.transforms import EvalTransform
from anomalyseg.engine.fit import fit_scorers
from anomalyseg.errors import UserError
from anomalyseg.scoring import get_scorer
from anomalyseg.scoring.labels import labels_at


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_tree(tmp_path_factory.mktemp("fit") / "sh")


def fit_cli(ckpt: Path, tree: Path, *extra: str) -> int:
    return main(["fit-scorers", "--checkpoint", str(ckpt), "--data-root", str(tree), "--workers", "0",
                 "--no-progress", *extra])


def _states(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)  # plain tensors / dicts only


def test_cli_states_equal_a_direct_fit(tree, tmp_path):
    ckpt = make_checkpoint(tmp_path / "m.pt")
    assert fit_cli(ckpt, tree, "--size", "48x32") == 0
    states = _states(tmp_path / "m.scorers.pt")
    assert set(states["scorers"]) == {"sml", "heat", "mahalanobis"}  # sml_full shares sml's statistics
    assert states["scorers"]["heat"]["split"] == "val" and states["scorers"]["heat"]["num_images"] == 4
    # reference: the same model outputs and nearest-resized labels fed to Scorer.fit directly
    model = load_model(ckpt, "cpu").model
    ds = StreetHazards(tree, "val", transform=EvalTransform(size=(32, 48)))
    batches = []
    with torch.no_grad():
        for i in range(len(ds)):
            out = model(ds[i]["image"][None], return_features=True)
            batches.append((out, labels_at(ds[i]["label"][None], tuple(out.logits.shape[-2:]))))
    for name in ("sml", "heat", "mahalanobis"):
        direct = get_scorer(name).fit(batches).state_dict()
        saved = states["scorers"][name]["state"]
        assert saved["passes_done"] == direct["passes_done"]
        for got, want in zip(saved["states"], direct["states"]):
            assert got.keys() == want.keys()
            for key in want:
                torch.testing.assert_close(got[key], want[key], rtol=1e-9, atol=1e-9)


def test_test_split_is_refused(tree, tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "m.pt")
    assert fit_cli(ckpt, tree, "--split", "test") == 2
    err = capsys.readouterr().err
    assert "'test' split" in err and "fitting scorers" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m.scorers.pt").exists()


def test_split_with_anomaly_labels_is_refused(tree, tmp_path, capsys):
    leaky = tmp_path / "leaky"
    shutil.copytree(tree, leaky)
    victim = StreetHazards(leaky, "val").entries[2].label
    shutil.copyfile(StreetHazards(leaky, "test").entries[0].label, victim)  # a label holding value 14
    ckpt = make_checkpoint(tmp_path / "m.pt")
    assert fit_cli(ckpt, leaky, "--scorers", "sml") == 2
    err = capsys.readouterr().err
    assert "contains anomaly pixels" in err and str(victim) in err
    assert not (tmp_path / "m.scorers.pt").exists()


def test_fit_loop_itself_refuses_anomaly_labels(tree, tmp_path):
    model = load_model(make_checkpoint(tmp_path / "m.pt"), "cpu").model
    loader = DataLoader(StreetHazards(tree, "test", transform=EvalTransform()), batch_size=2,
                        collate_fn=collate_samples)
    with pytest.raises(UserError, match="never on anomaly labels"):
        fit_scorers(model, loader, [get_scorer("mahalanobis")], "cpu")


def test_no_overwrite_without_force_and_entries_are_kept(tree, tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "m.pt")
    states_path = tmp_path / "m.scorers.pt"
    assert fit_cli(ckpt, tree, "--scorers", "sml") == 0
    before = states_path.read_bytes()
    capsys.readouterr()
    assert fit_cli(ckpt, tree, "--scorers", "sml,max_logit") == 2
    assert "already holds fitted states for sml" in capsys.readouterr().err
    assert states_path.read_bytes() == before
    assert fit_cli(ckpt, tree, "--scorers", "mahalanobis") == 0  # a new entry: sml's is kept
    assert set(_states(states_path)["scorers"]) == {"sml", "mahalanobis"}
    assert fit_cli(ckpt, tree, "--scorers", "sml", "--force") == 0
    assert set(_states(states_path)["scorers"]) == {"sml", "mahalanobis"}
    # another version of the checkpoint (same path): old states are refused by evaluate and by fit-scorers
    make_checkpoint(ckpt, seed=1)
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data-root", str(tree), "--scorers", "sml",
                 "--out", str(tmp_path / "r.json"), "--workers", "0", "--no-progress"]) == 2
    assert "another version of the checkpoint" in capsys.readouterr().err
    assert fit_cli(ckpt, tree, "--scorers", "mahalanobis") == 2
    assert fit_cli(ckpt, tree, "--scorers", "mahalanobis", "--force") == 0
    assert set(_states(states_path)["scorers"]) == {"mahalanobis"}  # stale entries dropped


def test_post_hoc_only_is_a_user_error(tree, tmp_path, capsys):
    assert fit_cli(make_checkpoint(tmp_path / "m.pt"), tree, "--scorers", "max_logit,energy") == 2
    assert "needs fitting" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_two_process_fit_equals_single_process(tree, tmp_path):
    ckpt = make_checkpoint(tmp_path / "m.pt")
    args = ["--checkpoint", str(ckpt), "--data-root", str(tree), "--scorers", "sml,heat", "--workers", "0",
            "--no-progress", "--device", "cpu"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in each torchrun process
    try:
        assert main(["fit-scorers", *args, "--states", str(tmp_path / "single.pt")]) == 0
    finally:
        torch.set_num_threads(threads)
    exe = Path(sys.executable).with_name("torchrun")
    launcher = [str(exe)] if exe.is_file() else [sys.executable, "-m", "torch.distributed.run"]
    env = subprocess_env()
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run([*launcher, "--standalone", "--nproc_per_node=2", "-m", "anomalyseg", "fit-scorers", *args,
                           "--states", str(tmp_path / "multi.pt")], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single, multi = _states(tmp_path / "single.pt"), _states(tmp_path / "multi.pt")
    for name in ("sml", "heat"):
        a, b = single["scorers"][name]["state"], multi["scorers"][name]["state"]
        assert a["passes_done"] == b["passes_done"]
        for pa, pb in zip(a["states"], b["states"]):
            for key in pa:  # float64 running sums added in another order
                torch.testing.assert_close(pb[key], pa[key], rtol=1e-12, atol=1e-9)
