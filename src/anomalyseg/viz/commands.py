"""``anomalyseg visualize``: 3x3 panels of chosen samples, a comparison grid and a colour legend.

The model comes from the checkpoint through the engine's helpers, fitted scorer states from
``<checkpoint stem>.scorers.pt`` (written by ``anomalyseg fit-scorers``), thresholds and per-image values
from a results JSON of ``anomalyseg evaluate``. One forward pass per drawn sample.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from anomalyseg.engine import eval_sets
from anomalyseg.errors import UserError

log = logging.getLogger(__name__)

MANIFEST = "panels.json"
MANIFEST_FORMAT = "anomalyseg.panels/1"

EPILOG = """\
examples:
  anomalyseg visualize --checkpoint runs/r50/checkpoints/best.pt --data-root data/streethazards \\
      --scorer max_logit --num-samples 6 --out figures/r50_max_logit
  anomalyseg visualize --checkpoint runs/r50 --data-root data/streethazards --scorer sml_full \\
      --results results/r50.json --threshold best_f1 --select worst --num-samples 4 --out figures/r50_worst
  anomalyseg visualize --checkpoint runs/r50 --data-root data/streethazards --scorer energy \\
      --ids t5/12 t6/1028 --threshold 0.5 --out figures/picked
  anomalyseg visualize --checkpoint enet.pt --dataset anomaly-sets --data-root data/Validation_Dataset \\
      --scorer void --results results/enet.json --select worst --num-samples 3 --out results/panels

Writes panel_<id>.png (3x3: input, ground truth, prediction / overlay, confidence, errors / anomaly
score, detection, TP-FP-FN-TN), grid.png (all samples), legend.png (colours) and panels.json (what was
drawn, with each sample's mIoU and detection precision / recall / F1). --threshold tpr95 / best_f1 take
the pooled operating point of the scorer from --results; without --results each image gets its own.
Colours: official StreetHazards palette (anomaly cyan, ignore white); TP green, FP red, FN blue, TN
dark grey. Existing files are kept unless --force.
Real-photo sets (--dataset road_anomaly,smiyc_ra21,... | anomaly-sets, as for evaluate): one folder per
set, OUT/<set>/, with a 2x3 panel per sample (input photo, prediction in the model's palette -- Cityscapes
colours, void channel black --, anomaly mask normal / anomaly / void, score, detection, TP-FP-FN-TN; void
white and not counted), titled with the image's AUPR / FPR95; preprocessing from the checkpoint's input
contract, --eval-at as in the results. --results takes evaluate's --out (NAME.json: NAME_<set>.json is read).
"""


def _size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match or min(int(match.group(1)), int(match.group(2))) < 1:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 1280x720, got {text!r}")
    return int(match.group(1)), int(match.group(2))


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``visualize`` subcommand."""
    p = subparsers.add_parser(
        "visualize", help="qualitative panels: prediction, anomaly score, detection outcome per sample",
        description="Draw a 3x3 panel per sample, a comparison grid and a palette legend.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="checkpoint file or run folder")
    p.add_argument("--data-root", required=True, metavar="DIR",
                   help="StreetHazards root, or the folder holding the real-photo set folders")
    p.add_argument("--split", default="test", help="StreetHazards split (default: test)")
    eval_sets.add_arguments(p)
    p.add_argument("--eval-at", choices=("label", "model", "input"), default=None,
                   help="real-photo sets: label (logits upsampled to the mask) or model (image and mask at the "
                        "contract size; input = model); default: as in --results, else label")
    p.add_argument("--scorer", default="max_logit", metavar="NAME[:KEY=VALUE]",
                   help="anomaly scorer (default: max_logit)")
    p.add_argument("--num-samples", type=int, default=4, metavar="N", help="samples to draw (default: 4)")
    p.add_argument("--ids", nargs="+", metavar="ID", help="draw these sample ids (e.g. t5/12) instead")
    p.add_argument("--select", choices=("random", "worst", "best"), default="random",
                   help="random (seeded), or worst / best per-image AUPR from --results (default: random)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random choice (default: 0)")
    p.add_argument("--threshold", default="tpr95", metavar="tpr95|best_f1|FLOAT",
                   help="detection threshold (default: tpr95)")
    p.add_argument("--results", metavar="RESULTS.json", help="results of `anomalyseg evaluate` (thresholds, "
                   "per-image AUPR, input size)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--size", type=_size, metavar="WxH", help="model input size (default: as in --results, "
                      "else native)")
    size.add_argument("--native", action="store_true", help="model input at native resolution")
    p.add_argument("--tta", metavar="SPEC", help="test-time augmentation (default: as in --results)")
    p.add_argument("--states", metavar="PATH", help="fitted scorer states (default: <checkpoint stem>.scorers.pt)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--dpi", type=int, default=100, help="figure resolution (default: 100)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--force", action="store_true", help="overwrite existing figures")
    p.set_defaults(func=handle)


def _input_size(size: tuple[int, int] | None, native: bool, results: dict[str, Any] | None
                ) -> tuple[int, int] | None:
    """(h, w) for EvalTransform: --size, else the size the results were evaluated at, else native."""
    if size is not None:
        return size[1], size[0]
    if native or results is None:
        return None
    wh = (results.get("input") or {}).get("size_wh")
    return (int(wh[1]), int(wh[0])) if wh else None


def visualize(
    checkpoint: str | Path,
    data_root: str | Path,
    out: str | Path,
    *,
    split: str = "test",
    scorer: str = "max_logit",
    num_samples: int = 4,
    ids: Sequence[str] | None = None,
    select: str = "random",
    seed: int = 0,
    threshold: str = "tpr95",
    results: str | Path | None = None,
    size: tuple[int, int] | None = None,
    native: bool = False,
    tta: str | None = None,
    states: str | Path | None = None,
    device: str = "auto",
    dpi: int = 100,
    force: bool = False,
) -> dict[str, Any]:
    """Draw the panels, grid and legend into ``out``; returns the manifest written to ``out/panels.json``.

    ``size`` is ``(width, height)`` of the model input (see the ``visualize`` command for the rest).
    """
    from anomalyseg.data import StreetHazards
    from anomalyseg.data.transforms import EvalTransform
    from anomalyseg.engine.checkpoint import load_model_from_checkpoint, resolve_checkpoint
    from anomalyseg.engine.distributed import resolve_device
    from anomalyseg.engine.scorer_states import default_states_path, load_fitted
    from anomalyseg.engine.tta import TTA
    from anomalyseg.metrics.targets import anomaly_target
    from anomalyseg.models.checkpoints import file_sha256
    from anomalyseg.report.results import read_results
    from anomalyseg.scoring import scorers_from_spec
    from anomalyseg.viz import panels as P
    from anomalyseg.viz.colors import as_ids
    from anomalyseg.viz.samples import image_threshold, predict_sample, results_threshold, safe_name, select_samples

    out = Path(out)
    if (out / MANIFEST).exists() and not force:
        raise UserError(f"{out / MANIFEST} already exists (choose another --out, or --force to overwrite)")
    record = read_results(results) if results else None
    made = scorers_from_spec(scorer)
    if len(made) != 1:
        raise UserError(f"--scorer takes one scorer, got {len(made)}: {scorer!r}")
    sc = made[0]
    thr_value, thr_label = results_threshold(record, sc.name, threshold)
    ckpt_path = resolve_checkpoint(checkpoint)
    sha = file_sha256(ckpt_path)
    if record is not None and (record.get("checkpoint") or {}).get("sha256") not in (None, sha):
        log.warning("%s was evaluated with another checkpoint (sha256 differs from %s): its thresholds and "
                    "per-image values may not describe this model", results, ckpt_path)
    dataset = StreetHazards(data_root, split)
    info = dataset.info
    chosen = select_samples(dataset.ids, num_samples, select=select, seed=seed, wanted=ids,
                            per_image=(record or {}).get("per_image"), scorer=sc.name)
    dev = resolve_device(device)
    model, ckpt = load_model_from_checkpoint(ckpt_path, dev, num_classes=info.num_classes)
    if sc.requires_fit:
        load_fitted([sc], Path(states) if states else default_states_path(ckpt_path), sha)
    tta_spec = tta if tta is not None else ((record or {}).get("input") or {}).get("tta")
    transform = EvalTransform(size=_input_size(size, native, record))
    files = {"manifest": MANIFEST, "grid": "grid.png", "legend": "legend.png"}
    datas, entries = [], []
    for index in chosen:
        sample = dataset[index]
        pred = predict_sample(model, sample, sc, dev, transform=transform, tta=TTA.parse(tta_spec))
        target = anomaly_target(as_ids(pred.label), (info.anomaly_id,), void_label=info.ignore_index)
        value = thr_value if thr_value is not None else image_threshold(pred.score, target, threshold)
        data = P.panel_data(pred.image, pred.label, pred.pred, pred.confidence, pred.score, value, target,
                            info.palette, num_classes=info.num_classes, anomaly_ids=(info.anomaly_id,),
                            threshold_label=thr_label, sample_id=pred.sample_id)
        name = f"panel_{safe_name(pred.sample_id)}.png"
        if (out / name).exists() and not force:
            raise UserError(f"{out / name} already exists (choose another --out, or --force to overwrite)")
        panel = P.draw_panel(data, f"{pred.sample_id} · {sc.name} · {ckpt.get('model_name')}")
        P.save_figure(panel.figure, out / name, dpi)
        datas.append(data)
        entries.append({"id": pred.sample_id, "index": index, "file": name, "threshold": value,
                        "stats": {k: (v if isinstance(v, int) or math.isfinite(v) else None)
                                  for k, v in data.stats.items()}})
        log.info("%s: %s", pred.sample_id, data.summary())
    P.save_figure(P.comparison_grid(datas, title=f"{sc.name} · {thr_label}"), out / files["grid"], dpi)
    P.save_figure(P.palette_legend(info.all_names, info.palette), out / files["legend"], dpi)
    manifest = {
        "format": MANIFEST_FORMAT, "checkpoint": str(ckpt_path.resolve()), "checkpoint_sha256": sha,
        "model_name": ckpt.get("model_name"), "data_root": str(Path(data_root).resolve()), "split": split,
        "scorer": sc.name, "threshold": {"spec": threshold, "label": thr_label, "value": thr_value},
        "selection": {"mode": "ids" if ids else select, "seed": seed, "metric": "aupr"},
        "results": str(Path(results).resolve()) if results else None,
        "grid": files["grid"], "legend": files["legend"], "samples": entries,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return manifest


def handle(args: argparse.Namespace) -> int:
    presets = eval_sets.parse_datasets(args.dataset)
    if presets is not None:
        return _handle_sets(args, presets)
    if args.eval_at is not None or args.input_contract is not None:
        raise UserError("--eval-at and --input-contract apply to the real-photo sets (--dataset ...); on "
                        "StreetHazards the logits are upsampled to the label size and --size sets the input")
    manifest = visualize(
        args.checkpoint, args.data_root, args.out, split=args.split, scorer=args.scorer,
        num_samples=args.num_samples, ids=args.ids, select=args.select, seed=args.seed, threshold=args.threshold,
        results=args.results, size=args.size, native=args.native, tta=args.tta, states=args.states,
        device=args.device, dpi=args.dpi, force=args.force)
    print(f"wrote {len(manifest['samples'])} panel(s), {manifest['grid']} and {manifest['legend']} to {args.out}")
    return 0


def _handle_sets(args: argparse.Namespace, presets: list[str]) -> int:
    from anomalyseg.viz.real_sets import visualize_sets

    if args.size is not None or args.native:
        raise UserError("--size / --native do not apply to the real-photo sets: the input size comes from the "
                        "input contract (--input-contract size=HxW)")
    if args.states:
        raise UserError("--states: scorers that need fitting are not supported on the real-photo sets yet")
    if args.split != "test":
        raise UserError("--split names a StreetHazards split; the real-photo sets are validation sets (no split)")
    manifests = visualize_sets(
        args.checkpoint, args.data_root, args.out, presets, scorer=args.scorer, num_samples=args.num_samples,
        ids=args.ids, select=args.select, seed=args.seed, threshold=args.threshold, results=args.results,
        eval_at=args.eval_at, input_contract=args.input_contract, tta=args.tta, device=args.device, dpi=args.dpi,
        force=args.force)
    for key, m in manifests.items():
        print(f"{m['dataset']['name']}: wrote {len(m['samples'])} panel(s), {m['grid']} and {m['legend']} to "
              f"{Path(args.out) / key}")
    return 0
