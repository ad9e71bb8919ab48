"""``anomalyseg data download | check | synth | info``: argument parsing and printing around
:mod:`anomalyseg.data.download`, :mod:`anomalyseg.data.check` and :mod:`anomalyseg.data.synthetic`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from anomalyseg.argtypes import int_at_least, size_at_most
from anomalyseg.limits import MAX_COUNT, MAX_SEED, MAX_SYNTH_SIDE, MAX_WORKERS

log = logging.getLogger(__name__)

_SPLIT_CHOICES = ("train", "val", "test", "all")

_EPILOG = """examples:
  anomalyseg data download --root ~/data/streethazards --split all
  anomalyseg data check --root ~/data/streethazards --split test --workers 8
  anomalyseg data synth --out data/synthetic --train 200 --val 40 --test 40 --size 480x270 --seed 0
  anomalyseg data info
"""


def _download(args: argparse.Namespace) -> int:
    from anomalyseg.data.download import download_streethazards

    folders = download_streethazards(args.root, args.split, url_base=args.url_base,
                                     remove_archive=args.remove_archive, progress=not args.no_progress)
    for folder in folders:
        print(f"ready: {folder}")
    print(f"next: anomalyseg data check --root {args.root}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from anomalyseg.data.check import check_splits, format_report

    reports = check_splits(args.root, args.split, workers=args.workers, progress=not args.no_progress)
    bad = 0
    for split, report in reports.items():
        if report is None:
            print(f"{split}: not present under {Path(args.root).expanduser()}, skipped")
            continue
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


def _action(sub: argparse._SubParsersAction, name: str, func: Callable[[argparse.Namespace], int], help: str,
            description: str, examples: tuple[str, ...]) -> argparse.ArgumentParser:
    """One ``anomalyseg data <name>`` subparser: one-line help, description, examples epilog, handler."""
    epilog = "examples:\n" + "".join(f"  anomalyseg data {name} {e}".rstrip() + "\n" for e in examples)
    p = sub.add_parser(name, help=help, description=description, epilog=epilog,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=func)
    return p


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``anomalyseg data ...`` to the main parser."""
    data = subparsers.add_parser("data", help="download, check or synthesise StreetHazards data",
                                 description="StreetHazards data: download, verify, synthesise.",
                                 epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    data.set_defaults(func=lambda _args: (data.print_help(), 2)[1])
    sub = data.add_subparsers(dest="data_command", metavar="ACTION", title="actions")
    count = int_at_least(0, MAX_COUNT)
    workers = int_at_least(0, MAX_WORKERS)

    p = _action(sub, "download", _download, "fetch, verify (MD5) and safely extract the official tarballs",
                "Download the official StreetHazards tarballs into --root, resuming partial downloads, "
                "verifying the published MD5 sums and extracting safely. Work already done is skipped.",
                ("--root ~/data/streethazards", "--root ~/data/sh --split test --url-base https://mirror.example/sh"))
    p.add_argument("--root", required=True, help="folder to download and extract into")
    p.add_argument("--split", choices=_SPLIT_CHOICES, default="all",
                   help="train/val need streethazards_train.tar, test streethazards_test.tar (default: all)")
    p.add_argument("--url-base", default=None, help="mirror holding the same file names (default: the authors')")
    p.add_argument("--remove-archive", action="store_true", help="delete each tarball after extraction")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")

    p = _action(sub, "check", _check, "decode every image and label; name every bad file",
                "Decode every image and label of the chosen splits in parallel, check sizes and label "
                "values, print counts and per-class pixel shares, name every bad file. Exit code 1 if any.",
                ("--root ~/data/streethazards", "--root data/synthetic --split val --workers 2"))
    p.add_argument("--root", required=True, help="dataset root (where the tarballs were extracted)")
    p.add_argument("--split", choices=_SPLIT_CHOICES, default="all", help="split to check (default: all present)")
    p.add_argument("--workers", type=workers, default=os.cpu_count() or 1,
                   help="decoding processes (default: all cores)")
    p.add_argument("--max-listed", type=count, default=200, help="bad files listed per split (default: 200)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = _action(sub, "synth", _synth, "write synthetic StreetHazards-format data",
                "Write procedurally drawn road scenes in the official StreetHazards layout (.odgt lists, "
                "label PNGs 1..14). Anomalies (14) appear in the test split only. Deterministic by seed.",
                ("--out data/synthetic --train 200 --val 40 --test 40",
                 "--out /tmp/sh --train 8 --val 2 --test 2 --size 256x144 --seed 3"))
    p.add_argument("--out", required=True, help="output folder (must be empty or absent unless --force)")
    for split, default, what in (("train", 200, "training images"), ("val", 40, "validation images"),
                                 ("test", 40, "test images, with anomalies")):
        p.add_argument(f"--{split}", type=count, default=default, help=f"{what} (default: {default})")
    p.add_argument("--size", type=size_at_most(MAX_SYNTH_SIDE), default=(480, 270),
                   help=f"WIDTHxHEIGHT, each side <= {MAX_SYNTH_SIDE} (default: 480x270)")
    p.add_argument("--seed", type=int_at_least(0, MAX_SEED), default=0, help="random seed (default: 0)")
    p.add_argument("--workers", type=workers, default=1, help="drawing processes (default: 1)")
    p.add_argument("--force", action="store_true", help="replace the data in a non-empty --out")

    _action(sub, "info", _info, "print classes, palette, splits, download URLs and MD5s",
            "Print the StreetHazards metadata.", ("",))
