"""sync() under a real 2-process gloo group equals the single-process result."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from anomalyseg.metrics import AnomalyMetrics, SegmentationMetrics


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    t = (rng.random((6, 20, 24)) < 0.08).astype(np.int64)
    t[1] = 0
    s = (rng.normal(0, 1, t.shape) + 1.5 * t).astype(np.float32)
    t[rng.random(t.shape) < 0.05] = 255
    seg_t = rng.integers(0, 4, t.shape)
    seg_p = np.where(rng.random(t.shape) < 0.7, seg_t, rng.integers(0, 4, t.shape))
    return [torch.from_numpy(a) for a in (s, t, seg_p, seg_t)]


def _metrics():
    return {
        "pooled": AnomalyMetrics("pooled", fpr_rule="first"),
        "per_image": AnomalyMetrics("per_image", fpr_rule="closest"),
        "interp": AnomalyMetrics("pooled", fpr_rule="interp"),
        "seg": SegmentationMetrics(4),
    }


def _feed(ms, s, t, sp, st, idx):
    for name, m in ms.items():
        if name == "seg":
            m.update(sp[idx], st[idx])
        else:
            m.update(s[idx], t[idx])


def _summary(ms):
    out = {}
    for name, m in ms.items():
        r = m.compute()
        keys = ("miou", "pixel_accuracy") if name == "seg" else ("auroc", "aupr", "fpr95", "num_images",
                                                                  "num_images_skipped", "num_positive")
        out[name] = [r[k] for k in keys]
    out["per_image_records"] = len(ms["per_image"].per_image)
    return out


def _worker(rank: int, world: int, port: int, queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        s, t, sp, st = _data()
        ms = _metrics()
        _feed(ms, s, t, sp, st, slice(rank, None, world))  # rank r gets images r, r+2, ...
        for m in ms.values():
            m.sync()
        with pytest.raises(RuntimeError, match="twice"):
            ms["seg"].sync()
        queue.put((rank, _summary(ms)))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_sync_over_two_gloo_processes_equals_single_process():
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, 2, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    s, t, sp, st = _data()
    single = _metrics()
    _feed(single, s, t, sp, st, slice(None))
    expected = _summary(single)
    for rank in (0, 1):
        got = results[rank]
        assert got["per_image_records"] == expected["per_image_records"] == 6
        for name in ("pooled", "per_image", "interp", "seg"):
            np.testing.assert_allclose(got[name], expected[name], rtol=0, atol=1e-12, err_msg=name)


def test_sync_without_process_group_is_a_no_op():
    s, t, _, _ = _data()
    m = AnomalyMetrics("pooled")
    m.update(s, t)
    before = m.compute()
    m.sync()
    assert m.compute() == before
