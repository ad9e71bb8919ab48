"""The GPU paths end to end (run by benchmarks/gpu_check.sh on a machine with CUDA; skipped elsewhere): one
evaluation pass on CUDA equals the CPU one, scorer fits agree, and training steps with bf16 AMP and channels_last
give finite losses and move the weights."""

from __future__ import annotations

import pytest
import torch
from tests.engine.test_evaluate import loader, make_checkpoint, make_tree

from anomalyseg.checkpoints.reload import load_model
from anomalyseg.engine.evaluate import EvalPlan, run_evaluation
from anomalyseg.engine.factory import SegLoss
from anomalyseg.engine.fit import fit_scorers
from anomalyseg.engine.train import train_one_epoch
from anomalyseg.scoring import get_scorer

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("cuda") / "sh")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("cuda") / "tiny.pt")


def test_one_pass_on_cuda_equals_cpu(tree, ckpt):
    names = ("max_logit", "msp", "energy", "entropy", "rba", "gen")
    results = {}
    for device in ("cpu", "cuda"):
        model = load_model(ckpt, device).model
        results[device] = run_evaluation(model, loader(tree), [get_scorer(n) for n in names], device, EvalPlan())
    cpu, gpu = results["cpu"], results["cuda"]
    assert gpu["segmentation"]["miou"] == pytest.approx(cpu["segmentation"]["miou"], abs=1e-6)
    for name in names:
        for protocol in ("per_image", "pooled"):
            for key in ("auroc", "aupr", "fpr95"):
                assert gpu["scorers"][name]["metrics"][protocol][key] == pytest.approx(
                    cpu["scorers"][name]["metrics"][protocol][key], abs=1e-3), (name, protocol, key)


def test_fits_on_cuda_agree_with_cpu(tree, ckpt):
    states = {}
    for device in ("cpu", "cuda"):
        model = load_model(ckpt, device).model
        scorer = fit_scorers(model, loader(tree, "val"), [get_scorer("mahalanobis")], device)[0]
        states[device] = scorer.state_dict()
    def tensors(state, prefix=""):
        for key, value in state.items():
            if isinstance(value, dict):
                yield from tensors(value, f"{prefix}{key}.")
            elif isinstance(value, torch.Tensor) and value.is_floating_point():
                yield f"{prefix}{key}", value.cpu()

    cpu, gpu = dict(tensors(states["cpu"])), dict(tensors(states["cuda"]))
    assert cpu and cpu.keys() == gpu.keys()
    for key, value in cpu.items():
        torch.testing.assert_close(gpu[key], value, rtol=1e-3, atol=1e-4, msg=key)


@pytest.mark.parametrize("amp, channels_last", [("bf16", True), ("fp16", False), ("none", True)])
def test_training_steps_with_amp(tree, ckpt, amp, channels_last):
    device = torch.device("cuda")
    model = load_model(ckpt, device).model.train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")
    batches = [{"image": torch.randn(2, 3, 64, 96), "label": torch.randint(0, 13, (2, 64, 96))} for _ in range(3)]
    loss = train_one_epoch(model, SegLoss(13).to(device), optimizer, batches, scheduler, device, 0, num_batches=3,
                           amp=amp, channels_last=channels_last, scaler=scaler, progress=False)
    assert torch.isfinite(torch.tensor(loss))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
