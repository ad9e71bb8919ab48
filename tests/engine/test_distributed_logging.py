"""Under ``torchrun`` rank 0 alone logs INFO and warnings; the other ranks log errors only (set up in one place,
:func:`anomalyseg.engine.distributed.init_distributed`)."""

from __future__ import annotations

import logging

import pytest

from anomalyseg.engine import distributed as D


@pytest.fixture
def fresh_logger():
    """The ``anomalyseg`` logger at INFO, its level restored afterwards."""
    logger = logging.getLogger("anomalyseg")
    previous = logger.level
    logger.setLevel(logging.INFO)
    yield logger
    logger.setLevel(previous)


@pytest.mark.parametrize("rank", [0, 1])
def test_init_distributed_leaves_errors_only_on_non_zero_ranks(rank, fresh_logger, monkeypatch, caplog):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setenv("LOCAL_RANK", str(rank))
    joined: list[str] = []
    monkeypatch.setattr(D.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(D.dist, "init_process_group", lambda backend: joined.append(backend))
    ctx = D.init_distributed("cpu")
    assert (ctx.rank, ctx.world_size, joined) == (rank, 2, ["gloo"])
    child = logging.getLogger("anomalyseg.workflows.train")
    with caplog.at_level(logging.NOTSET):  # the handler takes everything: only the logger's level filters
        child.info("an info")
        child.warning("train.amp=bf16 needs CUDA")
        child.error("an error")
    logged = [r.getMessage() for r in caplog.records if r.name.startswith("anomalyseg")]
    expected = ["an info", "train.amp=bf16 needs CUDA", "an error"] if rank == 0 else ["an error"]
    assert logged == expected


def test_quiet_non_main_never_lowers_a_level(fresh_logger):
    fresh_logger.setLevel(logging.CRITICAL)
    D.quiet_non_main()
    assert fresh_logger.level == logging.CRITICAL
    fresh_logger.setLevel(logging.DEBUG)
    D.quiet_non_main()
    assert fresh_logger.level == logging.ERROR
