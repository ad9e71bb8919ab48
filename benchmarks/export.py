"""Benchmark: images/s of the same exported graph in PyTorch and in onnxruntime, on CPU.

Both run the module that ``anomalyseg export`` writes (uint8 image -> normalisation -> model -> logits and the
scores; :func:`anomalyseg.workflows.export.graph_module`): PyTorch eagerly in ``torch.no_grad`` (scorers on their
torch side, as in the graph), onnxruntime on the written file (CPUExecutionProvider, all graph optimisations),
same thread count, same batches of real photos (or random images without ``--photos``). One warm-up batch, then
``--repeats`` timed batches each; the max |onnxruntime - PyTorch| over them is printed too.

Run: .venv/bin/python benchmarks/export.py --checkpoint /tmp/enet.pt \\
         --scorers max_logit:known_classes=19,energy:known_classes=19,void \\
         [--photos '../shared/data/road_anomaly/*/images/*'] [--batch 1] [--repeats 5] [--threads N] [--size HxW]
(the ENet checkpoint: anomalyseg import-checkpoint ../shared/models/enet_cityscapes_void20.pth --arch enet
 --contract "size=512x1024,norm=none,void=19,classes=cityscapes" --out /tmp/enet.pt)
"""

from __future__ import annotations

import argparse
import glob
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from anomalyseg.argtypes import size_hw
from anomalyseg.metrics.backend import torch_path_on_cpu
from anomalyseg.workflows.export import compare, export_onnx, graph_module, onnx_session, resolve_size


def batches(photos: str | None, n: int, batch: int, hw: tuple[int, int]) -> list[np.ndarray]:
    """``n`` uint8 batches (batch, 3, H, W): real photos resized to ``hw`` (bilinear), or random pixels."""
    if photos:
        from PIL import Image

        files = sorted(glob.glob(photos))
        if not files:
            raise SystemExit(f"no photo matches {photos!r}")
        images = [np.asarray(Image.open(files[i % len(files)]).convert("RGB").resize((hw[1], hw[0]),
                                                                                     Image.BILINEAR))
                  for i in range(n * batch)]
        stack = np.stack([im.transpose(2, 0, 1) for im in images])
    else:
        stack = np.random.default_rng(0).integers(0, 256, (n * batch, 3, *hw), dtype=np.uint8)
    return [np.ascontiguousarray(stack[i * batch:(i + 1) * batch]) for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--scorers", default="max_logit,energy")
    parser.add_argument("--size", type=size_hw, help="HxW (default: the checkpoint's contract size)")
    parser.add_argument("--photos", help="glob of photos (default: random images)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    graph, made, loaded = graph_module(args.checkpoint, args.scorers)
    hw = resolve_size(loaded.contract.size, args.size, loaded.path)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model.onnx"
        t0 = time.perf_counter()
        export_onnx(args.checkpoint, out, scorers=args.scorers, size=args.size)
        export_s = time.perf_counter() - t0
        session = onnx_session(out, threads=args.threads)
        data = batches(args.photos, args.repeats + 1, args.batch, hw)
        names = ["logits", *(f"score_{s.name}" for s in made)]

        def torch_run(x: np.ndarray) -> list[np.ndarray]:
            with torch_path_on_cpu(), torch.no_grad():
                return [t.numpy() for t in graph(torch.from_numpy(x))]

        def ort_run(x: np.ndarray) -> list[np.ndarray]:
            return session.run(None, {"image": x})

        rates, worst, differing = {}, 0.0, 0.0
        for label, fn in (("pytorch", torch_run), ("onnxruntime", ort_run)):
            fn(data[0])  # warm-up
            start = time.perf_counter()
            for x in data[1:]:
                fn(x)
            rates[label] = args.repeats * args.batch / (time.perf_counter() - start)
        for x in data[1:]:
            w, f = compare(torch_run(x), ort_run(x), names)
            worst, differing = max(worst, w), max(differing, f)

    print(f"{loaded.checkpoint.get('model_name')} at {hw[0]}x{hw[1]}, batch {args.batch}, scorers "
          f"{', '.join(s.name for s in made)}; {args.threads} threads, {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}")
    print(f"export + onnxruntime check: {export_s:.1f} s")
    for label, rate in rates.items():
        print(f"{label:12s} {rate:7.2f} images/s")
    print(f"onnxruntime / pytorch: {rates['onnxruntime'] / rates['pytorch']:.2f}x; max |diff| {worst:.2e}, "
          f"{differing:.3%} of values beyond 1e-4 (worst batch)")


if __name__ == "__main__":
    main()
