"""Every registered Hiera variant, built without weights, forward + backward on CPU at 512x512, 720x1280 and
500x900 (batch 1): prints seconds, the output size and whether every gradient is finite.

The test suite runs the tiny variants at every size and the big ones at one small size (tests/models/test_hiera.py);
this script is the full check, too slow for the suite on 2 cores.

Run: .venv/bin/python benchmarks/hiera_sizes.py [--sizes 512x512 720x1280 500x900] [--models NAME ...]
"""

from __future__ import annotations

import argparse
import time

import torch

from anomalyseg.models import available_models, build_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["512x512", "720x1280", "500x900"], help="HxW")
    parser.add_argument("--models", nargs="+", default=[m for m in available_models() if "hiera" in m])
    args = parser.parse_args()
    print(f"{'model':>26} {'size':>10} {'seconds':>8}  output          finite grads")
    for name in args.models:
        torch.manual_seed(0)
        model = build_model(name, 13, pretrained=False).train()
        for text in args.sizes:
            h, w = (int(v) for v in text.lower().split("x"))
            x = torch.randn(1, 3, h, w)
            start = time.perf_counter()
            out = model(x)
            out.logits.float().mean().backward()
            seconds = time.perf_counter() - start
            grads = [p.grad for p in model.parameters() if p.requires_grad]
            finite = all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
            print(f"{name:>26} {text:>10} {seconds:8.1f}  {tuple(out.logits.shape[-2:])!s:<15} {finite}", flush=True)
            model.zero_grad(set_to_none=True)
        del model


if __name__ == "__main__":
    main()
