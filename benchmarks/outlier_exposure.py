"""What outlier exposure buys on the demo's synthetic data: closed-set model vs fine-tunes with each outlier loss
and a p = 0 control (same schedule, nothing pasted), all scored on the synthetic test split.

The closed-set model is the default demo's (``anomalyseg demo``, outlier-exposure stage off; or ``--demo DIR`` to
reuse a finished demo folder). Each fine-tune is the demo's own (:func:`anomalyseg.workflows.demo_settings.
finetune_config` = ``configs/demo/demo_oe.yaml``) with ``outlier_exposure.loss`` / ``p`` changed; the pasted
outliers are the procedural family, disjoint from the test anomalies (never pasted, never seen). Every model is
fitted on the val split and evaluated on the test split exactly as the demo does.

Printed per model: mIoU; the best scorer by pooled AUPR with its pooled AUPR, per-image AUPR and pooled FPR95;
and the scorer that matches the loss, fixed in advance (entropy -> entropy, energy -> energy, rba -> rba;
closed-set and control: max_logit), so no number depends on picking a scorer on the test split. Then the issue's
floors: best pooled AUPR >= 2x the closed-set model's best post-hoc scorer, per-image AUPR up, pooled FPR95
down, mIoU within 1 point.

    python benchmarks/outlier_exposure.py --out /tmp/oe_bench               # demo + 6 fine-tunes, ~25 min, 2 cores
    python benchmarks/outlier_exposure.py --out /tmp/oe_bench --demo /tmp/demo_run   # reuse a demo's model
    python benchmarks/outlier_exposure.py --out /tmp/oe_bench --variants oe_entropy -- outlier_exposure.epochs=2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

MATCHING = {"entropy": "entropy", "energy": "energy", "rba": "rba"}
#: Fine-tunes: (name, loss, margins); margins "paper" = the papers' numbers, "auto" = calibrated on the starting
#: model's val inliers (README, "Outlier exposure"); the control (p = 0) is added to whichever are run.
VARIANTS = (("oe_entropy", "entropy", None), ("oe_energy", "energy", "paper"), ("oe_energy_auto", "energy", "auto"),
            ("oe_rba", "rba", "paper"), ("oe_rba_auto", "rba", "auto"))


def closed_set(out: Path, demo_dir: Path | None, device: str, extra: list[str]) -> tuple[Path, Path, dict]:
    """``(data root, closed-set best.pt, its results)``: from ``demo_dir`` or a fresh default demo."""
    from anomalyseg.report.results import read_results
    from anomalyseg.workflows.demo import RESULTS_NAME, demo

    if demo_dir is None:
        demo_dir = out / "demo"
        demo(demo_dir, overrides=["outlier_exposure.enabled=false", *extra], device=device, force=True,
             progress=False)
    ckpt = demo_dir / "run" / "checkpoints" / "best.pt"
    return demo_dir / "data", ckpt, read_results(demo_dir / "results" / RESULTS_NAME)


def fine_tune(name: str, loss: str, margins: str | None, p: float, ckpt: Path, data_root: Path, out: Path,
              device: str, extra: list[str]) -> tuple[dict, float]:
    """Fine-tune ``ckpt`` with ``loss`` (``margins``: auto or the papers') at paste probability ``p``, fit and
    evaluate; ``(results, seconds)``."""
    from anomalyseg.workflows.demo_settings import finetune_config, load_demo_config
    from anomalyseg.workflows.evaluate import evaluate
    from anomalyseg.workflows.fit import fit_scorers
    from anomalyseg.workflows.train import train

    auto = [f"outlier_exposure.settings.{m}=auto" for m in ("margin_in", "margin_out")] if margins == "auto" else []
    cfg = load_demo_config("default", overrides=[f"outlier_exposure.settings.loss={loss}",
                                                 f"outlier_exposure.settings.p={p}", *auto, *extra])
    tuned = finetune_config(cfg, ckpt)
    tuned.data.root, tuned.out_dir, tuned.run_name = str(data_root), str(out), f"run_{name}"
    tuned.train.progress = False
    started = time.perf_counter()
    run = train(tuned, device=device)
    seconds = time.perf_counter() - started
    best = run / "checkpoints" / "best.pt"
    loader = {"batch_size": cfg.evaluate.batch_size, "workers": cfg.evaluate.workers, "device": device,
              "progress": False}
    fit_scorers(best, data_root, **loader)
    results = out / f"synthetic_test_{name}.json"
    evaluate(best, data_root, results, scorers=cfg.evaluate.scorers, protocol="both", **loader)
    return json.loads(results.read_text()), seconds


def numbers(results: dict, scorer: str | None = None) -> dict[str, Any]:
    """mIoU and, for ``scorer`` (None: the best by pooled AUPR), pooled AUPR / per-image AUPR / pooled FPR95."""
    scorers = results["scorers"]
    if scorer is None:
        scorer = max(scorers, key=lambda n: scorers[n]["metrics"]["pooled"]["aupr"])
    m = scorers[scorer]["metrics"]
    return {"scorer": scorer, "miou": results["segmentation"]["miou"], "aupr": m["pooled"]["aupr"],
            "aupr_per_image": m["per_image"]["aupr"], "fpr95": m["pooled"]["fpr95"]}


def table(rows: list[tuple[str, dict, dict]]) -> str:
    head = (f"{'model':<22} {'mIoU':>6} | {'best scorer':<12} {'AUPR':>6} {'AUPR/img':>8} {'FPR95':>6} | "
            f"{'declared':<10} {'AUPR':>6} {'AUPR/img':>8} {'FPR95':>6}")
    lines = [head, "-" * len(head)]
    for name, best, fixed in rows:
        lines.append(f"{name:<22} {100 * best['miou']:6.1f} | {best['scorer']:<12} {100 * best['aupr']:6.1f} "
                     f"{100 * best['aupr_per_image']:8.1f} {100 * best['fpr95']:6.1f} | {fixed['scorer']:<10} "
                     f"{100 * fixed['aupr']:6.1f} {100 * fixed['aupr_per_image']:8.1f} {100 * fixed['fpr95']:6.1f}")
    return "\n".join(lines)


def floors(base: dict, tuned: dict) -> dict[str, Any]:
    """The issue's four checks of a fine-tune's best scorer against the closed-set model's best post-hoc one."""
    return {"aupr_ratio": tuned["aupr"] / base["aupr"],
            "aupr_2x": tuned["aupr"] >= 2 * base["aupr"],
            "aupr_per_image_up": tuned["aupr_per_image"] > base["aupr_per_image"],
            "fpr95_down": tuned["fpr95"] < base["fpr95"],
            "miou_delta_points": 100 * (tuned["miou"] - base["miou"]),
            "miou_within_1": abs(tuned["miou"] - base["miou"]) <= 0.01}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="working folder (runs, results, summary.json)")
    parser.add_argument("--demo", type=Path, help="a finished demo folder whose closed-set model to start from")
    parser.add_argument("--variants", default=",".join(v[0] for v in VARIANTS),
                        help="comma-separated fine-tunes (default: all: " + ", ".join(v[0] for v in VARIANTS) + ")")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("extra", nargs="*", help="demo settings key.sub=value for every stage (after --)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data_root, ckpt, base_results = closed_set(args.out, args.demo, args.device, args.extra)
    base, base_fixed = numbers(base_results), numbers(base_results, "max_logit")
    rows = [("closed-set (post-hoc)", base, base_fixed)]
    summary: dict[str, Any] = {"closed_set": {"best": base, "declared": base_fixed}, "fine_tunes": {}}
    from anomalyseg.workflows.demo_settings import load_demo_config

    p_demo = load_demo_config().outlier_exposure.settings.p
    chosen = args.variants.split(",")
    unknown = sorted(set(chosen) - {v[0] for v in VARIANTS})
    if unknown:
        parser.error(f"unknown variants {unknown}")
    variants = [(n, loss, m, p_demo) for n, loss, m in VARIANTS if n in chosen] + [("control_p0", "entropy", None, 0.0)]
    for name, loss, margins, p in variants:
        results, seconds = fine_tune(name, loss, margins, p, ckpt, data_root, args.out, args.device, args.extra)
        best = numbers(results)
        fixed = numbers(results, MATCHING[loss] if p > 0 else "max_logit")
        rows.append((name if p > 0 else "control (p=0)", best, fixed))
        summary["fine_tunes"][name] = {"loss": loss, "margins": margins, "p": p, "train_s": round(seconds, 1),
                                       "best": best, "declared": fixed, "floors": floors(base, best)}
        print(table(rows), flush=True)
    print("\nfloors (best scorer of each fine-tune vs the closed-set model's best post-hoc scorer):")
    for name, entry in summary["fine_tunes"].items():
        f = entry["floors"]
        print(f"  {name:<12} pooled AUPR x{f['aupr_ratio']:.2f} ({'>= 2x' if f['aupr_2x'] else '< 2x'}), per-image "
              f"AUPR {'up' if f['aupr_per_image_up'] else 'not up'}, FPR95 {'down' if f['fpr95_down'] else 'not down'}"
              f", mIoU {f['miou_delta_points']:+.2f} points ({'within 1' if f['miou_within_1'] else 'outside 1'})")
    summary["wall_s"] = round(time.perf_counter() - started, 1)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"\nwall {summary['wall_s']:.0f} s; {args.out / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
