"""``anomalyseg visualize --dataset road_anomaly,...``: panels on the real-photo anomaly sets.

The set selection, the model with its input contract, the scorers and the evaluation resolution come from
the same functions ``anomalyseg evaluate --dataset ...`` uses (:mod:`anomalyseg.engine.eval_sets`), so a
panel shows exactly what was measured. ``--results results/NAME.json`` names the evaluate output: each
set reads ``NAME_<set>.json`` beside it (or NAME.json itself when it holds that set) for its pooled
thresholds, its per-image AUPR (worst / best selection), its resolution and TTA. Each set's figures go to
``OUT/<set>/`` (``panels.json`` + PNGs), which ``anomalyseg report`` shows in a section per set.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from anomalyseg.errors import UserError

log = logging.getLogger(__name__)

MANIFEST = "panels.json"
MANIFEST_FORMAT = "anomalyseg.panels/1"


def set_record(results: str | Path, key: str, name: str, num_sets: int) -> tuple[dict[str, Any], Path]:
    """The results record of set ``key``: ``results`` itself when it holds that set, else the per-set file
    ``NAME_<key>.json`` that ``evaluate --dataset`` writes beside it."""
    from anomalyseg.engine.eval_sets import set_results_path
    from anomalyseg.report.results import read_results

    given = Path(results)
    if given.is_file():
        record = read_results(given)
        preset = (record.get("dataset") or {}).get("preset")
        if preset == key:
            return record, given
        if num_sets == 1 and preset is not None:
            raise UserError(f"{given} holds results of the set {preset!r}, not of {key!r}")
    per_set = set_results_path(given, key)
    if not per_set.is_file():
        raise UserError(f"no results for {name}: neither {given} nor {per_set} holds them (give --results the "
                        "--out of `anomalyseg evaluate --dataset ...`)")
    return read_results(per_set), per_set


def visualize_sets(
    checkpoint: str | Path,
    data_root: str | Path,
    out: str | Path,
    presets: Sequence[str],
    *,
    scorer: str = "max_logit",
    num_samples: int = 4,
    ids: Sequence[str] | None = None,
    select: str = "random",
    seed: int = 0,
    threshold: str = "tpr95",
    results: str | Path | None = None,
    eval_at: str | None = None,
    input_contract: str | None = None,
    tta: str | None = None,
    device: str = "auto",
    dpi: int = 100,
    force: bool = False,
) -> dict[str, dict[str, Any]]:
    """Draw a 2x3 panel per chosen sample of every requested set (``presets`` as
    :func:`~anomalyseg.engine.eval_sets.parse_datasets` returns them: ``[]`` = every set under
    ``data_root``), a grid and a legend into ``out/<set>/``; returns ``{set: manifest}``.

    ``eval_at``: ``label`` / ``model`` (default: as in the set's results, else ``label``, as ``evaluate``).
    """
    from anomalyseg.data.anomaly_folder import eval_at_transform
    from anomalyseg.engine.checkpoint import resolve_checkpoint
    from anomalyseg.engine.distributed import resolve_device
    from anomalyseg.engine.eval_sets import load_contract_model, open_sets, set_eval_at, set_scorers
    from anomalyseg.engine.tta import TTA
    from anomalyseg.models.checkpoints import file_sha256
    from anomalyseg.scoring import scorers_from_spec
    from anomalyseg.viz.samples import results_threshold, select_samples

    out = Path(out)
    sets = open_sets(data_root, list(presets))
    for key in sets:
        if (out / key / MANIFEST).exists() and not force:
            raise UserError(f"{out / key / MANIFEST} already exists (choose another --out, or --force to overwrite)")
    made = scorers_from_spec(scorer)
    if len(made) != 1:
        raise UserError(f"--scorer takes one scorer, got {len(made)}: {scorer!r}")
    name = made[0].name
    plans: dict[str, dict[str, Any]] = {}
    for key, dataset in sets.items():  # every check that reads no image, before the model is loaded
        record, rpath = set_record(results, key, dataset.info.name, len(sets)) if results else (None, None)
        recorded_at = (record or {}).get("eval_at")
        at = set_eval_at(eval_at, default=recorded_at or "label")
        if recorded_at is not None and at != recorded_at:
            log.warning("%s was evaluated at the %s resolution, panels drawn at the %s one: its thresholds may "
                        "not fit", rpath, recorded_at, at)
        plans[key] = {
            "record": record, "path": rpath, "eval_at": at, "threshold": results_threshold(record, name, threshold),
            "tta": tta if tta is not None else ((record or {}).get("input") or {}).get("tta"),
            "chosen": select_samples(dataset.ids, num_samples, select=select, seed=seed, wanted=ids,
                                     per_image=(record or {}).get("per_image"), scorer=name)}
    ckpt_path = resolve_checkpoint(checkpoint)
    sha = file_sha256(ckpt_path)
    dev = resolve_device(device)
    model, ckpt, contract = load_contract_model(ckpt_path, input_contract, dev)
    sc = set_scorers(scorer, contract, int(ckpt["num_classes"]))[0]
    transforms = {key: eval_at_transform(plan["eval_at"], contract.size) for key, plan in plans.items()}
    manifests = {}
    for key, dataset in sets.items():
        plan = plans[key]
        record = plan["record"]
        if record is not None and (record.get("checkpoint") or {}).get("sha256") not in (None, sha):
            log.warning("%s was evaluated with another checkpoint (sha256 differs from %s): its thresholds and "
                        "per-image values may not describe this model", plan["path"], ckpt_path)
        manifests[key] = _draw_set(
            dataset, key, plan, model, sc, ckpt, contract, dev, transforms[key], TTA.parse(plan["tta"]), out / key,
            dpi=dpi, force=force,
            provenance={"checkpoint": str(ckpt_path.resolve()), "checkpoint_sha256": sha,
                        "data_root": str(Path(data_root).resolve()), "threshold_spec": threshold,
                        "selection": {"mode": "ids" if ids else select, "seed": seed, "metric": "aupr"}})
    return manifests


def _draw_set(dataset: Any, key: str, plan: dict[str, Any], model: Any, sc: Any, ckpt: dict[str, Any],
              contract: Any, device: Any, transform: Any, tta: Any, folder: Path, *, dpi: int, force: bool,
              provenance: dict[str, Any]) -> dict[str, Any]:
    """One set's panels, grid, legend and manifest."""
    from anomalyseg.report.results import jsonable
    from anomalyseg.viz import colors as C
    from anomalyseg.viz import panels as P
    from anomalyseg.viz.binary import BINARY_GRID_VIEWS, binary_legend, binary_panel_data, draw_binary_panel
    from anomalyseg.viz.samples import image_threshold, predict_sample, safe_name

    info = dataset.info
    names = list(contract.class_names) or [f"class_{i}" for i in range(int(ckpt["num_classes"]))]
    palette = C.class_palette(names, contract.void_index)
    thr_value, thr_label = plan["threshold"]
    spec = provenance["threshold_spec"]
    datas, entries = [], []
    for index in plan["chosen"]:
        pred = predict_sample(model, dataset[index], sc, device, transform=transform, tta=tta)
        value = thr_value if thr_value is not None else image_threshold(pred.score, pred.label, spec)
        data = binary_panel_data(pred.image, pred.pred, pred.confidence, pred.score, pred.label, value, palette,
                                 threshold_label=thr_label, sample_id=pred.sample_id)
        file = f"panel_{safe_name(pred.sample_id)}.png"
        if (folder / file).exists() and not force:
            raise UserError(f"{folder / file} already exists (choose another --out, or --force to overwrite)")
        title = f"{info.name} · {pred.sample_id} · {sc.name} · {ckpt.get('model_name')}"
        P.save_figure(draw_binary_panel(data, title).figure, folder / file, dpi)
        datas.append(data)
        entries.append({"id": pred.sample_id, "index": index, "file": file, "title": title, "threshold": value,
                        "size_hw": list(pred.label.shape), "stats": data.stats})
        log.info("%s %s: %s", info.name, pred.sample_id, data.summary())
    P.save_figure(P.comparison_grid(datas, BINARY_GRID_VIEWS, title=f"{info.name} · {sc.name} · {thr_label}"),
                  folder / "grid.png", dpi)
    P.save_figure(binary_legend(names, palette), folder / "legend.png", dpi)
    manifest = {
        "format": MANIFEST_FORMAT, "kind": "binary_gt", "checkpoint": provenance["checkpoint"],
        "checkpoint_sha256": provenance["checkpoint_sha256"], "model_name": ckpt.get("model_name"),
        "data_root": provenance["data_root"], "split": "validation",
        "dataset": {"key": key, "name": info.name, "folder": str(dataset.folder),
                    "mask_convention": info.mask_convention},
        "input_contract": contract.to_dict(), "eval_at": plan["eval_at"], "tta": plan["tta"],
        "scorer": sc.name, "threshold": {"spec": spec, "label": thr_label, "value": thr_value},
        "selection": provenance["selection"], "results": str(plan["path"].resolve()) if plan["path"] else None,
        "grid": "grid.png", "legend": "legend.png", "samples": entries,
    }
    (folder / MANIFEST).write_text(json.dumps(jsonable(manifest), indent=1) + "\n", encoding="utf-8")
    return manifest
