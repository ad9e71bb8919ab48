"""``anomalyseg export``: a checkpoint and its scorers as one ONNX graph
(:func:`anomalyseg.workflows.export.export_onnx`)."""

from __future__ import annotations

import argparse

from anomalyseg.argtypes import int_at_least, size_hw

EXPORT_EPILOG = """\
examples:
  anomalyseg export --checkpoint models/enet.pt --scorers max_logit:known_classes=19,energy:known_classes=19,void \\
      --out enet.onnx
  anomalyseg export --checkpoint runs/r50 --scorers max_logit,energy,mahalanobis --size 720x1280 --out r50.onnx

One graph: input 'image' (uint8 RGB, N x 3 x H x W, at the input contract's size or --size HxW), outputs
'logits' (N x C x H x W) and 'score_<scorer>' (N x H x W, higher = more anomalous) per scorer. Scaling to
[0, 1] and the normalisation the weights expect are inside the graph; fitted scorer states
(<checkpoint>.scorers.pt, from 'anomalyseg fit-scorers') are baked in. The file is checked with onnxruntime
against PyTorch before the command ends. Needs the 'export' extra: pip install 'anomalyseg[export]'.
An existing --out is kept unless --force.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``export`` subcommand."""
    p = subparsers.add_parser(
        "export", help="export a checkpoint and its scorers to one ONNX graph",
        description="Export a checkpoint's model and anomaly scorers to one ONNX file (uint8 image in, logits "
                    "and one score map per scorer out).",
        epilog=EXPORT_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="checkpoint file or run folder")
    p.add_argument("--scorers", required=True, metavar="SPEC",
                   help="scorers to include, e.g. max_logit,energy:temperature=2 (as in evaluate)")
    p.add_argument("--out", required=True, metavar="FILE", help="the .onnx file to write")
    p.add_argument("--size", type=size_hw, metavar="HxW",
                   help="input height x width (default: the checkpoint's input contract size)")
    p.add_argument("--opset", type=int_at_least(18), default=18, help="ONNX opset version (default: 18)")
    p.add_argument("--input-contract", metavar="SPEC", help="KEY=VALUE,... laid over the checkpoint's contract")
    p.add_argument("--states", metavar="FILE", help="fitted scorer states (default: <checkpoint>.scorers.pt)")
    p.add_argument("--fixed-batch", action="store_true", help="batch size fixed at 1 (default: any N)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out")
    p.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from anomalyseg.workflows.export import export_onnx

    r = export_onnx(args.checkpoint, args.out, scorers=args.scorers, size=args.size, opset=args.opset,
                    force=args.force, contract=args.input_contract, states=args.states,
                    dynamic_batch=not args.fixed_batch)
    print(f"wrote {r.path} (input image uint8 {r.batch}x3x{r.size[0]}x{r.size[1]}; outputs {', '.join(r.outputs)}; "
          f"opset {r.opset}; onnxruntime vs PyTorch: max |diff| {r.max_abs_diff:.1e}, "
          f"{r.differing:.3%} of values beyond 1e-4; {r.seconds:.0f} s)")
    return 0
