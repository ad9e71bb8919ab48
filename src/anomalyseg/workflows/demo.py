"""``anomalyseg demo``: the whole workflow on generated data, in one folder, in minutes on a laptop CPU.

Stages (each is the library's own command, so the demo shows exactly what a user runs on real data):
synthetic StreetHazards-format data (``data synth``) -> training (``train``) -> fitting the scorers that
need it on the validation split (``fit-scorers``) -> evaluating every scorer under both protocols on the
test split (``evaluate``) -> panels (``visualize``) -> PR / ROC curves and the HTML page (``report``).

Layout of ``OUT/``: ``demo.json`` (settings, timings, summary; it also marks the folder as a demo folder),
``data/`` (the generated tree), ``run/`` (training run: ``config.yaml``, ``checkpoints/best.pt`` and its
``best.scorers.pt``), ``results/`` (results JSON / CSV / Markdown, ``panels/``), ``report/report.html``.
Settings live in :data:`PRESETS` (mirrored by ``configs/demo/demo_{default,quick}.yaml``) and are checked
by the engine's typed config loader.
"""

from __future__ import annotations

import json
import logging
import resource
import shlex
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anomalyseg.config import Bound, Config, apply_overrides, bounded, config_from_dict, config_to_dict, read_yaml
from anomalyseg.errors import UserError
from anomalyseg.files import atomic_write
from anomalyseg.limits import MAX_BATCH, MAX_COUNT, MAX_SEED, MAX_SYNTH_SIDE, MAX_WORKERS

log = logging.getLogger(__name__)

MANIFEST = "demo.json"
MANIFEST_FORMAT = "anomalyseg.demo/1"
RESULTS_NAME = "synthetic_test.json"


# ---------------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------------
@bounded(train=Bound(0, MAX_COUNT), val=Bound(0, MAX_COUNT), test=Bound(0, MAX_COUNT), size=Bound(32, MAX_SYNTH_SIDE),
         seed=Bound(0, MAX_SEED), workers=Bound(0, MAX_WORKERS))
@dataclass
class DemoData:
    """The generated dataset: image counts per split and frame size ``[width, height]``."""

    train: int = 400
    val: int = 40
    test: int = 40
    size: tuple[int, int] = (320, 180)
    seed: int = 0
    workers: int = 2  # processes drawing the images


@bounded(batch_size=Bound(1, MAX_BATCH), workers=Bound(0, MAX_WORKERS), panels=Bound(0, 1000))
@dataclass
class DemoEvaluate:
    """Scoring, evaluation and figures."""

    scorers: str = "all"
    batch_size: int = 4
    workers: int = 1
    panels: int = 4  # panels drawn for the best scorer (pooled AUROC)
    panel_scorer: str | None = None  # None: the best scorer by pooled AUROC


@dataclass
class DemoConfig:
    """A demo run. ``training`` is a full training config (``anomalyseg train`` schema); the demo sets its
    ``data.root``, ``out_dir`` and ``run_name``."""

    data: DemoData = field(default_factory=DemoData)
    training: Config = field(default_factory=Config)
    evaluate: DemoEvaluate = field(default_factory=DemoEvaluate)


_TRAINING: dict[str, Any] = {
    "data": {"crop_size": [144, 256], "scale_range": [0.8, 1.25], "hflip": True, "color_jitter": True,
             "blur": False, "val_size": None, "batch_size": 8, "val_batch_size": 8, "workers": 1},
    "model": {"name": "deeplabv3plus_efficientnet_lite0", "pretrained": True},
    "optim": {"name": "adamw", "lr": 2.0e-3, "weight_decay": 1.0e-4, "backbone_lr_mult": 0.5},
    "schedule": {"name": "poly", "power": 0.9, "warmup_iters": 20},
    "train": {"epochs": 7, "val_every": 2, "seed": 0, "device": "auto", "class_balance": "inverse_sqrt",
              "checkpoint_every_steps": 0, "log_every": 10, "num_vis_images": 2},
}

#: Built-in settings; ``configs/demo/demo_<name>.yaml`` hold the same values (a test keeps them equal).
PRESETS: dict[str, dict[str, Any]] = {
    "default": {
        "data": {"train": 400, "val": 40, "test": 40, "size": [320, 180], "seed": 0, "workers": 2},
        "training": _TRAINING,
        "evaluate": {"scorers": "all", "batch_size": 4, "workers": 1, "panels": 4, "panel_scorer": None},
    },
    "quick": {
        "data": {"train": 96, "val": 8, "test": 8, "size": [192, 108], "seed": 0, "workers": 2},
        "training": {**_TRAINING,
                     "data": {**_TRAINING["data"], "crop_size": [108, 192], "workers": 0},
                     "schedule": {"name": "poly", "power": 0.9, "warmup_iters": 5},
                     "train": {**_TRAINING["train"], "epochs": 3, "val_every": 3, "log_every": 5}},
        "evaluate": {"scorers": "all", "batch_size": 4, "workers": 0, "panels": 2, "panel_scorer": None},
    },
}


def load_demo_config(preset: str = "default", path: str | Path | None = None,
                     overrides: Sequence[str] = ()) -> DemoConfig:
    """The demo settings: the built-in ``preset``, then a YAML file's keys on top (``path``), then
    ``key.sub=value`` overrides; unknown keys and wrong types are one-line :class:`UserError`."""
    if preset not in PRESETS:
        raise UserError(f"unknown demo preset {preset!r}; choose from {', '.join(PRESETS)}")
    data = _merge(PRESETS[preset], read_yaml(path)) if path is not None else PRESETS[preset]
    return config_from_dict(DemoConfig, apply_overrides(DemoConfig, data, overrides))


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``, section by section (a partial YAML file keeps the preset's other keys)."""
    out = dict(base)
    for key, value in over.items():
        both = isinstance(out.get(key), dict) and isinstance(value, dict)
        out[key] = _merge(out[key], value) if both else value
    return out


# ---------------------------------------------------------------------------------------------------
# Output folder
# ---------------------------------------------------------------------------------------------------
def is_demo_folder(path: Path) -> bool:
    """True when ``path`` holds a ``demo.json`` written by this module (finished or interrupted)."""
    try:
        return json.loads((path / MANIFEST).read_text(encoding="utf-8")).get("format") == MANIFEST_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def prepare_out(out: str | Path, force: bool = False, confirm: Callable[[str], bool] | None = None) -> Path:
    """Make ``out`` ready for a new demo. An existing non-empty folder is replaced only when it is a demo
    folder AND (``force`` or ``confirm(question)`` says yes); otherwise a one-line :class:`UserError`."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not is_demo_folder(out):
            raise UserError(f"--out {out} already exists and holds files that are not a demo run; "
                            "choose another (new or empty) folder")
        if not force:
            if confirm is None:
                raise UserError(f"--out {out} already holds a demo run; choose another folder, or pass --force "
                                "to replace it")
            if not confirm(f"{out} already holds a demo run. Replace it? [y/N] "):
                raise UserError(f"kept {out} as it was (pass --force to replace it without asking)")
        log.info("replacing the demo run in %s", out)
        shutil.rmtree(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create --out {out}: {exc.strerror}") from None
    return out


# ---------------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------------
def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children (data workers, pools)."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class _Stages:
    """Numbered stage log lines with wall and CPU seconds per stage."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.timings = total, 0, {}

    @contextmanager
    def __call__(self, key: str, what: str, command: str | None = None) -> Iterator[None]:
        self.done += 1
        log.info("demo step %d/%d: %s%s", self.done, self.total, what, f"\n    same as: {command}" if command else "")
        wall, cpu = time.perf_counter(), cpu_seconds()
        yield
        self.timings[key] = {"wall_s": round(time.perf_counter() - wall, 2), "cpu_s": round(cpu_seconds() - cpu, 2)}


def encoder_init(training: Config) -> str:
    """Check the pretrained weights load offline; without them train from scratch (and say so). A model that
    cannot be built even without pretrained weights (unknown name, bad option) is the user's error."""
    from dataclasses import replace

    from anomalyseg.engine.factory import build_model_from_config

    if not training.model.pretrained:
        return "from scratch (model.pretrained: false)"
    try:
        build_model_from_config(training.model, 13)
    except UserError as exc:
        build_model_from_config(replace(training.model, pretrained=False), 13)  # raises for a bad model
        log.warning("no pretrained weights for %s (%s): training it from scratch, expect lower numbers",
                    training.model.name, exc)
        training.model.pretrained = False
        return f"from scratch (pretrained weights unavailable: {exc})"
    return "ImageNet-pretrained encoder (offline weights), decoder from scratch"


def _write_manifest(out: Path, record: dict[str, Any]) -> None:
    atomic_write(out / MANIFEST, json.dumps(record, indent=1, allow_nan=False) + "\n")


def demo(
    out: str | Path,
    *,
    quick: bool = False,
    config_file: str | Path | None = None,
    overrides: Sequence[str] = (),
    device: str | None = None,
    force: bool = False,
    confirm: Callable[[str], bool] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """The ``demo`` command: the ``quick`` or default preset (a settings file and ``key.sub=value`` overrides
    on top, see :func:`load_demo_config`), then :func:`run_demo`."""
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise UserError(f"unexpected argument {bad[0]!r}: settings look like key.sub=value (e.g. data.train=200)")
    config = load_demo_config("quick" if quick else "default", config_file, overrides)
    return run_demo(out, config, device=device, force=force, confirm=confirm, progress=progress)


def run_demo(
    out: str | Path,
    config: DemoConfig | None = None,
    *,
    device: str | None = None,
    force: bool = False,
    confirm: Callable[[str], bool] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Run every stage into ``out`` and return the summary record (also written to ``out/demo.json``).

    ``device``: cpu / cuda / cuda:N / auto (default: ``training.train.device``). ``force`` / ``confirm``:
    see :func:`prepare_out`.
    """
    cfg = config if config is not None else load_demo_config()
    started, cpu0 = time.perf_counter(), cpu_seconds()
    out = prepare_out(out, force=force, confirm=confirm)
    device = device or cfg.training.train.device
    record: dict[str, Any] = {"format": MANIFEST_FORMAT, "status": "running", "out": str(out.resolve()),
                              "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "device": device,
                              "config": config_to_dict(cfg)}
    _write_manifest(out, record)
    try:
        paths = _run_stages(cfg, out, device, progress, record)
    except BaseException as exc:  # leave a manifest that says how the run ended, then let it propagate
        record.update(status="interrupted" if isinstance(exc, KeyboardInterrupt) else "failed",
                      error=str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__)
        _write_manifest(out, record)
        raise
    record.update(status="finished", wall_s=round(time.perf_counter() - started, 2),
                  cpu_s=round(cpu_seconds() - cpu0, 2), paths=paths)
    _write_manifest(out, record)
    return record


def _run_stages(cfg: DemoConfig, out: Path, device: str, progress: bool, record: dict[str, Any]) -> dict[str, Any]:
    """The six stages; fills ``record`` (model, summary, timings) and returns the paths of the outputs."""
    from anomalyseg.data.synthetic import write_synthetic
    from anomalyseg.report.build import write_report
    from anomalyseg.workflows.evaluate import evaluate
    from anomalyseg.workflows.fit import fit_scorers
    from anomalyseg.workflows.train import train
    from anomalyseg.workflows.visualize import visualize

    stage = _Stages(6)
    record["timings"] = stage.timings
    d, ev, tr = cfg.data, cfg.evaluate, cfg.training
    data_root, run_dir, results_dir = out / "data", out / "run", out / "results"

    size = f"{d.size[0]}x{d.size[1]}"
    with stage("data", f"generate {d.train}/{d.val}/{d.test} synthetic train/val/test images ({size})",
               f"anomalyseg data synth --out {data_root} --train {d.train} --val {d.val} --test {d.test} "
               f"--size {size} --seed {d.seed}"):
        write_synthetic(data_root, train=d.train, val=d.val, test=d.test, size=d.size, seed=d.seed,
                        workers=d.workers)

    tr.data.root, tr.out_dir, tr.run_name = str(data_root), str(out), run_dir.name
    tr.train.progress = tr.train.progress and progress
    init = encoder_init(tr)
    record["model"] = {"name": tr.model.name, "init": init, "pretrained": tr.model.pretrained}
    with stage("train", f"train {tr.model.name}, {init}, {tr.train.epochs} epochs",
               f"anomalyseg train {run_dir / 'config.yaml'}"):
        made = train(tr, device=device)
    if made != run_dir:  # the engine never reuses a folder; ours is fresh, so this is a bug
        raise RuntimeError(f"training wrote {made}, expected {run_dir}")
    ckpt = run_dir / "checkpoints" / "best.pt"

    common = ["--checkpoint", str(ckpt), "--data-root", str(data_root), "--device", device,
              "--batch-size", str(ev.batch_size), "--workers", str(ev.workers)]  # the equivalent commands, logged
    loader = {"batch_size": ev.batch_size, "workers": ev.workers, "device": device, "progress": progress}
    with stage("fit", "fit the scorers that need in-distribution statistics on the val split",
               shlex.join(["anomalyseg", "fit-scorers", *common])):
        fitted = fit_scorers(ckpt, data_root, **loader)
        print(f"wrote {fitted.states_path} ({', '.join(fitted.scorers)})")

    results = results_dir / RESULTS_NAME
    with stage("evaluate", "evaluate every scorer under both protocols on the test split",
               shlex.join(["anomalyseg", "evaluate", *common, "--scorers", ev.scorers, "--protocol", "both",
                           "--out", str(results)])):
        record_ = evaluate(ckpt, data_root, results, scorers=ev.scorers, protocol="both", **loader)[0].record
    summary = record["summary"] = summarize(record_)

    panels = results_dir / "panels"
    scorer = ev.panel_scorer or summary["best_scorer"] or "max_logit"
    with stage("visualize", f"draw {ev.panels} panels for {scorer}",
               shlex.join(["anomalyseg", "visualize", "--checkpoint", str(ckpt), "--data-root", str(data_root),
                           "--scorer", scorer, "--results", str(results), "--num-samples", str(ev.panels),
                           "--device", device, "--out", str(panels)])):
        visualize(ckpt, data_root, panels, scorer=scorer, results=results, num_samples=ev.panels, device=device)

    report = out / "report"
    title = f"anomalyseg demo: {tr.model.name} on synthetic StreetHazards"
    with stage("report", "tables, PR / ROC curves and the HTML page",
               shlex.join(["anomalyseg", "report", str(results), "--out", str(report), "--title", title])):
        write_report([str(results)], report, title=title)

    return {"data": str(data_root), "run": str(run_dir), "checkpoint": str(ckpt), "results": str(results),
            "panels": sorted(str(p) for p in panels.glob("panel_*.png")), "report": str(report / "report.html")}


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """mIoU, per-scorer AUROC / AUPR / FPR95 per protocol and the best scorer by pooled AUROC."""
    from anomalyseg.report.tables import best_scorer

    scorers = {name: {p: {k: m.get(k) for k in ("auroc", "aupr", "fpr95")} for p, m in entry["metrics"].items()}
               for name, entry in (results.get("scorers") or {}).items()}
    best = best_scorer(results, "pooled", "auroc")
    return {"miou": results["segmentation"].get("miou"), "num_images": results.get("num_images"),
            "scorers": scorers, "best_scorer": best,
            "best_pooled_auroc": scorers[best]["pooled"]["auroc"] if best else None}


def _pct(value: float | None) -> str:
    return "   -" if value is None else f"{100 * value:5.1f}"


def _duration(seconds: float) -> str:
    return f"{int(seconds // 60)}m{seconds % 60:04.1f}s"


def format_summary(record: dict[str, Any]) -> str:
    """The short table printed at the end of a demo."""
    s, model = record["summary"], record["model"]
    lines = [
        f"anomalyseg demo finished in {_duration(record['wall_s'])} (CPU time {_duration(record['cpu_s'])})",
        f"model: {model['name']}, {model['init']}",
        f"closed-set mIoU on the synthetic test split: {_pct(s['miou']).strip()}% ({s['num_images']} images)",
        "",
        f"{'scorer':<12} {'pooled: AUROC':>13} {'AUPR':>6} {'FPR95':>6}   {'per-image: AUROC':>16} {'AUPR':>6} "
        f"{'FPR95':>6}",
    ]
    for name, m in s["scorers"].items():
        pooled, per = m.get("pooled", {}), m.get("per_image", {})
        mark = "  <- best" if name == s["best_scorer"] else ""
        lines.append(f"{name:<12} {_pct(pooled.get('auroc')):>13} {_pct(pooled.get('aupr')):>6} "
                     f"{_pct(pooled.get('fpr95')):>6}   {_pct(per.get('auroc')):>16} {_pct(per.get('aupr')):>6} "
                     f"{_pct(per.get('fpr95')):>6}{mark}")
    lines += ["", "(percent; pooled = one curve over all test pixels, per-image = official StreetHazards protocol)",
              f"panels: {Path(record['paths']['panels'][0]).parent if record['paths']['panels'] else '-'}",
              f"report: {record['paths']['report']}"]
    return "\n".join(lines)
