"""Outlier source: a folder of RGBA PNG cutouts (alpha > 0 = object), searched recursively.

Every file's header is read when the source opens, so an unreadable file or one without an alpha channel is a
one-line error before training starts, not in a DataLoader worker an hour later. A file is decoded when drawn.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from anomalyseg.data.io import DECODE_ERRORS, SampleError
from anomalyseg.data.outliers import Cutout, crop_to_alpha
from anomalyseg.errors import UserError


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info


class FolderSource:
    """RGBA PNG cutouts under ``root`` (``**/*.png``); ``sample`` crops each to its opaque pixels."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise UserError(f"outlier_exposure.root: no folder {self.root}")
        self._files = sorted((p for p in self.root.rglob("*") if p.suffix.lower() == ".png" and p.is_file()),
                             key=lambda p: p.relative_to(self.root).as_posix())
        if not self._files:
            raise UserError(f"outlier_exposure.root: no *.png cutouts in {self.root} (expected RGBA PNGs, "
                            "alpha > 0 = object)")
        for path in self._files:
            self._check_header(path)
        self.name = f"folder {self.root} ({len(self._files)} cutouts)"

    @staticmethod
    def _check_header(path: Path) -> None:
        try:
            with Image.open(path) as im:
                alpha = _has_alpha(im)
        except DECODE_ERRORS as exc:
            raise UserError(f"outlier cutout {path} cannot be read: {exc}") from None
        if not alpha:
            raise UserError(f"outlier cutout {path} has no alpha channel: a folder source needs RGBA PNG cutouts "
                            "(alpha > 0 = object)")

    @property
    def roots(self) -> tuple[Path, ...]:
        return (self.root,)

    @property
    def files(self) -> list[Path]:
        return list(self._files)

    def __len__(self) -> int:
        return len(self._files)

    def __repr__(self) -> str:
        return f"FolderSource({str(self.root)!r}, cutouts={len(self._files)})"

    def read(self, index: int) -> Cutout:
        """Cutout of file ``index``, cropped to its opaque pixels (a SampleError names a bad file)."""
        path = self._files[index]
        try:
            with Image.open(path) as im:
                rgba = np.asarray(im.convert("RGBA"))
        except DECODE_ERRORS as exc:
            raise SampleError(f"outlier cutout {path} cannot be read: {exc}") from None
        cut = crop_to_alpha(rgba[..., :3], rgba[..., 3].astype(np.float32) / 255.0)
        if cut is None:
            raise SampleError(f"outlier cutout {path} has no opaque pixel (alpha is 0 everywhere)")
        return cut

    def sample(self, rng: np.random.Generator, longer_side: int) -> Cutout:
        """A file drawn uniformly (``longer_side`` unused: the paster resizes)."""
        return self.read(int(rng.integers(len(self._files))))
