"""The ``visualize`` workflow: panels of chosen samples of any registered dataset, a grid, a legend, a manifest.

Datasets with class labels (StreetHazards, Cityscapes) get a 3x3 panel per sample (input, ground truth,
prediction / overlay, confidence, errors / anomaly score, detection, TP-FP-FN-TN); the binary-mask anomaly
sets a 2x3 one (photo, prediction, anomaly mask, score, detection, outcome; void white and not counted). The
model, contract, scorer, resolution and dataset come from the same functions ``evaluate`` uses
(:mod:`anomalyseg.workflows.session`), so a panel shows what was measured. ``results`` (the ``--out`` of
``evaluate``) gives pooled thresholds, per-image AUPR (worst / best selection), resolution and TTA; for
anomaly sets each set reads its ``NAME_<set>.json``. Figures of several sets go to ``out/<set>/``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from anomalyseg.data.registry import ALL_ANOMALY_SETS
from anomalyseg.errors import UserError
from anomalyseg.files import check_output
from anomalyseg.workflows import session as S

log = logging.getLogger(__name__)

MANIFEST = "panels.json"
MANIFEST_FORMAT = "anomalyseg.panels/1"


def visualize(
    checkpoint: str | Path,
    data_root: str | Path,
    out: str | Path,
    *,
    dataset: str = "streethazards",
    split: str | None = None,
    scorer: str = "max_logit",
    num_samples: int = 4,
    ids: Sequence[str] | None = None,
    select: str = "random",
    seed: int = 0,
    threshold: str = "tpr95",
    results: str | Path | None = None,
    eval_at: str | None = None,
    size: tuple[int, int] | None = None,
    native: bool = False,
    input_contract: str | None = None,
    tta: str | None = None,
    states: str | Path | None = None,
    device: str = "auto",
    dpi: int = 100,
    force: bool = False,
) -> dict[str, dict[str, Any]]:
    """Draw the panels, grid and legend of every requested dataset; returns ``{dataset: manifest}``.

    ``size`` is ``(width, height)`` of the model input (default: as in ``results``, else native; ``native``
    forces native); ``eval_at`` ``label`` / ``model`` (default: as in ``results``, else ``label``).
    """
    from anomalyseg.checkpoints.scorer_states import default_states_path, load_fitted
    from anomalyseg.engine.distributed import resolve_device
    from anomalyseg.scoring import scorers_from_spec

    out = check_output(out, "--out", folder=True)
    datasets = S.open_datasets(dataset, data_root, split=split, transform=None, limit=None)
    grouped = datasets[0].spec.group == ALL_ANOMALY_SETS
    folders = {d.spec.name: out / d.spec.name if grouped else out for d in datasets}
    for folder in folders.values():
        if (folder / MANIFEST).exists() and not force:
            raise UserError(f"{folder / MANIFEST} already exists (choose another --out, or --force to overwrite)")
    if folders and any(f.exists() and not f.is_dir() for f in folders.values()):
        raise UserError(f"--out {out} is a file, not a folder")
    plans = {d.spec.name: _plan(d, results, grouped, scorer, threshold, eval_at, size, native, tta,
                                num_samples=num_samples, ids=ids, select=select, seed=seed) for d in datasets}
    dev = resolve_device(device)
    loaded = S.load_checked(checkpoint, dev, input_contract, [d.spec for d in datasets])
    made = scorers_from_spec(scorer, void_index=loaded.contract.void_index)
    if len(made) != 1:
        raise UserError(f"--scorer takes one scorer, got {len(made)}: {scorer!r}")
    S.check_void(made, loaded.num_outputs)
    if made[0].requires_fit:
        load_fitted(made, Path(states) if states else default_states_path(loaded.path), loaded.sha256)
    provenance = {"checkpoint": str(loaded.path.resolve()), "checkpoint_sha256": loaded.sha256,
                  "data_root": str(Path(data_root).resolve()), "threshold_spec": threshold,
                  "selection": {"mode": "ids" if ids else select, "seed": seed, "metric": "aupr"}}
    manifests = {}
    for data in datasets:
        plan = plans[data.spec.name]
        _warn_other_checkpoint(plan, loaded)
        draw = _draw_classes if data.spec.has_class_labels else _draw_binary
        manifests[data.spec.name] = draw(data, plan, loaded, made[0], dev, folders[data.spec.name], dpi=dpi,
                                         force=force, provenance=provenance)
    return manifests


def _plan(data: S.EvalData, results: str | Path | None, grouped: bool, scorer: str, threshold: str,
          eval_at: str | None, size: tuple[int, int] | None, native: bool, tta: str | None, **choice: Any
          ) -> dict[str, Any]:
    """Every check that reads no image, before the model is loaded: results, resolution, samples, threshold."""
    from anomalyseg.engine.tta import TTA
    from anomalyseg.scoring import scorers_from_spec
    from anomalyseg.viz.samples import results_threshold, select_samples

    record, rpath = (_results_record(results, data, grouped) if results else (None, None))
    recorded_at = (record or {}).get("eval_at")
    at = S.normalise_eval_at(eval_at, default=recorded_at or "label")
    if recorded_at is not None and at != S.normalise_eval_at(recorded_at):
        log.warning("%s was evaluated at the %s resolution, panels drawn at the %s one: its thresholds may not fit",
                    rpath, recorded_at, at)
    recorded_input = (record or {}).get("input") or {}
    if size is None and not native and recorded_input.get("size_wh"):
        size = tuple(int(v) for v in recorded_input["size_wh"])  # type: ignore[assignment]
    name = scorers_from_spec(scorer)[0].name
    tta_spec = tta if tta is not None else recorded_input.get("tta")
    return {"record": record, "path": rpath, "eval_at": at, "size": size, "tta": tta_spec,
            "tta_obj": TTA.parse(tta_spec),
            "threshold": results_threshold(record, name, threshold),
            "chosen": select_samples(data.dataset.ids, choice["num_samples"], select=choice["select"],
                                     seed=choice["seed"], wanted=choice["ids"],
                                     per_image=(record or {}).get("per_image"), scorer=name)}


def _results_record(results: str | Path, data: S.EvalData, grouped: bool) -> tuple[dict[str, Any], Path]:
    """The results record of ``data``: ``results`` itself when it holds that dataset, else (anomaly sets) the
    per-set file ``NAME_<set>.json`` that ``evaluate`` writes beside it."""
    from anomalyseg.report.results import read_results
    from anomalyseg.workflows.evaluate import results_path

    given = Path(results)
    if not grouped:
        return read_results(given), given
    key = data.spec.name
    if given.is_file():
        record = read_results(given)
        preset = (record.get("dataset") or {}).get("preset")
        if preset == key:
            return record, given
        if preset is not None:
            raise UserError(f"{given} holds results of the set {preset!r}, not of {key!r}")
    per_set = results_path(given, key)
    if not per_set.is_file():
        raise UserError(f"no results for {data.dataset.info.name}: neither {given} nor {per_set} holds them (give "
                        "--results the --out of `anomalyseg evaluate --dataset ...`)")
    return read_results(per_set), per_set


def _warn_other_checkpoint(plan: dict[str, Any], loaded: Any) -> None:
    record = plan["record"]
    if record is not None and (record.get("checkpoint") or {}).get("sha256") not in (None, loaded.sha256):
        log.warning("%s was evaluated with another checkpoint (sha256 differs from %s): its thresholds and "
                    "per-image values may not describe this model", plan["path"], loaded.path)


def _finite(stats: dict[str, Any]) -> dict[str, Any]:
    return {k: (v if isinstance(v, int) or math.isfinite(v) else None) for k, v in stats.items()}


def _draw_classes(data: S.EvalData, plan: dict[str, Any], loaded: Any, sc: Any, device: Any, folder: Path, *,
                  dpi: int, force: bool, provenance: dict[str, Any]) -> dict[str, Any]:
    """3x3 panels for a dataset with class labels, plus grid, legend and manifest."""
    from anomalyseg.metrics.targets import anomaly_target
    from anomalyseg.viz import panels as P
    from anomalyseg.viz.colors import as_ids
    from anomalyseg.viz.samples import image_threshold, predict_sample, safe_name

    info, spec = data.dataset.info, data.spec
    transform = S.eval_transform(plan["eval_at"], plan["size"], loaded.contract.size)
    thr_value, thr_label = plan["threshold"]
    datas, entries = [], []
    for index in plan["chosen"]:
        pred = predict_sample(loaded.model, data.dataset[index], sc, device, transform=transform, tta=plan["tta_obj"])
        target = anomaly_target(as_ids(pred.label), spec.anomaly_ids, void_label=info.ignore_index)
        spec_ = provenance["threshold_spec"]
        value = thr_value if thr_value is not None else image_threshold(pred.score, target, spec_)
        panel_data = P.panel_data(pred.image, pred.label, pred.pred, pred.confidence, pred.score, value, target,
                                  info.palette, num_classes=spec.num_classes, anomaly_ids=spec.anomaly_ids,
                                  threshold_label=thr_label, sample_id=pred.sample_id)
        name = f"panel_{safe_name(pred.sample_id)}.png"
        _refuse_existing(folder / name, force)
        panel = P.draw_panel(panel_data, f"{pred.sample_id} · {sc.name} · {loaded.checkpoint.get('model_name')}")
        P.save_figure(panel.figure, folder / name, dpi)
        datas.append(panel_data)
        entries.append({"id": pred.sample_id, "index": index, "file": name, "threshold": value,
                        "stats": _finite(panel_data.stats)})
        log.info("%s: %s", pred.sample_id, panel_data.summary())
    P.save_figure(P.comparison_grid(datas, title=f"{sc.name} · {thr_label}"), folder / "grid.png", dpi)
    P.save_figure(P.palette_legend(info.all_names, info.palette), folder / "legend.png", dpi)
    manifest = {
        "format": MANIFEST_FORMAT, "checkpoint": provenance["checkpoint"],
        "checkpoint_sha256": provenance["checkpoint_sha256"], "model_name": loaded.checkpoint.get("model_name"),
        "data_root": provenance["data_root"], "split": data.split, "scorer": sc.name,
        "threshold": {"spec": provenance["threshold_spec"], "label": thr_label, "value": thr_value},
        "selection": provenance["selection"], "results": str(Path(plan["path"]).resolve()) if plan["path"] else None,
        "grid": "grid.png", "legend": "legend.png", "samples": entries,
    }
    return _write_manifest(folder, manifest)


def _draw_binary(data: S.EvalData, plan: dict[str, Any], loaded: Any, sc: Any, device: Any, folder: Path, *,
                 dpi: int, force: bool, provenance: dict[str, Any]) -> dict[str, Any]:
    """2x3 panels for a binary-mask anomaly set (no class labels), plus grid, legend and manifest."""
    from anomalyseg.viz import colors as C
    from anomalyseg.viz import panels as P
    from anomalyseg.viz.binary import BINARY_GRID_VIEWS, binary_legend, binary_panel_data, draw_binary_panel
    from anomalyseg.viz.samples import image_threshold, predict_sample, safe_name

    info, contract = data.dataset.info, loaded.contract
    transform = S.eval_transform(plan["eval_at"], plan["size"], contract.size)
    names = list(contract.class_names) or [f"class_{i}" for i in range(loaded.num_outputs)]
    palette = C.class_palette(names, contract.void_index)
    thr_value, thr_label = plan["threshold"]
    spec = provenance["threshold_spec"]
    datas, entries = [], []
    for index in plan["chosen"]:
        pred = predict_sample(loaded.model, data.dataset[index], sc, device, transform=transform, tta=plan["tta_obj"])
        value = thr_value if thr_value is not None else image_threshold(pred.score, pred.label, spec)
        panel_data = binary_panel_data(pred.image, pred.pred, pred.confidence, pred.score, pred.label, value,
                                       palette, threshold_label=thr_label, sample_id=pred.sample_id)
        file = f"panel_{safe_name(pred.sample_id)}.png"
        _refuse_existing(folder / file, force)
        title = f"{info.name} · {pred.sample_id} · {sc.name} · {loaded.checkpoint.get('model_name')}"
        P.save_figure(draw_binary_panel(panel_data, title).figure, folder / file, dpi)
        datas.append(panel_data)
        entries.append({"id": pred.sample_id, "index": index, "file": file, "title": title, "threshold": value,
                        "size_hw": list(pred.label.shape), "stats": panel_data.stats})
        log.info("%s %s: %s", info.name, pred.sample_id, panel_data.summary())
    P.save_figure(P.comparison_grid(datas, BINARY_GRID_VIEWS, title=f"{info.name} · {sc.name} · {thr_label}"),
                  folder / "grid.png", dpi)
    P.save_figure(binary_legend(names, palette), folder / "legend.png", dpi)
    manifest = {
        "format": MANIFEST_FORMAT, "kind": "binary_gt", "checkpoint": provenance["checkpoint"],
        "checkpoint_sha256": provenance["checkpoint_sha256"], "model_name": loaded.checkpoint.get("model_name"),
        "data_root": provenance["data_root"], "split": "validation",
        "dataset": {"key": data.spec.name, "name": info.name, "folder": str(data.dataset.folder),
                    "mask_convention": info.mask_convention},
        "input_contract": contract.to_dict(), "eval_at": plan["eval_at"], "tta": plan["tta"],
        "scorer": sc.name, "threshold": {"spec": spec, "label": thr_label, "value": thr_value},
        "selection": provenance["selection"], "results": str(Path(plan["path"]).resolve()) if plan["path"] else None,
        "grid": "grid.png", "legend": "legend.png", "samples": entries,
    }
    return _write_manifest(folder, manifest)


def _refuse_existing(path: Path, force: bool) -> None:
    if path.exists() and not force:
        raise UserError(f"{path} already exists (choose another --out, or --force to overwrite)")


def _write_manifest(folder: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    from anomalyseg.files import atomic_write
    from anomalyseg.report.results import jsonable


    atomic_write(folder / MANIFEST, json.dumps(jsonable(manifest), indent=1) + "\n")
    return manifest
