"""The shared unreadable-sample policy (data.robust.RobustSamples) on an in-memory dataset whose reads fail on
demand: retries only transient decode errors, skips to the next sample and counts, and gives up after a bound."""

from __future__ import annotations

import logging

import pytest

from anomalyseg.data.io import SampleError
from anomalyseg.data.robust import MAX_REPLACEMENTS, RobustSamples
from anomalyseg.errors import UserError


class _Flaky(RobustSamples):
    """Sample i is ``{"id": "s<i>"}``; reading an index in ``broken`` fails (as a decode error when ``decode``)."""

    def __init__(self, n: int, broken: set[int], on_error: str = "skip", retries: int = 2,
                 decode: bool = True) -> None:
        self._init_read_policy(on_error, retries, retry_wait=0)  # type: ignore[arg-type]
        self.n, self.broken, self.decode, self.reads = n, broken, decode, []

    def __len__(self) -> int:
        return self.n

    def read_raw(self, index: int) -> int:
        self.reads.append(index)
        if index in self.broken:
            if self.decode:
                raise SampleError(f"cannot read image /x/{index}.png: broken") from OSError("broken")
            raise SampleError(f"image and label sizes differ: /x/{index}.png")
        return index

    def build_sample(self, index: int, raw: int) -> dict:
        return {"id": self.sample_id(index)}

    def sample_id(self, index: int) -> str:
        return f"s{index}"

    def sample_path(self, index: int) -> str:
        return f"/x/{index}.png"


def test_skip_retries_decode_errors_then_takes_the_next_sample(caplog):
    ds = _Flaky(5, broken={1, 2})
    with caplog.at_level(logging.WARNING, logger="anomalyseg.data.robust"):
        assert ds[1] == {"id": "s3"}
    assert ds.reads == [1, 1, 1, 2, 2, 2, 3]  # 2 retries each, then the next sample
    assert ds.num_read_errors == 2 and "s1" in caplog.text and "/x/2.png" in caplog.text
    assert ds[-1] == {"id": "s4"} and ds[4] == {"id": "s4"}
    with pytest.raises(IndexError):
        ds[5]


def test_a_non_transient_error_is_not_retried():
    ds = _Flaky(3, broken={0}, decode=False)
    assert ds[0] == {"id": "s1"} and ds.reads == [0, 1]


def test_raise_names_the_file_at_once():
    ds = _Flaky(3, broken={1}, on_error="raise", retries=1)
    with pytest.raises(SampleError, match=r"^cannot read image /x/1\.png: broken$"):
        ds[1]
    assert ds.reads == [1, 1] and ds.num_read_errors == 0


@pytest.mark.parametrize("n", [3, 40])
def test_a_dead_disk_gives_up_after_a_bound(n):
    ds = _Flaky(n, broken=set(range(n)), retries=1)
    with pytest.raises(SampleError, match=rf"^{min(n, MAX_REPLACEMENTS)} consecutive samples from /x/2\.png on "
                                          r"could not be read$"):
        ds[2]
    assert len(ds.reads) == 2 * min(n, MAX_REPLACEMENTS) and ds.num_read_errors == min(n, MAX_REPLACEMENTS)


def test_on_error_is_checked():
    with pytest.raises(UserError, match=r"^on_error must be 'raise' or 'skip', got 'ignore'$"):
        _Flaky(3, set(), on_error="ignore")
