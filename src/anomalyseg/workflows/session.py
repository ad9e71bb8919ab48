"""What ``evaluate``, ``fit-scorers``, ``visualize`` and ``predict`` share: the checkpoint's model and contract,
the dataset (any registered one) with the transform of the requested resolution, the scorers, the loader.

:func:`open_session` is the one place where a command turns (checkpoint, dataset name, root, options) into a
model and data: every dataset goes through :mod:`anomalyseg.data.registry`, every model through
:func:`anomalyseg.checkpoints.load_model`.
"""

from __future__ import annotations

import logging
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anomalyseg import __version__
from anomalyseg.checkpoints.reload import LoadedModel, load_model
from anomalyseg.data.registry import ALL_ANOMALY_SETS, DatasetSpec, open_present, parse_datasets
from anomalyseg.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class EvalData:
    """One dataset opened for a command: its spec, the (possibly limited) dataset, where it came from."""

    spec: DatasetSpec
    dataset: Any  # the full dataset (has .info)
    data: Any  # the dataset or its first ``limit`` samples
    root: Path
    split: str
    limit: int | None

    def record(self) -> dict[str, Any]:
        """The ``dataset`` entry of a results record."""
        base = self.dataset
        return {"name": base.info.name, "key": self.spec.name,
                "preset": self.spec.name if self.spec.group == ALL_ANOMALY_SETS else None,
                "root": str(self.root.resolve()), "split": self.split,
                "folder": str(getattr(base, "folder", getattr(base, "split_dir", ""))),
                "list": str(getattr(base, "source", "")) or None, "num_images": len(self.data),
                "num_listed": getattr(base, "num_listed", len(base)), "limit": self.limit,
                "mask_convention": getattr(base.info, "mask_convention", None)}


def versions() -> dict[str, str]:
    """Versions recorded with every result."""
    import numpy as np
    import torch

    return {"anomalyseg": __version__, "torch": str(torch.__version__), "python": platform.python_version(),
            "numpy": np.__version__, "platform": platform.platform()}


def normalise_eval_at(eval_at: str | None, default: str = "label") -> str:
    """``label`` or ``model`` (``input`` is another name for ``model``)."""
    eval_at = default if eval_at is None else eval_at
    if eval_at not in ("label", "model", "input"):
        raise UserError(f"eval_at must be label, model or input, got {eval_at!r}")
    return "model" if eval_at == "input" else eval_at


def input_record(size_wh: tuple[int, int] | None, tta: str | None) -> dict[str, Any]:
    """The ``input`` entry of results and fitted states (compared between fit and evaluation)."""
    return {"size_wh": list(size_wh) if size_wh else None, "native": size_wh is None, "tta": tta or None}


def eval_transform(eval_at: str, size_wh: tuple[int, int] | None, contract_size: tuple[int, int] | None) -> Any:
    """The dataset transform for the requested resolution.

    ``size_wh`` (``--size``): the image is resized to fit inside W x H (aspect kept), labels stay native.
    Else the contract's size, when it has one: ``eval_at=model`` resizes image and mask to it (the course /
    SMIYC-validation protocol), ``label`` resizes the image alone (stretched as those protocols do).
    Else native images (``eval_at=model`` then needs a size: one-line error).
    """
    from anomalyseg.data.anomaly_folder import eval_at_transform
    from anomalyseg.data.transforms import EvalTransform

    if size_wh is not None:
        return EvalTransform(size=(size_wh[1], size_wh[0]))
    if contract_size is not None:
        return eval_at_transform(eval_at, contract_size)
    if eval_at == "model":
        raise UserError("evaluating at the model resolution needs the model input size: give --size WxH, or "
                        "size=HxW in the input contract")
    return EvalTransform()


def inference_transform(eval_at: str, size_wh: tuple[int, int] | None, contract_size: tuple[int, int] | None,
                        inference: str | None, tile: Any, overlap: float, blend: str
                        ) -> tuple[Any, Any, dict[str, Any]]:
    """``(transform, window or None, record)`` of ``--inference whole|resize|slide`` (default: resize to the
    contract's size when it has one, else whole), for :func:`eval_transform` and
    :func:`anomalyseg.engine.tta.forward`; ``record`` is the ``inference`` entry of results."""
    from anomalyseg.engine.slide import resolve_inference

    mode, resize_hw, window = resolve_inference(inference, tile, overlap, blend, contract_size)
    if window is not None and eval_at == "model":
        raise UserError("--inference slide runs on the full-resolution image: use --eval-at label with it")
    transform = eval_transform(eval_at, size_wh, resize_hw)
    record = window.describe() if window is not None else {"mode": mode, "tile_hw": list(resize_hw) if resize_hw
                                                           else None}
    return transform, window, record


def class_ids(text: str, spec: DatasetSpec) -> list[int]:
    """``other,unlabeled`` / ``3,0`` -> known class ids of ``spec`` (names case-insensitive, '_' for spaces)."""
    if not text.strip():
        return []
    if not spec.has_class_labels:
        raise UserError(f"--ignore names known classes; {spec.title} has no class labels")
    names = {n.lower().replace(" ", "_"): i for i, n in enumerate(spec.class_names)}
    ids: list[int] = []
    for raw in (t.strip() for t in text.split(",")):
        if not raw:
            continue
        key = raw.lower().replace(" ", "_")
        if key.isdigit() and int(key) < spec.num_classes:
            ids.append(int(key))
        elif key in names:
            ids.append(names[key])
        else:
            raise UserError(f"--ignore: {raw!r} is not a known class; choose from {', '.join(names)} "
                            f"(or ids 0..{spec.num_classes - 1})")
    return sorted(set(ids))


def open_datasets(dataset: str, data_root: str | Path, *, split: str | None, transform: Any,
                  limit: int | None) -> list[EvalData]:
    """Every dataset named by ``dataset`` (one name, anomaly sets joined by commas, or ``anomaly-sets``)."""
    from torch.utils.data import Subset

    specs = parse_datasets(dataset)
    root = Path(data_root)
    if specs[0].group == ALL_ANOMALY_SETS:
        if split not in (None, "validation"):
            raise UserError(f"--split names a split of a dataset with splits; {specs[0].title} is a validation "
                            "set (no split)")
        opened = open_present(specs, root, every=dataset.strip() == ALL_ANOMALY_SETS, transform=transform)
        pairs = [(s, opened[s.name]) for s in specs if s.name in opened]
    else:
        pairs = [(specs[0], specs[0].open(root, split, transform=transform, on_error="raise"))]
    out = []
    for spec, ds in pairs:
        data = ds if limit is None or limit >= len(ds) else Subset(ds, range(limit))
        out.append(EvalData(spec, ds, data, root, split or spec.eval_split, limit))
    return out


def load_checked(checkpoint: str | Path, device: Any, contract: str | None, specs: list[DatasetSpec]) -> LoadedModel:
    """The checkpoint's model, checked against the datasets' known classes (where they have class labels)."""
    labelled = [s for s in specs if s.has_class_labels]
    return load_model(checkpoint, device, contract=contract,
                      class_names=labelled[0].class_names if labelled else None)


def make_loader(data: Any, ctx: Any, batch_size: int, workers: int) -> Any:
    """The evaluation loader of this rank's shard."""
    from anomalyseg.data.samples import collate_samples
    from anomalyseg.engine.loaders import make_eval_loader

    if len(data) < ctx.world_size:
        raise UserError(f"{len(data)} image(s) cannot be shared by {ctx.world_size} processes")
    return make_eval_loader(data, batch_size=batch_size, workers=max(0, workers), rank=ctx.rank,
                            world_size=ctx.world_size, collate_fn=collate_samples,
                            pin_memory=ctx.device.type == "cuda")


def check_void(scorers: list[Any], num_outputs: int) -> None:
    """One line, before any forward pass, when a void scorer has no channel (or a channel out of range)."""
    for s in scorers:
        if not getattr(s, "needs_void_channel", False):
            continue
        index = s.params.get("void_index")
        if index is None:
            raise UserError(f"scorer '{s.name}' needs a void channel but the model's input contract has none: give "
                            "--input-contract void=K or void:void_index=K")
        if not -num_outputs <= int(index) < num_outputs:
            raise UserError(f"scorer '{s.name}': void channel {index} does not exist, the model has {num_outputs} "
                            "outputs")
