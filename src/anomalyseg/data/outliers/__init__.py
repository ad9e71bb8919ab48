"""Outlier sources for outlier exposure: where the objects pasted into training crops come from.

Every source yields :class:`Cutout` s (an RGB patch and its alpha: > 0 = object) through one small interface,
:class:`OutlierSource`; :func:`open_outlier_source` opens one by name:

- ``procedural`` (:mod:`.procedural`): objects generated on the fly, a family disjoint from the synthetic test
  anomalies of :mod:`anomalyseg.data.synthetic` (other shapes, textures and colours, no shared code);
- ``folder`` (:mod:`.folder`): RGBA PNG cutouts in a folder (alpha > 0 = object);
- ``coco`` (:mod:`.coco`): COCO-style images + instance masks (``instances_*.json``), the classes the target
  dataset labels as known left out (:data:`~anomalyseg.data.outliers.coco.DEFAULT_EXCLUDED`); needs
  ``pycocotools`` (``pip install "anomalyseg[coco]"``).

:mod:`.paste` puts cutouts into training crops (:class:`~anomalyseg.data.outliers.paste.PasteOutliers`). The
guard that keeps a source away from the evaluation data is the engine's
(:func:`anomalyseg.engine.guards.check_outlier_source`): it reads :attr:`OutlierSource.roots` and
:attr:`OutlierSource.files`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np

from anomalyseg.errors import UserError

#: Names accepted by :func:`open_outlier_source` (``outlier_exposure.source``).
SOURCES = ("procedural", "folder", "coco")


class Cutout(NamedTuple):
    """One object: ``rgb`` ``(h, w, 3)`` uint8 and ``alpha`` ``(h, w)`` float32 in [0, 1] (> 0: object)."""

    rgb: np.ndarray
    alpha: np.ndarray


@runtime_checkable
class OutlierSource(Protocol):
    """What the paster and the guard need from a source of outlier objects."""

    name: str  #: short description for logs ("folder /data/cutouts (812 files)")

    @property
    def roots(self) -> tuple[Path, ...]:
        """Folders the source reads (empty for a generated source)."""

    @property
    def files(self) -> Sequence[Path]:
        """Files the source reads cutouts from, in a fixed order (empty for a generated source)."""

    def sample(self, rng: np.random.Generator, longer_side: int) -> Cutout:
        """One cutout drawn with ``rng`` only; ``longer_side`` is the size it will be pasted at (a generated
        source draws at that size, a file source may return any size: the paster resizes)."""


def crop_to_alpha(rgb: np.ndarray, alpha: np.ndarray) -> Cutout | None:
    """The cutout cropped to the bounding box of ``alpha > 0``; None when no pixel is opaque."""
    rows, cols = np.flatnonzero(alpha.any(axis=1)), np.flatnonzero(alpha.any(axis=0))
    if rows.size == 0:
        return None
    ys, xs = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
    return Cutout(np.ascontiguousarray(rgb[ys, xs]), np.ascontiguousarray(alpha[ys, xs], dtype=np.float32))


def open_outlier_source(
    source: str, *, root: str | Path | None = None, annotations: str | Path | None = None,
    exclude_classes: Sequence[str] | None = None, dataset: str | None = None, shapes: Sequence[str] | None = None,
) -> OutlierSource:
    """The outlier source ``source`` (one of :data:`SOURCES`), checked: an empty or unreadable source is a
    one-line UserError. ``dataset`` (the training dataset's registry name) picks COCO's default exclusions
    when ``exclude_classes`` is None; ``shapes``: the procedural source's shapes (None: all)."""
    if shapes is not None and source != "procedural":
        raise UserError(f"outlier_exposure.shapes selects procedural shapes; source={source} has none (leave it null)")
    if source == "procedural":
        from anomalyseg.data.outliers.procedural import ProceduralSource

        return ProceduralSource(shapes)
    if source not in SOURCES:
        raise UserError(f"outlier_exposure.source={source!r}: choose one of {', '.join(SOURCES)}")
    if not root:
        raise UserError(f"outlier_exposure.source={source} needs outlier_exposure.root (the folder of "
                        f"{'RGBA PNG cutouts' if source == 'folder' else 'COCO images'})")
    if source == "folder":
        from anomalyseg.data.outliers.folder import FolderSource

        return FolderSource(root)
    if not annotations:
        raise UserError("outlier_exposure.source=coco needs outlier_exposure.annotations (an instances_*.json)")
    from anomalyseg.data.outliers.coco import CocoSource

    return CocoSource(root, annotations, exclude_classes=exclude_classes, dataset=dataset)


__all__ = ["SOURCES", "Cutout", "OutlierSource", "crop_to_alpha", "open_outlier_source"]
