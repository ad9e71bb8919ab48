"""ComponentMetrics (SegmentMeIfYouCan sIoU / PPV / component F1) against an independent reference.

The reference below is written from the benchmark's definition (SegmentMeIfYouCan/road-anomaly-benchmark,
road_anomaly_benchmark/metrics/instance_segmentation.py: default_instancer, segment_metrics, aggregate) with
scipy.ndimage.label and one boolean mask per component, the slow obvious way; it shares no code with the module.
Three small frames are also worked out by hand below, so a misunderstanding shared by both would show.
"""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from scipy import ndimage

from anomalyseg.metrics import ComponentMetrics
from anomalyseg.metrics.components import TRACKS, label_components

TAUS = np.linspace(0.25, 0.75, 11, endpoint=True)
EIGHT = np.ones((3, 3), dtype=int)


# ---- the independent reference ----------------------------------------------------------------------------
def reference_frame(pred, target, min_pred, min_gt, void=255):
    """(sIoU of each counted gt component, PPV of each counted predicted component) of one frame."""
    target = np.asarray(target, dtype=np.int64)
    gt_lab, n_gt = ndimage.label(target == 1, EIGHT)
    pred_lab, n_pred = ndimage.label(np.asarray(pred, bool) & (target != void), EIGHT)
    for j in range(1, n_pred + 1):  # small predicted components go (sized before the gt voiding below)
        if np.count_nonzero(pred_lab == j) < min_pred:
            pred_lab[pred_lab == j] = 0
    t = target.copy()
    for k in range(n_gt + 1):  # label 0 too, as the benchmark's loop does
        if np.count_nonzero(gt_lab == k) < min_gt:
            t[gt_lab == k] = void
    roi = t != void
    g, q = gt_lab[roi], pred_lab[roi]
    siou = []
    for k in np.unique(g[g > 0]):
        on_k = g == k
        touching = np.unique(q[on_k & (q > 0)])
        in_p = np.isin(q, touching) & (q > 0)
        inter = np.count_nonzero(on_k & in_p)
        a = np.count_nonzero(in_p & (g > 0) & ~on_k)
        siou.append(inter / (np.count_nonzero(in_p) + np.count_nonzero(on_k) - inter - a))
    ppv = []
    for j in np.unique(q[q > 0]):
        on_j = q == j
        ppv.append(np.count_nonzero(on_j & (g > 0)) / np.count_nonzero(on_j))
    return np.array(siou, dtype=float), np.array(ppv, dtype=float)


def reference(frames, track):
    min_pred, min_gt = TRACKS[track]
    per_frame = [reference_frame(p, t, min_pred, min_gt) for p, t in frames]
    tp = np.array([sum(int(np.sum(s >= tau)) for s, _ in per_frame) for tau in TAUS])
    fn = np.array([sum(int(np.sum(s < tau)) for s, _ in per_frame) for tau in TAUS])
    fp = np.array([sum(int(np.sum(v < tau)) for _, v in per_frame) for tau in TAUS])
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = 2 * tp / (2 * tp + fn + fp)
    n_gt = sum(s.size for s, _ in per_frame)
    n_pred = sum(v.size for _, v in per_frame)
    siou = sum(np.sum(s) for s, _ in per_frame) / n_gt if n_gt else np.nan
    ppv = sum(np.sum(v) for _, v in per_frame) / n_pred if n_pred else np.nan
    return {"siou_gt": siou, "ppv": ppv, "f1": f1, "f1_mean": float(np.mean(f1)), "num_gt_components": n_gt,
            "num_pred_components": n_pred}


def run(frames, track):
    m = ComponentMetrics(track)
    for p, t in frames:
        m.update(p, t)
    return m.compute()


def assert_matches(got, exp, atol=1e-12):
    assert got["num_gt_components"] == exp["num_gt_components"]
    assert got["num_pred_components"] == exp["num_pred_components"]
    np.testing.assert_allclose(got["f1"], exp["f1"], rtol=0, atol=atol)
    for key in ("siou_gt", "ppv", "f1_mean"):
        np.testing.assert_allclose(got[key], exp[key], rtol=0, atol=atol, err_msg=key)
    np.testing.assert_equal([got["f1_25"], got["f1_50"], got["f1_75"]], np.array(got["f1"])[[0, 5, 10]])


# ---- hand-built frames ---------------------------------------------------------------------------------------
def frame_a_term():
    """Obstacle-track frame: one prediction over two gt components, a dropped 49-px prediction, a 9-px gt
    component (void) under a 50-px prediction that is kept because it is sized before the voiding."""
    t = np.zeros((20, 40), np.int64)
    p = np.zeros((20, 40), bool)
    t[2:7, 2:12] = 1  # A: 50 px
    t[2:7, 20:30] = 1  # B: 50 px
    p[2:7, 2:25] = True  # X: 115 px = all of A, 25 px of B, 40 px normal
    p[12:17, 30:40] = True  # Y: 50 px on normal
    p[12:19, 2:9] = True  # Z: 49 px, dropped
    t[15:18, 20:23] = 1  # C: 9 px < 10 -> void
    p[14:19, 18:28] = True  # W: 50 px (41 counted), on C and normal
    return p, t


def frame_nested():
    """Obstacle-track frame: two squares touching diagonally (one component), a ring around a blob (two
    components) under one filled prediction, a prediction mostly on void (16 px left: dropped)."""
    t = np.zeros((24, 24), np.int64)
    p = np.zeros((24, 24), bool)
    t[0:4, 0:4] = 1
    t[4:8, 4:8] = 1  # D: 32 px, one component through the diagonal contact
    t[10:19, 10:19] = 1
    t[11:18, 11:18] = 0  # R: ring of 81 - 49 = 32 px
    t[13:16, 13:17] = 1  # Bl: 12 px inside the ring, not touching it
    p[0:8, 0:8] = True  # P2: 64 px, 32 on D
    p[10:19, 10:19] = True  # P1: 81 px, 32 on R, 12 on Bl
    t[0:8, 12:20] = 255
    p[0:8, 10:20] = True  # P3: only cols 10-11 survive the void: 16 px, dropped
    return p, t


def frame_limits():
    """Anomaly-track frame at the size limits: gt 100 px (kept) and 99 px (void), predictions of 500 px
    (kept) and 499 px (dropped)."""
    t = np.zeros((50, 60), np.int64)
    p = np.zeros((50, 60), bool)
    t[0:10, 0:10] = 1  # E: 100 px, kept
    p[0:10, 0:50] = True  # Q: 500 px, kept; covers E and 400 normal px
    t[20:29, 0:11] = 1  # F: 99 px -> void
    p[20:30, 0:50] = True  # Q2: 500 px, 401 counted, none on gt
    p[40:49, 0:55] = True
    p[49, 0:4] = True  # Q3: 495 + 4 = 499 px, dropped
    return p, t


def test_hand_computed_a_term_frame():
    r = run([frame_a_term()], "obstacle")
    # sIoU(A) = 50 / (115 + 50 - 50 - 25), sIoU(B) = 25 / (115 + 50 - 25 - 50); PPV X = 75/115, Y = W = 0
    assert r["num_gt_components"] == 2 and r["num_pred_components"] == 3
    assert r["siou_gt"] == pytest.approx((50 / 90 + 25 / 90) / 2, abs=1e-15)
    assert r["ppv"] == pytest.approx((75 / 115) / 3, abs=1e-15)
    tp = np.array([2, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0])
    fp = np.array([2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3])  # X's PPV 0.652 counts from tau = 0.70
    f1 = 2 * tp / (2 * tp + (2 - tp) + fp)
    np.testing.assert_allclose(r["f1"], f1, rtol=0, atol=1e-15)
    assert r["f1"][:2] == pytest.approx([2 / 3, 0.4])
    assert r["f1_mean"] == pytest.approx((2 / 3 + 6 * 0.4) / 11, abs=1e-15)
    assert r["thresholds"] == pytest.approx([0.25 + 0.05 * i for i in range(11)])
    # the anomaly track keeps nothing of this frame: NaN values, zero counts
    e = run([frame_a_term()], "anomaly")
    assert e["num_gt_components"] == e["num_pred_components"] == 0
    assert all(np.isnan(e[k]) for k in ("siou_gt", "ppv", "f1_25", "f1_50", "f1_75", "f1_mean"))


def test_hand_computed_nested_and_diagonal_frame():
    r = run([frame_nested()], "obstacle")
    # D: 32 / 64; R: 32 / (81 + 32 - 32 - 12); Bl: 12 / (81 + 12 - 12 - 32); PPV P2 = 32/64, P1 = 44/81
    assert r["num_gt_components"] == 3 and r["num_pred_components"] == 2
    assert r["siou_gt"] == pytest.approx((0.5 + 32 / 69 + 12 / 49) / 3, abs=1e-15)
    assert r["ppv"] == pytest.approx((0.5 + 44 / 81) / 2, abs=1e-15)
    f1 = [0.8] * 5 + [0.5] + [0.0] * 5  # TP 2,2,2,2,2,1,0...; FN 3-TP; FP 0 x6 then 2
    np.testing.assert_allclose(r["f1"], f1, rtol=0, atol=1e-15)
    assert r["f1_mean"] == pytest.approx(4.5 / 11, abs=1e-15)


def test_hand_computed_size_limits_frame():
    r = run([frame_limits()], "anomaly")
    # gt E only (sIoU 100/500); predictions Q (PPV 0.2) and Q2 (PPV 0, its 99 px on F are void)
    assert r["num_gt_components"] == 1 and r["num_pred_components"] == 2
    assert r["siou_gt"] == pytest.approx(0.2, abs=1e-15)
    assert r["ppv"] == pytest.approx(0.1, abs=1e-15)
    assert r["f1"] == [0.0] * 11  # TP 0, FN 1, FP 2 at every tau
    # the obstacle track keeps F (99 >= 10) and Q3 (499 >= 50)
    o = run([frame_limits()], "obstacle")
    assert o["num_gt_components"] == 2 and o["num_pred_components"] == 3


def test_background_quirk_of_the_benchmark_code():
    # 52 anomaly px, 8 normal px: the benchmark's loop voids label 0 (8 < 10), so the prediction over the whole
    # frame scores sIoU = PPV = 1 instead of 52/60
    t = np.zeros((6, 10), np.int64)
    t[0:5] = 1
    t[5, 0:2] = 1
    p = np.ones((6, 10), bool)
    r = run([(p, t)], "obstacle")
    assert r["siou_gt"] == 1.0 and r["ppv"] == 1.0
    assert_matches(r, reference([(p, t)], "obstacle"))


@pytest.mark.parametrize("track", ["anomaly", "obstacle"])
def test_hand_frames_match_reference(track):
    frames = [frame_a_term(), frame_nested(), frame_limits()]
    for f in frames:
        assert_matches(run([f], track), reference([f], track))
    assert_matches(run(frames, track), reference(frames, track))


# ---- edge cases against the reference ----------------------------------------------------------------------
def _blank(h=30, w=40):
    return np.zeros((h, w), bool), np.zeros((h, w), np.int64)


def test_empty_frames():
    p, t = _blank()
    r = run([(p, t)], "obstacle")
    assert r["num_gt_components"] == r["num_pred_components"] == 0 and np.isnan(r["f1_mean"])
    # gt only: sIoU 0, every gt component an FN, F1 0; no predicted component -> PPV NaN
    t2 = t.copy()
    t2[5:10, 5:10] = 1
    r = run([(p, t2)], "obstacle")
    assert r["siou_gt"] == 0.0 and np.isnan(r["ppv"]) and r["f1"] == [0.0] * 11
    assert_matches(r, reference([(p, t2)], "obstacle"))
    # prediction only: PPV 0, sIoU NaN, F1 0
    p3 = p.copy()
    p3[5:15, 5:15] = True
    r = run([(p3, t)], "obstacle")
    assert np.isnan(r["siou_gt"]) and r["ppv"] == 0.0 and r["f1"] == [0.0] * 11
    # an empty frame adds nothing
    assert_matches(run([(p3, t), (p, t), (p, t2)], "obstacle"), reference([(p3, t), (p, t2)], "obstacle"))


def test_prediction_on_void_is_ignored_and_void_splits_components():
    p, t = _blank()
    t[5:15, 5:15] = 1
    p[5:15, 0:30] = True  # 300 px
    t[:, 20] = 255  # splits the prediction into 200 + 90 px
    r = run([(p, t)], "obstacle")
    assert r["num_pred_components"] == 2
    assert r["siou_gt"] == pytest.approx(100 / 200)  # the 90 px beyond the void line are not part of P(k)
    assert r["ppv"] == pytest.approx(0.25)
    assert_matches(r, reference([(p, t)], "obstacle"))
    t[5:15, 15:30] = 255  # now all of it beyond the gt is void except cols 0-4
    assert_matches(run([(p, t)], "obstacle"), reference([(p, t)], "obstacle"))


def test_diagonal_gt_contact_joins_components():
    p, t = _blank()
    t[0:5, 0:5] = 1
    t[5:10, 5:10] = 1
    p[0:5, 0:12] = True
    r = run([(p, t)], "obstacle")
    assert r["num_gt_components"] == 1
    assert_matches(r, reference([(p, t)], "obstacle"))


def test_tiny_components_around_both_limits():
    for track in TRACKS:
        min_pred, min_gt = TRACKS[track]
        frames = []
        for dg in (-1, 0, 1):
            for dp in (-1, 0, 1):
                h, w = 60, 80 if track == "obstacle" else 900
                p, t = np.zeros((h, w), bool), np.zeros((h, w), np.int64)
                t.reshape(-1)[: min_gt + dg] = 1  # a gt strip of min_gt + dg pixels along the first rows
                p.reshape(-1)[w * 30 : w * 30 + min_pred + dp] = True  # a predicted strip, away from it
                p.reshape(-1)[: (min_gt + dg) // 2] = True  # a prediction piece on the gt strip
                frames.append((p, t))
        for f in frames:
            assert_matches(run([f], track), reference([f], track))
        assert_matches(run(frames, track), reference(frames, track))


# ---- random frames -----------------------------------------------------------------------------------------
def _random_frame(rng, h, w, blob):
    """Smooth random fields thresholded: blobs of many sizes, some touching, near both tracks' limits."""
    def field(sigma):
        return ndimage.gaussian_filter(rng.normal(size=(h, w)), sigma)

    f = field(blob)
    t = (f > np.quantile(f, rng.uniform(0.75, 0.97))).astype(np.int64)
    noisy = f + rng.uniform(0.1, 0.6) * f.std() * field(blob / 2) / field(blob / 2).std()
    p = noisy > np.quantile(noisy, rng.uniform(0.7, 0.97))
    v = field(blob * 2)
    t[v > np.quantile(v, rng.uniform(0.85, 1.0))] = 255
    if rng.random() < 0.3:
        t[rng.random((h, w)) < 0.01] = 255  # scattered void pixels split predictions
    return p, t


@pytest.mark.parametrize("track, h, w, blob", [("obstacle", 48, 64, 2.0), ("anomaly", 160, 240, 5.0)])
def test_random_frames_match_reference(track, h, w, blob):
    rng = np.random.default_rng(7)
    frames = [_random_frame(rng, h, w, blob) for _ in range(25)]
    got, exp = run(frames, track), reference(frames, track)
    assert exp["num_gt_components"] > 20 and exp["num_pred_components"] > 20  # the frames are not trivial
    assert 0 < exp["siou_gt"] < 1 and 0 < exp["ppv"] < 1
    assert_matches(got, exp)


def test_random_frames_per_frame_match_reference():
    rng = np.random.default_rng(11)
    for _ in range(40):
        p, t = _random_frame(rng, 40, 56, rng.uniform(1.0, 3.0))
        assert_matches(run([(p, t)], "obstacle"), reference([(p, t)], "obstacle"))


def test_label_components_equals_scipy():
    rng = np.random.default_rng(3)
    for _ in range(200):
        h, w = rng.integers(1, 30, 2)
        m = rng.random((h, w)) < rng.random()
        lab, n = label_components(m)
        ref, n_ref = ndimage.label(m, EIGHT)
        assert n == n_ref and np.array_equal(lab, ref)  # same numbering too (raster order of first pixel)
    snake = np.zeros((31, 31), bool)  # one long serpentine component
    snake[::2] = True
    snake[1::4, -1] = True
    snake[3::4, 0] = True
    assert label_components(snake)[1] == 1


# ---- inputs ------------------------------------------------------------------------------------------------
def test_torch_inputs_and_batches_equal_numpy_frames():
    rng = np.random.default_rng(5)
    frames = [_random_frame(rng, 40, 56, 2.0) for _ in range(4)]
    a = run(frames, "obstacle")
    b = ComponentMetrics("obstacle")
    for p, t in frames[:2]:
        b.update(torch.from_numpy(p), torch.from_numpy(t))
    b.update(np.stack([f[0] for f in frames[2:]]).astype(np.uint8), np.stack([f[1] for f in frames[2:]]))
    assert b.compute() == a


def test_bad_inputs_are_one_line_errors():
    p, t = _blank()
    m = ComponentMetrics("obstacle")
    for bad_p, bad_t, match in [
        (p.astype(np.float32), t, "bool mask"),
        (p, t[:, :-1], "shapes"),
        (np.full(p.shape, 2), t, "only 0 and 1"),
        (p, t + 13, "besides 0, 1"),
        (p, t.astype(float), "integer"),
    ]:
        with pytest.raises(ValueError, match=match) as err:
            m.update(bad_p, bad_t)
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError) as err:
        ComponentMetrics("road")
    assert "\n" not in str(err.value) and "anomaly" in str(err.value)


def test_custom_void_label():
    p, t = frame_nested()
    t2 = np.where(t == 255, 7, t)
    a = ComponentMetrics("obstacle", void_label=7)
    a.update(p, t2)
    assert a.compute() == run([(p, t)], "obstacle")


# ---- accumulator lifecycle ---------------------------------------------------------------------------------
def _frames(seed=1, n=10):
    rng = np.random.default_rng(seed)
    return [_random_frame(rng, 48, 64, 2.0) for _ in range(n)]


def test_merge_of_halves_equals_one_accumulator():
    frames = _frames()
    whole = run(frames, "obstacle")
    a, b = ComponentMetrics("obstacle"), ComponentMetrics("obstacle")
    for i, (p, t) in enumerate(frames):
        (a if i % 2 else b).update(p, t)
    merged = a.merge(b).compute()
    assert merged["f1"] == whole["f1"]
    assert merged["num_gt_components"] == whole["num_gt_components"]
    assert merged["siou_gt"] == pytest.approx(whole["siou_gt"], abs=1e-14)
    assert merged["ppv"] == pytest.approx(whole["ppv"], abs=1e-14)
    with pytest.raises(ValueError, match="cannot merge"):
        a.merge(ComponentMetrics("anomaly"))


def test_state_dict_round_trip_and_reset():
    frames = _frames(2)
    a = ComponentMetrics("obstacle")
    for p, t in frames:
        a.update(p, t)
    b = ComponentMetrics("obstacle")
    b.load_state_dict(a.state_dict())
    assert b.compute() == a.compute()
    with pytest.raises(ValueError, match="config"):
        ComponentMetrics("anomaly").load_state_dict(a.state_dict())
    b.reset()
    assert b.compute()["num_gt_components"] == 0 and np.isnan(b.compute()["siou_gt"])
    for p, t in frames:
        b.update(p, t)
    assert b.compute() == a.compute()


def test_sync_without_process_group_is_a_no_op():
    a = ComponentMetrics("obstacle")
    for p, t in _frames(3, 3):
        a.update(p, t)
    before = a.compute()
    a.sync()
    assert a.compute() == before


def _worker(rank, world, port, queue, backend="gloo"):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group(backend, rank=rank, world_size=world)
    try:
        m = ComponentMetrics("obstacle")
        for p, t in _frames(4, 6)[rank::world]:
            if backend == "nccl":  # CUDA inputs; the states stay on the CPU and travel through CUDA to sync
                p, t = torch.from_numpy(p).cuda(), torch.from_numpy(t).cuda()
            m.update(p, t)
        m.sync()
        assert m.device.type == "cpu"
        queue.put((rank, m.compute()))
    finally:
        dist.destroy_process_group()


def _run_group(world, backend):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    procs = [ctx.Process(target=_worker, args=(r, world, port, queue, backend)) for r in range(world)]
    for proc in procs:
        proc.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    single = run(_frames(4, 6), "obstacle")
    for rank in range(world):
        got = results[rank]
        assert got["f1"] == single["f1"] and got["num_pred_components"] == single["num_pred_components"]
        assert got["siou_gt"] == pytest.approx(single["siou_gt"], abs=1e-14)
        assert got["ppv"] == pytest.approx(single["ppv"], abs=1e-14)


@pytest.mark.slow
def test_sync_over_two_gloo_processes_equals_single_process():
    _run_group(2, "gloo")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_sync_under_nccl_with_cuda_inputs():
    _run_group(1, "nccl")  # one rank: checks the CPU states' round trip through CUDA for the all-reduce
