"""``anomalyseg predict``: argument parsing and printing around :func:`anomalyseg.workflows.predict.predict`."""

from __future__ import annotations

import argparse
import sys

from anomalyseg.argtypes import int_at_least, size_wh

EPILOG = """\
examples:
  anomalyseg predict --checkpoint runs/r50 photos/ --out predictions/
  anomalyseg predict --checkpoint enet.pt 'shots/**/*.jpg' --recursive --scorers max_logit,energy \\
      --threshold tpr95 --results results/enet_road_anomaly.json --out predictions/
  anomalyseg predict --checkpoint enet.pt big_photo.png --inference slide --tile 512x1024 --overlap 0.33 \\
      --out predictions/
  anomalyseg predict --checkpoint enet.pt dashcam.mp4 --every 10 --threshold 2.5 --out predictions/

INPUTS: image files, folders (--recursive: with subfolders), glob patterns and videos (.mp4 .avi .mov .mkv
.webm .m4v; needs PyAV: pip install "anomalyseg[video]"). Of a video every --every N-th frame is predicted as
an image with the stem <video stem>_f<frame index, 6 digits> (predictions.csv adds frame and time), and
videos/<scorer>/<video stem>.mp4 shows its overlays at the video's frame rate / N; frames/<stem>.jpg keeps
each predicted frame (the gallery shows it).
Every output is at each image's native resolution: scores/<scorer>/<stem>.npy (float32),
heatmaps/ and overlays/<scorer>/<stem>.png, masks/<scorer>/<stem>.png (binary, when --threshold is given),
segmentation/<stem>.png, predictions.csv (per image: anomaly fraction at the threshold, max score) and
index.html (a self-contained gallery: thumbnails, photo, score map and overlay, a threshold slider; the first
--gallery-max images embedded, the rest listed). --threshold tpr95|best_f1 reads the pooled operating point
from --results (an evaluate results JSON of the same checkpoint). A rerun skips images whose outputs all
exist (--force redoes them).
Exit status: 0 when every image and video was predicted; 1 when some files could not be read (unreadable
images and videos are skipped and named); 2 on an error (nothing found, none readable, bad option, videos
without PyAV).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``predict`` subcommand."""
    from anomalyseg.cli.evaluate import inference_arguments

    p = subparsers.add_parser(
        "predict", help="anomaly score maps, masks and segmentations of unlabelled images",
        description="Run a checkpoint and its scorers on images; write every map at the image's native resolution.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image or video files, folders or glob patterns")
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="checkpoint file or run folder")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--scorers", default="max_logit", help="NAME[:KEY=VALUE...],... (default: max_logit)")
    p.add_argument("--threshold", metavar="T", help="a number, or tpr95 / best_f1 from --results (default: none: "
                   "no masks)")
    p.add_argument("--results", metavar="RESULTS.json", help="evaluate results of this checkpoint (for --threshold)")
    p.add_argument("--recursive", action="store_true", help="search folders (and ** patterns) recursively")
    p.add_argument("--every", type=int_at_least(1), default=1, metavar="N",
                   help="of videos, predict frames 0, N, 2N, ... (default: 1, every frame)")
    p.add_argument("--size", type=size_wh, metavar="WxH", help="resize the model input to fit WxH (aspect kept)")
    inference_arguments(p)
    p.add_argument("--tta", metavar="SPEC", help="test-time augmentation, e.g. scales=0.75,1.0,1.25,flip")
    p.add_argument("--input-contract", metavar="SPEC", help="override keys of the checkpoint's input contract")
    p.add_argument("--states", metavar="PATH", help="fitted scorer states (default: <checkpoint stem>.scorers.pt)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--force", action="store_true", help="redo images (and frames) whose outputs exist")
    p.add_argument("--gallery-max", type=int_at_least(0), metavar="N",
                   help="images embedded in index.html with their maps (~170 KB each with two scorers; the rest "
                   "are listed; default: 100)")
    p.set_defaults(func=handle_predict)


def handle_predict(args: argparse.Namespace) -> int:
    from anomalyseg.workflows.predict import predict

    s = predict(args.checkpoint, args.inputs, args.out, scorers=args.scorers, threshold=args.threshold,
                results=args.results, recursive=args.recursive, size=args.size, inference=args.inference,
                tile=args.tile, overlap=args.overlap, blend=args.blend, tta=args.tta,
                input_contract=args.input_contract, states=args.states, device=args.device, force=args.force,
                progress=not args.no_progress, every=args.every, gallery_max=args.gallery_max)
    print(f"predicted {len(s.predicted)} image(s)" + (f", kept {len(s.kept)} done before" if s.kept else "")
          + f"; wrote {s.out}/ (index.html, predictions.csv"
          + (f", {len(s.videos)} overlay video(s) in videos/" if s.videos else "") + ")")
    if s.failed:
        print(f"anomalyseg: warning: {len(s.failed)} file(s) could not be read and were skipped:", file=sys.stderr)
        for path, why in s.failed:
            print(f"  {path}: {why}", file=sys.stderr)
        return 1
    return 0
