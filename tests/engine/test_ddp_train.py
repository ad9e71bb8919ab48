"""`torchrun --nproc_per_node=2 -m anomalyseg train` on gloo: DDP runs, rank 0 writes, synced validation mIoU
equals a single-process evaluation of the saved checkpoint."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from tests.engine.helpers import REPO_ROOT, subprocess_env, tiny_overrides

from anomalyseg.checkpoints.io import load_checkpoint
from anomalyseg.checkpoints.reload import load_model
from anomalyseg.config import load_config
from anomalyseg.configio import dump_config
from anomalyseg.data.samples import collate_samples
from anomalyseg.data.streethazards import StreetHazards
from anomalyseg.data.transforms import EvalTransform
from anomalyseg.engine.train import evaluate_segmentation


@pytest.mark.slow
def test_torchrun_two_cpu_processes(synth_root, tmp_path):
    out = tmp_path / "runs"
    config = tmp_path / "ddp.yaml"
    # outlier exposure with auto margins: rank 0 calibrates on its val shard, rank 1 trains with its numbers
    dump_config(load_config(None, tiny_overrides(synth_root, out, "ddp", **{
        "train.epochs": 1, "data.max_val_samples": 5, "outlier_exposure.enabled": "true",
        "outlier_exposure.loss": "energy", "outlier_exposure.margin_in": "auto",
        "outlier_exposure.margin_out": "auto", "train.amp": "bf16"})), config)  # amp: a warning on CPU
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "anomalyseg", "train", str(config), "--device", "cpu"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("epoch 1/1: mean loss") == 1  # only rank 0 logs INFO
    assert proc.stderr.count("train.amp=bf16 needs CUDA") == 1  # and warnings: rank 1 logs errors only

    assert sorted(p.name for p in out.iterdir()) == ["ddp"]  # one run folder, written by rank 0 only
    run_dir = out / "ddp"
    assert len(list((run_dir / "tb").iterdir())) == 1
    log_text = (run_dir / "train.log").read_text()
    assert "on cpu x2" in log_text and "2 steps/epoch" in log_text  # 16 samples / 2 ranks / batch 4
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert len(ckpt["rng"]) == 2 and ckpt["step"] == 2
    assert "pixels of 3 images" in ckpt["outlier_exposure"]["auto"]["margin_in"]  # rank 0's shard: 3 of 5
    assert f"margin_in {ckpt['outlier_exposure']['margin_in']:g} (auto: q0.95 of val inlier energy" in log_text
    assert not torch.equal(ckpt["rng"][0]["torch"], ckpt["rng"][1]["torch"])  # ranks draw different dropout
    record = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])

    model = load_model(run_dir / "checkpoints" / "last.pt", "cpu").model
    # 5 val images: rank 0 gets 3, rank 1 gets 2 (a padding sampler would count one image twice)
    val = torch.utils.data.Subset(StreetHazards(synth_root, "val", transform=EvalTransform()), range(5))
    loader = torch.utils.data.DataLoader(val, batch_size=1, collate_fn=collate_samples)
    single = evaluate_segmentation(model, loader, torch.device("cpu"), 13, progress=False)
    assert single["num_pixels"] == len(val) * 48 * 64  # every val pixel counted once, no padded duplicates
    assert single["miou"] == record["miou"]
    assert single["per_class_iou"] == pytest.approx(record["per_class_iou"], nan_ok=True, abs=0)
