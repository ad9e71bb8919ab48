"""Finding a split inside a StreetHazards tree and listing its samples (official ``.odgt`` or directory walk).

Kept apart from the Dataset so that ``anomalyseg data check`` can list every problem instead of stopping at
the first one.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from anomalyseg.data.info import SPLITS, STREETHAZARDS, SplitLayout
from anomalyseg.errors import UserError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class Entry:
    """One listed sample: id (e.g. ``"t5/1"``), image and label paths, size declared by the list (or 0)."""

    id: str
    image: Path
    label: Path
    width: int = 0
    height: int = 0


@dataclass
class Listing:
    """Result of listing a split: usable entries, entries absent from disk, and problems found."""

    split: str
    split_dir: Path
    source: str  # the .odgt path, or "directory walk"
    entries: list[Entry]
    num_listed: int
    missing: list[Entry]
    problems: list[tuple[str, str]]  # (path, what is wrong)


def check_split_name(split: str) -> str:
    """Normalise a split name (``validation`` is accepted for ``val``); unknown names are a UserError."""
    split = {"validation": "val", "training": "train"}.get(split, split)
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    return split


def _looks_like_split_dir(path: Path, layout: SplitLayout) -> bool:
    return (path / layout.odgt).is_file() or (path / layout.images).is_dir() or (path / layout.annotations).is_dir()


def resolve_split_dir(root: str | Path, split: str) -> Path:
    """The folder holding ``split`` (``.../streethazards_train/train`` or ``.../streethazards_test/test``).

    ``root`` may be the folder the tarballs were extracted into, the ``streethazards_*`` folder, or the
    inner ``train/`` / ``test/`` folder itself.
    """
    split = check_split_name(split)
    root = Path(root).expanduser()
    if not root.exists():
        raise UserError(f"StreetHazards root not found: {root}")
    if not root.is_dir():
        raise UserError(f"StreetHazards root is not a folder: {root}")
    layout = STREETHAZARDS.splits[split]
    for candidate in (root / layout.archive_folder / layout.inner, root / layout.inner, root):
        if candidate.is_dir() and _looks_like_split_dir(candidate, layout):
            return candidate
    other = "test" if layout.inner == "train" else "train"
    hint = ""
    if (root / other).is_dir() or root.name == other or (root / f"streethazards_{other}").is_dir():
        hint = f" (this looks like the {other} part only)"
    archive = next(a.filename for a in STREETHAZARDS.archives.values() if split in a.splits)
    raise UserError(
        f"no StreetHazards {split} split under {root}{hint}: expected "
        f"{layout.archive_folder}/{layout.inner}/{layout.odgt} or .../{layout.images}/ as extracted from "
        f"{archive} (see 'anomalyseg data download --help')"
    )


def _read_odgt(path: Path) -> list[dict]:
    """Official lists are one JSON array; ADE20K-style lists have one JSON object per line. Both work."""
    text = path.read_text(encoding="utf-8").strip()
    if not text:
        return []
    try:
        data = json.loads(text)
        records = data if isinstance(data, list) else [data]
    except json.JSONDecodeError:
        try:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise UserError(f"cannot parse sample list {path}: {exc}") from exc
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or "fpath_img" not in rec or "fpath_segm" not in rec:
            raise UserError(f"{path}: record {i} lacks 'fpath_img' / 'fpath_segm'")
    return records


def _sample_id(rel_image: str, images_folder: str) -> str:
    rel = PurePosixPath(rel_image)
    with contextlib.suppress(ValueError):
        rel = rel.relative_to(images_folder)
    return str(rel.with_suffix(""))


def list_split(root: str | Path, split: str) -> Listing:
    """List ``split``: every sample whose image and label both exist, plus what is missing or wrong."""
    split = check_split_name(split)
    split_dir = resolve_split_dir(root, split)
    layout = STREETHAZARDS.splits[split]
    odgt = split_dir / layout.odgt
    entries: list[Entry] = []
    missing: list[Entry] = []
    problems: list[tuple[str, str]] = []
    if odgt.is_file():
        source = str(odgt)
        records = _read_odgt(odgt)
        for rec in records:
            entry = Entry(_sample_id(rec["fpath_img"], layout.images), split_dir / rec["fpath_img"],
                          split_dir / rec["fpath_segm"], int(rec.get("width", 0)), int(rec.get("height", 0)))
            has_image, has_label = entry.image.is_file(), entry.label.is_file()
            if has_image and has_label:
                entries.append(entry)
            elif has_image:
                problems.append((str(entry.image), f"image without label (expected {entry.label})"))
            else:
                missing.append(entry)
        num_listed = len(records)
    else:
        source = "directory walk"
        image_dir, label_dir = split_dir / layout.images, split_dir / layout.annotations
        images = sorted(
            (p for p in image_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
            key=lambda p: p.relative_to(image_dir).as_posix(),
        ) if image_dir.is_dir() else []
        for image in images:
            rel = image.relative_to(image_dir)
            label = (label_dir / rel).with_suffix(".png")
            entry = Entry(rel.with_suffix("").as_posix(), image, label)
            if label.is_file():
                entries.append(entry)
            else:
                problems.append((str(image), f"image without label (expected {label})"))
        num_listed = len(images)
    return Listing(split, split_dir, source, entries, num_listed, missing, problems)


def list_samples(root: str | Path, split: str) -> Listing:
    """Like :func:`list_split`, but any problem or an empty split is a one-line :class:`UserError`.

    A partial tree (entries of the list absent from disk, or fewer samples than the official split) is
    allowed and logged.
    """
    listing = list_split(root, split)
    if listing.problems:
        more = f" (and {len(listing.problems) - 1} more)" if len(listing.problems) > 1 else ""
        path, reason = listing.problems[0]
        raise UserError(f"{reason}: {path}{more}")
    layout = STREETHAZARDS.splits[listing.split]
    if not listing.entries:
        raise UserError(
            f"no {listing.split} samples found under {listing.split_dir} ({listing.num_listed} listed by "
            f"{listing.source}, none with both image and label present; images expected in "
            f"{listing.split_dir / layout.images})"
        )
    if listing.missing:
        log.warning(
            "partial StreetHazards %s split: %d of %d samples listed in %s are present (first missing: %s)",
            listing.split, len(listing.entries), listing.num_listed, listing.source, listing.missing[0].image,
        )
    elif listing.source == "directory walk" and len(listing.entries) != layout.expected_size:
        log.info("StreetHazards %s split: %d samples found by directory walk (the official split has %d)",
                 listing.split, len(listing.entries), layout.expected_size)
    return listing
