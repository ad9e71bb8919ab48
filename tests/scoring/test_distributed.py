"""sync_fit over 2 gloo processes equals fitting the whole data in one process (exact statistics) or merging
the two shards in one process (HEAT's EMA, whose merge is a batch-weighted average by definition)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from anomalyseg.scoring import HEAT, SML, Mahalanobis

# The workers read outputs through a stand-in with SegOutput's two fields: importing anomalyseg.models in
# each spawned process would cost seconds (torchvision) and SegOutput itself is not under test here.


def _data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 5, 8, 8, generator=g) * 2
    label = torch.randint(0, 5, (4, 8, 8), generator=g)
    return logits, torch.randn(4, 6, 4, 4, generator=g), label


def _scorers() -> list:
    return [SML(), Mahalanobis(), HEAT(), HEAT(norm_stats="ema", use_feature=False)]


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        logits, feats, label = _data()
        part = slice(rank * 2, rank * 2 + 2)
        shard = SimpleNamespace(logits=logits[part], features={"layer3": feats[part]})
        states = []
        for scorer in _scorers():
            while not scorer.is_fitted:
                scorer.fit_update(shard, label[part])
                scorer.sync_fit()
                scorer.fit_finalize()
            states.append(scorer.state_dict())
        torch.save(states, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_sync_fit_over_two_ranks_equals_single_process(tmp_path: Path) -> None:
    from anomalyseg.models.outputs import SegOutput

    mp.spawn(_worker, args=(2, str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=2, join=True)
    logits, feats, label = _data()
    out = SegOutput(logits, features={"layer3": feats})
    for rank in range(2):
        states = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for scorer, state in zip(_scorers(), states):
            if scorer.params.get("norm_stats") == "ema":
                single, other = type(scorer)(**scorer.params), type(scorer)(**scorer.params)
                single.fit_update(SegOutput(logits[:2]), label[:2])
                other.fit_update(SegOutput(logits[2:]), label[2:])
                single.merge_fit(other).fit_finalize()
            else:
                single = type(scorer)(**scorer.params).fit([(out, label)])
            scorer.load_state_dict(state)
            torch.testing.assert_close(scorer.score(out), single.score(out), rtol=1e-5, atol=1e-5)
