"""``anomalyseg evaluate``: result files and their content, no silent overwrite, one-line errors, and a
2-process ``torchrun`` (gloo, CPU) whose numbers equal the single-process run."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tests.engine.helpers import REPO_ROOT, subprocess_env
from tests.engine.test_evaluate import make_checkpoint, make_tree

from anomalyseg.cli import main
from anomalyseg.data import StreetHazards
from anomalyseg.report.results import read_results


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_tree(tmp_path_factory.mktemp("cli") / "sh")


@pytest.fixture(scope="module")
def fitted_ckpt(tmp_path_factory, tree) -> Path:
    """A checkpoint with sml fitted beside it (through the CLI)."""
    path = make_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")
    assert main(["fit-scorers", "--checkpoint", str(path), "--data-root", str(tree), "--scorers", "sml",
                 "--workers", "0", "--no-progress"]) == 0
    return path


def evaluate(ckpt: Path, tree: Path, out: Path, *extra: str) -> int:
    return main(["evaluate", "--checkpoint", str(ckpt), "--data-root", str(tree), "--out", str(out),
                 "--workers", "0", "--no-progress", "--size", "48x32", *extra])


def test_results_files_and_content(fitted_ckpt, tree, tmp_path, capsys):
    out = tmp_path / "results" / "tiny.json"
    assert evaluate(fitted_ckpt, tree, out, "--scorers", "max_logit,sml_full,energy:temperature=2") == 0
    assert "wrote" in capsys.readouterr().out
    res = read_results(out)
    assert res["checkpoint"]["sha256"] == hashlib.sha256(fitted_ckpt.read_bytes()).hexdigest()
    assert res["checkpoint"]["path"] == str(fitted_ckpt.resolve())
    assert res["dataset"]["split"] == "test" and res["dataset"]["num_images"] == 5 == res["num_images"]
    assert set(res["versions"]) >= {"anomalyseg", "torch", "python"}
    assert res["scorer_states"]["used"]["sml_full"]["entry"] == "sml"  # sml's statistics serve sml_full
    assert res["scorer_states"]["used"]["sml_full"]["split"] == "val"
    assert list(res["scorers"]) == ["max_logit", "sml_full", "energy_T2"]
    assert res["scorers"]["energy_T2"]["params"]["temperature"] == 2.0
    assert res["protocols"]["per_image"]["fpr_rule"] == "closest"
    assert res["protocols"]["pooled"]["fpr_rule"] == "first"
    assert [r["id"] for r in res["per_image"]] == StreetHazards(tree, "test").ids
    assert all(set(r["metrics"]) == set(res["scorers"]) for r in res["per_image"])
    assert res["config"]["size"] == [48, 32] and res["input"]["native"] is False
    assert res["timings"]["inference_s"] > 0
    with open(out.with_suffix(".csv"), newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 3 * 2
    row = next(r for r in rows if r["scorer"] == "max_logit" and r["protocol"] == "pooled")
    assert float(row["auroc"]) == pytest.approx(res["scorers"]["max_logit"]["metrics"]["pooled"]["auroc"], rel=1e-12)
    md = out.with_suffix(".md").read_text()
    assert "| max_logit |" in md and "per_image AUROC" in md and "closed-set mIoU" in md
    json.loads(out.read_text())  # strict JSON (no NaN tokens)


def test_existing_results_are_kept_without_force(fitted_ckpt, tree, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert evaluate(fitted_ckpt, tree, out, "--scorers", "max_logit", "--protocol", "pooled") == 0
    before = out.read_bytes()
    capsys.readouterr()
    assert evaluate(fitted_ckpt, tree, out, "--scorers", "msp") == 2
    err = capsys.readouterr().err
    assert "already exist" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert out.read_bytes() == before
    out.with_suffix(".json").unlink()  # one file of the three left is enough to refuse
    assert evaluate(fitted_ckpt, tree, out, "--scorers", "msp") == 2
    assert evaluate(fitted_ckpt, tree, out, "--scorers", "msp", "--force") == 0
    assert list(read_results(out)["scorers"]) == ["msp"]


def test_unfitted_scorer_is_a_one_line_error_naming_the_command(tree, tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "fresh.pt")
    assert evaluate(ckpt, tree, tmp_path / "x.json", "--scorers", "max_logit,mahalanobis") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "mahalanobis" in err and "anomalyseg fit-scorers --checkpoint" in err and "Traceback" not in err
    assert not (tmp_path / "x.json").exists()


def test_checkpoint_for_other_classes_is_a_one_line_error(tree, tmp_path, capsys):
    ckpt = make_checkpoint(tmp_path / "c19.pt", num_classes=19)
    assert evaluate(ckpt, tree, tmp_path / "x.json", "--scorers", "max_logit") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "19 classes" in err and "13" in err


def test_bad_ignore_and_tta_are_user_errors(fitted_ckpt, tree, tmp_path, capsys):
    assert evaluate(fitted_ckpt, tree, tmp_path / "x.json", "--ignore", "otherr") == 2
    assert "not a known class" in capsys.readouterr().err
    assert evaluate(fitted_ckpt, tree, tmp_path / "x.json", "--tta", "scales=big") == 2
    assert "--tta" in capsys.readouterr().err


def test_ignore_names_reach_the_protocol_record(fitted_ckpt, tree, tmp_path):
    out = tmp_path / "ign.json"
    assert evaluate(fitted_ckpt, tree, out, "--scorers", "max_logit", "--ignore", "other,unlabeled") == 0
    res = read_results(out)
    assert res["protocols"]["per_image"]["ignore_ids"] == [0, 3]
    assert res["protocols"]["per_image"]["ignore_index"] == 255


def _torchrun() -> list[str]:
    exe = Path(sys.executable).with_name("torchrun")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "torch.distributed.run"]


@pytest.mark.slow
def test_torchrun_two_processes_equal_single_process(fitted_ckpt, tree, tmp_path):
    args = ["--checkpoint", str(fitted_ckpt), "--data-root", str(tree), "--scorers", "max_logit,sml",
            "--size", "48x32", "--workers", "0", "--no-progress", "--device", "cpu"]
    single = tmp_path / "single.json"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in each torchrun process: a conv may round differently with 2 threads
    try:
        assert main(["evaluate", *args, "--out", str(single)]) == 0
    finally:
        torch.set_num_threads(threads)
    multi = tmp_path / "multi.json"
    env = subprocess_env()
    env["OMP_NUM_THREADS"] = "1"
    cmd = [*_torchrun(), "--standalone", "--nproc_per_node=2", "-m", "anomalyseg", "evaluate", *args,
           "--out", str(multi)]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = read_results(single), read_results(multi)
    assert b["world_size"] == 2 and b["timings"]["ranks"] == 2
    # 5 images: rank 0 gets 3, rank 1 gets 2; no padding, every image once, in dataset order
    assert [r["id"] for r in b["per_image"]] == [r["id"] for r in a["per_image"]]
    assert b["per_image"] == a["per_image"]
    assert b["segmentation"]["confusion_matrix"] == a["segmentation"]["confusion_matrix"]
    assert b["segmentation"]["miou"] == a["segmentation"]["miou"]
    for name in ("max_logit", "sml"):
        pooled_a, pooled_b = (r["scorers"][name]["metrics"]["pooled"] for r in (a, b))
        assert pooled_b == pooled_a  # integer histogram counts: exactly equal
        assert b["scorers"][name]["curve"] == a["scorers"][name]["curve"]
        per_a, per_b = (r["scorers"][name]["metrics"]["per_image"] for r in (a, b))
        for key in ("auroc", "aupr", "fpr95", "num_images", "num_positive", "num_negative"):
            assert per_b[key] == pytest.approx(per_a[key], rel=1e-12, abs=1e-15)  # float64 sums, other order


def test_help_has_examples(capsys):
    for command in ("evaluate", "fit-scorers"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "examples:" in capsys.readouterr().out

