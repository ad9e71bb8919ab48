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
from pathlib import Path
from typing import Any

from anomalyseg.config import Config
from anomalyseg.configio import config_to_dict
from anomalyseg.errors import UserError, first_line
from anomalyseg.files import atomic_write
from anomalyseg.workflows.demo_settings import DemoConfig, finetune_config, load_demo_config

log = logging.getLogger(__name__)

MANIFEST = "demo.json"
MANIFEST_FORMAT = "anomalyseg.demo/1"
RESULTS_NAME = "synthetic_test.json"
RESULTS_NAME_OE = "synthetic_test_oe.json"  # the outlier-exposure fine-tuned model


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
                      error=first_line(exc)[:300])
        _write_manifest(out, record)
        raise
    record.update(status="finished", wall_s=round(time.perf_counter() - started, 2),
                  cpu_s=round(cpu_seconds() - cpu0, 2), paths=paths)
    _write_manifest(out, record)
    return record


def _run_stages(cfg: DemoConfig, out: Path, device: str, progress: bool, record: dict[str, Any]) -> dict[str, Any]:
    """The stages (six, nine with the outlier-exposure fine-tune); fills ``record`` (model, summaries, timings)
    and returns the paths of the outputs."""
    from anomalyseg.data.synthetic import write_synthetic
    from anomalyseg.report.build import write_report

    oe = cfg.outlier_exposure.enabled
    stage = _Stages(9 if oe else 6)
    record["timings"] = stage.timings
    d, ev, tr = cfg.data, cfg.evaluate, cfg.training
    data_root, results_dir = out / "data", out / "results"

    size = f"{d.size[0]}x{d.size[1]}"
    with stage("data", f"generate {d.train}/{d.val}/{d.test} synthetic train/val/test images ({size})",
               f"anomalyseg data synth --out {data_root} --train {d.train} --val {d.val} --test {d.test} "
               f"--size {size} --seed {d.seed}"):
        write_synthetic(data_root, train=d.train, val=d.val, test=d.test, size=d.size, seed=d.seed,
                        workers=d.workers)

    tr.data.root, tr.out_dir = str(data_root), str(out)
    tr.train.progress = tr.train.progress and progress
    init = encoder_init(tr)
    record["model"] = {"name": tr.model.name, "init": init, "pretrained": tr.model.pretrained}
    ckpt = _train_stage(stage, "train", f"train {tr.model.name}, {init}, {tr.train.epochs} epochs", tr, out / "run",
                        device)
    results = results_dir / RESULTS_NAME
    record["summary"] = _score_stages(stage, "", cfg, ckpt, data_root, results, device, progress)
    paths = {"data": str(data_root), "run": str(out / "run"), "checkpoint": str(ckpt), "results": str(results)}

    if oe:
        tuned = finetune_config(cfg, ckpt)
        s = tuned.outlier_exposure
        ckpt_oe = _train_stage(stage, "train_oe", f"fine-tune it with outlier exposure ({s.source} outliers, "
                               f"{s.loss} loss), {tuned.train.epochs} epochs", tuned, out / "run_oe", device)
        results_oe = results_dir / RESULTS_NAME_OE
        record["summary_oe"] = _score_stages(stage, "_oe", cfg, ckpt_oe, data_root, results_oe, device, progress)
        paths.update(run_oe=str(out / "run_oe"), checkpoint_oe=str(ckpt_oe), results_oe=str(results_oe))

    panels = results_dir / "panels"
    scorer = ev.panel_scorer or record["summary"]["best_scorer"] or "max_logit"
    with stage("visualize", f"draw {ev.panels} panels for {scorer}",
               shlex.join(["anomalyseg", "visualize", "--checkpoint", str(ckpt), "--data-root", str(data_root),
                           "--scorer", scorer, "--results", str(results), "--num-samples", str(ev.panels),
                           "--device", device, "--out", str(panels)])):
        from anomalyseg.workflows.visualize import visualize

        visualize(ckpt, data_root, panels, scorer=scorer, results=results, num_samples=ev.panels, device=device)

    report = out / "report"
    title = f"anomalyseg demo: {tr.model.name} on synthetic StreetHazards" + (
        " (closed-set and outlier-exposure fine-tuned)" if oe else "")
    every = [str(results)] + ([paths["results_oe"]] if oe else [])
    with stage("report", "tables, PR / ROC curves and the HTML page",
               shlex.join(["anomalyseg", "report", *every, "--out", str(report), "--title", title])):
        write_report(every, report, title=title)

    return {**paths, "panels": sorted(str(p) for p in panels.glob("panel_*.png")),
            "report": str(report / "report.html")}


def _train_stage(stage: _Stages, key: str, what: str, tr: Config, run_dir: Path, device: str) -> Path:
    """Train ``tr`` into ``run_dir`` (its config is saved there); returns its ``best.pt``."""
    from anomalyseg.workflows.train import train

    tr.run_name = run_dir.name
    with stage(key, what, f"anomalyseg train {run_dir / 'config.yaml'}"):
        made = train(tr, device=device)
    if made != run_dir:  # the engine never reuses a folder; ours is fresh, so this is a bug
        raise RuntimeError(f"training wrote {made}, expected {run_dir}")
    return run_dir / "checkpoints" / "best.pt"


def _score_stages(stage: _Stages, suffix: str, cfg: DemoConfig, ckpt: Path, data_root: Path, results: Path,
                  device: str, progress: bool) -> dict[str, Any]:
    """Fit the scorers that need it on the val split, evaluate every scorer on the test split; the summary."""
    from anomalyseg.workflows.evaluate import evaluate
    from anomalyseg.workflows.fit import fit_scorers

    ev = cfg.evaluate
    common = ["--checkpoint", str(ckpt), "--data-root", str(data_root), "--device", device,
              "--batch-size", str(ev.batch_size), "--workers", str(ev.workers)]  # the equivalent commands, logged
    loader = {"batch_size": ev.batch_size, "workers": ev.workers, "device": device, "progress": progress}
    which = " of the fine-tuned model" if suffix else ""
    with stage(f"fit{suffix}", f"fit the scorers{which} that need in-distribution statistics on the val split",
               shlex.join(["anomalyseg", "fit-scorers", *common])):
        fitted = fit_scorers(ckpt, data_root, **loader)
        print(f"wrote {fitted.states_path} ({', '.join(fitted.scorers)})")
    with stage(f"evaluate{suffix}", f"evaluate every scorer{which} under both protocols on the test split",
               shlex.join(["anomalyseg", "evaluate", *common, "--scorers", ev.scorers, "--protocol", "both",
                           "--out", str(results)])):
        made = evaluate(ckpt, data_root, results, scorers=ev.scorers, protocol="both", **loader)[0].record
    return summarize(made)


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """mIoU, per-scorer AUROC / AUPR / FPR95 per protocol and the best scorer by pooled AUROC."""
    from anomalyseg.report.results import best_scorer

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
    """The short tables printed at the end of a demo: the closed-set model's post-hoc scorers, then (when the
    fine-tune ran) the same scorers on the outlier-exposure fine-tuned model."""
    s, model = record["summary"], record["model"]
    lines = [
        f"anomalyseg demo finished in {_duration(record['wall_s'])} (CPU time {_duration(record['cpu_s'])})",
        f"model: {model['name']}, {model['init']}", "",
        *_scorer_table(s, "closed-set model (post-hoc scorers)"),
    ]
    if record.get("summary_oe"):
        lines += ["", *_scorer_table(record["summary_oe"], "fine-tuned with outlier exposure (anomaly-aware)")]
    lines += ["", "(percent; pooled = one curve over all test pixels, per-image = official StreetHazards protocol)",
              f"panels: {Path(record['paths']['panels'][0]).parent if record['paths']['panels'] else '-'}",
              f"report: {record['paths']['report']}"]
    return "\n".join(lines)


def _scorer_table(s: dict[str, Any], title: str) -> list[str]:
    lines = [f"{title}: mIoU {_pct(s['miou']).strip()}% on the synthetic test split ({s['num_images']} images)",
             f"{'scorer':<12} {'pooled: AUROC':>13} {'AUPR':>6} {'FPR95':>6}   {'per-image: AUROC':>16} {'AUPR':>6} "
             f"{'FPR95':>6}"]
    for name, m in s["scorers"].items():
        pooled, per = m.get("pooled", {}), m.get("per_image", {})
        mark = "  <- best" if name == s["best_scorer"] else ""
        lines.append(f"{name:<12} {_pct(pooled.get('auroc')):>13} {_pct(pooled.get('aupr')):>6} "
                     f"{_pct(pooled.get('fpr95')):>6}   {_pct(per.get('auroc')):>16} {_pct(per.get('aupr')):>6} "
                     f"{_pct(per.get('fpr95')):>6}{mark}")
    return lines
