"""``anomalyseg data download | check | synth | info``."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from pathlib import Path

from anomalyseg.errors import UserError

log = logging.getLogger(__name__)

_SPLIT_CHOICES = ("train", "val", "test", "all")

_EPILOG = """examples:
  anomalyseg data download --root ~/data/streethazards --split all
  anomalyseg data check --root ~/data/streethazards --split test --workers 8
  anomalyseg data synth --out data/synthetic --train 200 --val 40 --test 40 --size 480x270 --seed 0
  anomalyseg data info
"""


def _size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX,]\s*(\d+)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 480x270, got {text!r}")
    return int(match.group(1)), int(match.group(2))


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def _splits(split: str) -> list[str]:
    return ["train", "val", "test"] if split == "all" else [split]


def _download(args: argparse.Namespace) -> int:
    from anomalyseg.data.download import download_streethazards

    folders = download_streethazards(args.root, args.split, url_base=args.url_base,
                                     remove_archive=args.remove_archive, progress=not args.no_progress)
    for folder in folders:
        print(f"ready: {folder}")
    print(f"next: anomalyseg data check --root {args.root}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from anomalyseg.data.check import check_split, format_report
    from anomalyseg.data.layout import resolve_split_dir

    splits = _splits(args.split)
    if args.split == "all":  # check the parts that are there; none at all is an error
        root = Path(args.root).expanduser()
        if not root.is_dir():
            raise UserError(f"StreetHazards root not found: {root}")
        present = []
        for split in splits:
            try:
                resolve_split_dir(root, split)
                present.append(split)
            except UserError:
                print(f"{split}: not present under {root}, skipped")
        if not present:
            raise UserError(f"no StreetHazards split found under {root}")
        splits = present
    bad = 0
    for split in splits:
        report = check_split(args.root, split, workers=args.workers, progress=not args.no_progress)
        print(format_report(report, max_bad=args.max_listed))
        bad += len(report.bad)
    if bad:
        print(f"FAILED: {bad} problems (listed above)", file=sys.stderr)
        return 1
    print("OK: every file decoded, sizes and values in range")
    return 0


def _synth(args: argparse.Namespace) -> int:
    import time

    from anomalyseg.data.synthetic import write_synthetic

    start = time.perf_counter()
    out = write_synthetic(args.out, train=args.train, val=args.val, test=args.test, size=args.size,
                          seed=args.seed, workers=args.workers, overwrite=args.force)
    n = args.train + args.val + args.test
    took = time.perf_counter() - start
    print(f"wrote {n} synthetic images ({args.size[0]}x{args.size[1]}) to {out} in {took:.1f} s")
    print(f"next: anomalyseg data check --root {out}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from anomalyseg.data.info import STREETHAZARDS

    info = STREETHAZARDS
    print(f"{info.name}: {info.num_classes} known classes + anomaly (id {info.anomaly_id}), "
          f"ignore {info.ignore_index}, frames {info.image_size[1]}x{info.image_size[0]}")
    for i, (name, rgb) in enumerate(zip(info.all_names, info.palette)):
        print(f"  {i:>2} {name:<13} file value {i + info.label_offset:>2}  colour {rgb}")
    for key, layout in info.splits.items():
        print(f"  split {key:<5} {layout.expected_size:>5} samples in "
              f"{layout.archive_folder}/{layout.inner}/{layout.odgt}")
    for key, archive in info.archives.items():
        print(f"  archive {key:<5} {info.url(key)}  md5 {archive.md5}")
    print(f"paper: {info.paper['title']} ({info.paper['url']})")
    print(f"licence: {info.licence}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``anomalyseg data ...`` to the main parser."""
    fmt = argparse.RawDescriptionHelpFormatter
    data = subparsers.add_parser("data", help="download, check or synthesise StreetHazards data",
                                 description="StreetHazards data: download, verify, synthesise.",
                                 epilog=_EPILOG, formatter_class=fmt)
    data.set_defaults(func=lambda _args: (data.print_help(), 2)[1])
    sub = data.add_subparsers(dest="data_command", metavar="ACTION", title="actions")

    p = sub.add_parser(
        "download", help="fetch, verify (MD5) and safely extract the official tarballs", formatter_class=fmt,
        description="Download the official StreetHazards tarballs into --root, resuming partial downloads, "
                    "verifying the published MD5 sums and extracting safely. Work already done is skipped.",
        epilog="examples:\n  anomalyseg data download --root ~/data/streethazards\n"
               "  anomalyseg data download --root ~/data/sh --split test --url-base https://mirror.example/sh\n")
    p.add_argument("--root", required=True, help="folder to download and extract into")
    p.add_argument("--split", choices=_SPLIT_CHOICES, default="all",
                   help="train/val need streethazards_train.tar, test streethazards_test.tar (default: all)")
    p.add_argument("--url-base", default=None, help="mirror holding the same file names (default: the authors')")
    p.add_argument("--remove-archive", action="store_true", help="delete each tarball after extraction")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_download)

    p = sub.add_parser(
        "check", help="decode every image and label; name every bad file", formatter_class=fmt,
        description="Decode every image and label of the chosen splits in parallel, check sizes and label "
                    "values, print counts and per-class pixel shares, name every bad file. Exit code 1 if any.",
        epilog="examples:\n  anomalyseg data check --root ~/data/streethazards\n"
               "  anomalyseg data check --root data/synthetic --split val --workers 2\n")
    p.add_argument("--root", required=True, help="dataset root (where the tarballs were extracted)")
    p.add_argument("--split", choices=_SPLIT_CHOICES, default="all", help="split to check (default: all present)")
    p.add_argument("--workers", type=_count, default=os.cpu_count() or 1,
                   help="decoding processes (default: all cores)")
    p.add_argument("--max-listed", type=_count, default=200, help="bad files listed per split (default: 200)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_check)

    p = sub.add_parser(
        "synth", help="write synthetic StreetHazards-format data", formatter_class=fmt,
        description="Write procedurally drawn road scenes in the official StreetHazards layout (.odgt lists, "
                    "label PNGs 1..14). Anomalies (14) appear in the test split only. Deterministic by seed.",
        epilog="examples:\n  anomalyseg data synth --out data/synthetic --train 200 --val 40 --test 40\n"
               "  anomalyseg data synth --out /tmp/sh --train 8 --val 2 --test 2 --size 256x144 --seed 3\n")
    p.add_argument("--out", required=True, help="output folder (must be empty or absent unless --force)")
    p.add_argument("--train", type=_count, default=200, help="training images (default: 200)")
    p.add_argument("--val", type=_count, default=40, help="validation images (default: 40)")
    p.add_argument("--test", type=_count, default=40, help="test images, with anomalies (default: 40)")
    p.add_argument("--size", type=_size, default=(480, 270), help="WIDTHxHEIGHT (default: 480x270)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--workers", type=_count, default=1, help="drawing processes (default: 1)")
    p.add_argument("--force", action="store_true", help="replace the data in a non-empty --out")
    p.set_defaults(func=_synth)

    p = sub.add_parser("info", help="print classes, palette, splits, download URLs and MD5s",
                       formatter_class=fmt, description="Print the StreetHazards metadata.",
                       epilog="examples:\n  anomalyseg data info\n")
    p.set_defaults(func=_info)
