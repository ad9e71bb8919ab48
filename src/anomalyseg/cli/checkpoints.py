"""``anomalyseg import-checkpoint``: a PyTorch-ENet / ERFNet checkpoint into anomalyseg's format, with its input
contract (:func:`anomalyseg.checkpoints.import_checkpoint`)."""

from __future__ import annotations

import argparse

IMPORT_EPILOG = """\
examples:
  anomalyseg import-checkpoint ../shared/models/enet_cityscapes_void20.pth --arch enet \\
      --contract "size=512x1024,norm=none,void=19,classes=cityscapes" --out models/enet.pt
  anomalyseg evaluate --checkpoint models/enet.pt --dataset anomaly-sets --data-root data/Validation_Dataset \\
      --scorers void,msp,max_logit,energy,entropy --eval-at model --out results/enet.json

Loads the weights strictly into the architecture written here (DataParallel 'module.' prefixes removed; a
one-line error lists missing / unexpected keys) and stores the input contract with them, so 'evaluate'
preprocesses correctly without retyping it. An existing --out is kept unless --force.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``import-checkpoint`` subcommand."""
    from anomalyseg.checkpoints.syntax import CONTRACT_HELP

    p = subparsers.add_parser(
        "import-checkpoint", help="convert a PyTorch-ENet / ERFNet checkpoint, with its input contract",
        description="Import a checkpoint saved by another codebase into an anomalyseg checkpoint.",
        epilog=IMPORT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", metavar="PATH", help="the foreign checkpoint (.pth)")
    p.add_argument("--arch", required=True, choices=("enet", "erfnet"), help="architecture of the weights")
    p.add_argument("--contract", required=True, metavar="SPEC", help=f"input contract: {CONTRACT_HELP}")
    p.add_argument("--out", required=True, metavar="CKPT", help="anomalyseg checkpoint to write")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out")
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from anomalyseg.checkpoints.contract import InputContract
    from anomalyseg.checkpoints.foreign import import_checkpoint

    ckpt = import_checkpoint(args.path, args.arch, args.contract, out=args.out, force=args.force)
    contract = InputContract.from_dict(ckpt["input_contract"])
    print(f"wrote {args.out} ({args.arch}, {ckpt['num_classes']} outputs; {contract.describe()})")
    return 0
