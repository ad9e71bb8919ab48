"""One dataset interface for training and evaluation: a closed registry of :class:`DatasetSpec`.

Each dataset declares, once, what the engine needs to train on it or evaluate on it: its known classes
(none for the binary-mask anomaly sets), which label ids are anomalies, the void label, the default anomaly
protocols and pooled FPR95 rule, the native resolution, its splits and the loader that opens a split.
``train`` and ``evaluate`` look a dataset up here by name; a name read from a config or the command line
selects only a dataset registered by the package or explicitly by the user (:func:`register_dataset`).

Adding a dataset = one loader module (a ``torch.utils.data.Dataset`` yielding the dict samples of
:mod:`anomalyseg.data.samples`) + one :func:`register_dataset` call (or a line in :func:`_builtin`).

Torch-free at import: the loaders are imported when a split is opened, so ``--help`` can list the names.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anomalyseg.constants import IGNORE_INDEX
from anomalyseg.errors import UserError

#: ``opener(root, split, transform, on_error) -> Dataset`` (samples: ``image``, ``label``, ``id``, ...).
Opener = Callable[[Path, str, Any, str], Any]

#: ``--dataset`` value meaning every registered anomaly set found under ``--data-root``.
ALL_ANOMALY_SETS = "anomaly-sets"


@dataclass(frozen=True)
class DatasetSpec:
    """What training and evaluation need to know about one dataset.

    Attributes:
        name: registry key (``--dataset``, ``data.dataset``).
        title: display name.
        class_names: the known classes, index = label id; empty for sets whose labels only say
            normal / anomaly / void (no segmentation metrics there).
        anomaly_ids: label ids of anomaly pixels in the samples' ``label`` (empty: no anomaly metrics).
        protocols: anomaly protocols evaluated by default (``per_image``, ``pooled``).
        fpr_rule: FPR95 rule of the pooled protocol (``first``: SegmentMeIfYouCan; ``interp``: the course code).
        void_is_normal: the per-image protocol counts void pixels as normal (the official StreetHazards code)
            instead of leaving them out.
        native_size: ``(H, W)`` of every frame when fixed.
        splits: the splits; ``eval_split`` is evaluated by default, ``fit_split`` is in-distribution data
            for fitting scorers and validation, ``train_split`` is trained on (None: not trainable).
        opener: opens one split (see :data:`Opener`); imported lazily by the package's own specs.
        group: ``ALL_ANOMALY_SETS`` for the binary-mask real-photo sets (``--dataset anomaly-sets``).
        folder: the set's folder name under a package root (anomaly sets), else empty.
        void_label: label value left out of every metric.
        components: SegmentMeIfYouCan component-metric track measured by default (``anomaly`` / ``obstacle``;
            None: off; any binary-mask set can ask for either).
        smiyc_name: the folder the SegmentMeIfYouCan benchmark keeps this set's outputs in (``--save-scores-format
            smiyc``; default: the registry name).
    """

    name: str
    title: str
    class_names: tuple[str, ...]
    anomaly_ids: tuple[int, ...]
    protocols: tuple[str, ...]
    fpr_rule: str
    void_is_normal: bool
    native_size: tuple[int, int] | None
    splits: tuple[str, ...]
    eval_split: str
    fit_split: str | None
    train_split: str | None
    opener: Opener
    group: str = ""
    folder: str = ""
    void_label: int = IGNORE_INDEX
    components: str | None = None
    smiyc_name: str | None = None

    @property
    def num_classes(self) -> int:
        """Known classes (0 for the binary-mask anomaly sets)."""
        return len(self.class_names)

    @property
    def has_class_labels(self) -> bool:
        """Whether the labels name the known classes (segmentation metrics apply)."""
        return bool(self.class_names)

    def open(self, root: str | Path, split: str | None = None, transform: Any = None, on_error: str = "raise") -> Any:
        """The dataset of ``split`` (default: :attr:`eval_split`) under ``root``."""
        split = split or self.eval_split
        if split not in self.splits and not (split == "validation" and "val" in self.splits):
            raise UserError(f"{self.title} has no split {split!r}; splits: {', '.join(self.splits)}")
        return self.opener(Path(root), split, transform, on_error)


_USER: dict[str, DatasetSpec] = {}


def _builtin_names() -> dict[str, str]:
    """``{name: group}`` of the package's datasets, without building their specs (torch-free, for ``--help``)."""
    from anomalyseg.data.anomaly_presets import PRESETS

    return {"streethazards": "", "cityscapes": "", **{key: ALL_ANOMALY_SETS for key in PRESETS}}


def register_dataset(spec: DatasetSpec, *, replace: bool = False) -> DatasetSpec:
    """Make ``spec`` selectable by its name; an existing name is refused unless ``replace``."""
    if (spec.name in _USER or spec.name in _builtin_names()) and not replace:
        raise UserError(f"dataset {spec.name!r} is already registered (pass replace=True to override it)")
    _USER[spec.name] = spec
    return spec


def available_datasets(group: str | None = None) -> list[str]:
    """Registered dataset names (only those of ``group`` when given): the package's first, then the user's."""
    groups = {**_builtin_names(), **{n: s.group for n, s in _USER.items()}}
    return [n for n, g in groups.items() if group is None or g == group]


def dataset_spec(name: str) -> DatasetSpec:
    """The registered spec of ``name`` (``-`` and ``_`` alike, case-insensitive); else one-line UserError."""
    key = name.strip().lower().replace("-", "_")
    if key in _USER:
        return _USER[key]
    if key not in _builtin_names():
        raise UserError(f"unknown dataset {name!r}; known: {', '.join(available_datasets())}")
    return _builtin()[key]


def parse_datasets(text: str) -> list[DatasetSpec]:
    """``--dataset`` value -> specs: one name, names joined by commas (anomaly sets only), or
    ``anomaly-sets`` (every registered anomaly set; :func:`open_present` keeps those found on disk)."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if items == [ALL_ANOMALY_SETS]:
        return [dataset_spec(n) for n in available_datasets(ALL_ANOMALY_SETS)]
    specs = [dataset_spec(t) for t in dict.fromkeys(items)]
    if not specs:
        raise UserError("--dataset is empty; known: " + ", ".join(available_datasets()))
    if len(specs) > 1 and any(s.group != ALL_ANOMALY_SETS for s in specs):
        raise UserError(f"--dataset: only anomaly sets ({', '.join(available_datasets(ALL_ANOMALY_SETS))}) can be "
                        "combined; evaluate other datasets one at a time")
    return specs


def open_present(specs: list[DatasetSpec], root: str | Path, *, every: bool, transform: Any = None) -> dict[str, Any]:
    """``{name: dataset}`` of anomaly sets under a package folder ``root`` (``root/RoadAnomaly``, ...), or
    ``root`` itself when it is the one requested set's folder. With ``every`` absent sets are skipped
    (at least one must be there), otherwise each requested set must be present."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"dataset folder not found: {root}")
    if len(specs) == 1 and (not specs[0].folder or root.name == specs[0].folder):
        return {specs[0].name: specs[0].open(root, transform=transform)}
    found = {s.name: s.open(root, transform=transform) for s in specs if (root / s.folder).is_dir()}
    missing = [s for s in specs if s.name not in found]
    if missing and not every:
        raise UserError(f"{missing[0].title}: folder {root / missing[0].folder} not found")
    if not found:
        raise UserError(f"no anomaly set under {root} (expected folders {', '.join(s.folder for s in specs)})")
    return found


# ---------------------------------------------------------------------------------------------------
# The package's datasets
# ---------------------------------------------------------------------------------------------------
def _open_streethazards(root: Path, split: str, transform: Any, on_error: str) -> Any:
    from anomalyseg.data.streethazards import StreetHazards

    return StreetHazards(root, split, transform=transform, on_error=on_error)  # type: ignore[arg-type]


def _open_cityscapes(root: Path, split: str, transform: Any, on_error: str) -> Any:
    from anomalyseg.data.cityscapes import Cityscapes

    return Cityscapes(root, split, transform=transform, on_error=on_error)  # type: ignore[arg-type]


def _anomaly_set_opener(preset: str) -> Opener:
    def open_set(root: Path, split: str, transform: Any, on_error: str) -> Any:
        from anomalyseg.data.anomaly_folder import AnomalyImageFolder

        return AnomalyImageFolder(root, preset, transform=transform)

    return open_set


@functools.cache
def _builtin() -> dict[str, DatasetSpec]:
    """The package's specs (built on first lookup: Cityscapes' class table comes with torchvision)."""
    from anomalyseg.data.anomaly_presets import PRESETS
    from anomalyseg.data.cityscapes import CITYSCAPES_CLASSES
    from anomalyseg.data.info import SPLITS, STREETHAZARDS

    specs = [
        DatasetSpec("streethazards", "StreetHazards", STREETHAZARDS.class_names, (STREETHAZARDS.anomaly_id,),
                    ("per_image", "pooled"), "first", True, STREETHAZARDS.image_size, SPLITS, "test", "val", "train",
                    _open_streethazards),
        DatasetSpec("cityscapes", "Cityscapes", CITYSCAPES_CLASSES, (), (), "first", False, (1024, 2048),
                    ("train", "val", "test"), "val", "val", "train", _open_cityscapes),
    ]
    # the SMIYC sets' tracks, and the folders the benchmark's evaluation.py keeps their outputs in
    tracks = {"smiyc_ra21": ("anomaly", "AnomalyTrack-all"), "smiyc_ro21": ("obstacle", "ObstacleTrack-all")}
    specs += [DatasetSpec(key, p.name, (), (p.anomaly_id,), ("pooled",), "interp", False, p.image_size,
                          ("validation",), "validation", None, None, _anomaly_set_opener(key),
                          group=ALL_ANOMALY_SETS, folder=p.folder, components=tracks.get(key, (None,))[0],
                          smiyc_name=tracks.get(key, (None, None))[1])
              for key, p in PRESETS.items()]
    return {s.name: s for s in specs}
