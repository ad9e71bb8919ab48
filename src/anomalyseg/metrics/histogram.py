"""A two-class histogram over order-preserving float32 keys, allocated lazily in blocks.

Why our own structure: an exact pooled curve needs every distinct score (sklearn sorts them all, which
grows with the pixel count); a fixed-range histogram (SMIYC, torchmetrics' binned mode) needs to know the
score range, which max-logit / energy / SML scores do not have. Keys of float32 scores
(:func:`~anomalyseg.metrics.curves.float_order_key`) cut to their top ``bits`` give bins that are contiguous
float ranges of constant RELATIVE width ``2**(9 - bits)``, over the whole float line; only the blocks of
``2**block_bits`` bins that scores actually fall into are stored. Scores of a real model occupy a few
octaves, so a few hundred blocks at most are allocated, whatever the number of pixels.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from anomalyseg.metrics.backend import numpy_path

_INT32_LIMIT = 2**31 - 1


def order_bins(scores: torch.Tensor, bits: int) -> torch.Tensor:
    """Top ``bits`` of the order-preserving key of float32 ``scores`` (int32 in ``[0, 2**bits)``).

    Same ordering as :func:`~anomalyseg.metrics.curves.float_order_key` (``key >> (32 - bits)``), computed
    in int32; on CPU through numpy, whose integer kernels are several times faster than torch's here.
    """
    if numpy_path(scores):
        x = scores.detach().to(torch.float32).contiguous().numpy() + np.float32(0.0)  # folds -0.0 onto +0.0
        i = x.view(np.int32)
        k = i ^ ((i >> 31) & np.int32(0x7FFFFFFF))
        return torch.from_numpy((k >> (32 - bits)) + np.int32(2 ** (bits - 1)))
    i = (scores.to(torch.float32).contiguous() + 0.0).view(torch.int32)
    k = i ^ ((i >> 31) & 0x7FFFFFFF)
    return (k >> (32 - bits)) + 2 ** (bits - 1)


class BlockHistogram:
    """Counts of negatives (row 0) and positives (row 1) per key bin, for ``2**bits`` bins.

    Args:
        bits: resolution (top bits of the 32-bit key kept), 16..32.
        block_bits: bins per allocated block (``2**block_bits``); smaller blocks waste less memory on
            sparsely populated octaves, larger ones mean fewer blocks.
    """

    def __init__(self, bits: int = 27, block_bits: int = 10, device: torch.device | str = "cpu") -> None:
        if not 16 <= bits <= 30 or not 8 <= block_bits < bits:
            raise ValueError(f"need 16 <= bits <= 30 and 8 <= block_bits < bits, got {bits}, {block_bits}")
        self.bits, self.block_bits = bits, block_bits
        self.num_blocks = 2 ** (bits - block_bits)
        self.slot = torch.full((self.num_blocks,), -1, dtype=torch.int32, device=device)
        self.pool = torch.zeros(0, 2, 2**block_bits, dtype=torch.int32, device=device)
        self.used = 0  # slots in use (pool may hold spare capacity)
        self.pixels_bound = 0  # host-side upper bound of the counts held (decides int32 -> int64)

    @property
    def device(self) -> torch.device:
        return self.slot.device

    def to(self, device: torch.device | str) -> BlockHistogram:
        self.slot, self.pool = self.slot.to(device), self.pool.to(device)
        return self

    def nbytes(self) -> int:
        """Bytes held by the counters (for reporting memory)."""
        return self.pool.numel() * self.pool.element_size() + self.slot.numel() * 4

    def _reserve(self, blocks: torch.Tensor) -> None:
        """Give each not-yet-allocated block id in ``blocks`` (sorted, unique) a slot."""
        new = blocks[self.slot[blocks] < 0]
        k = new.numel()
        if k == 0:
            return
        if self.used + k > self.pool.shape[0]:
            cap = max(self.used + k, 2 * self.pool.shape[0], 16)
            grown = torch.zeros(cap, 2, 2**self.block_bits, dtype=self.pool.dtype, device=self.device)
            grown[: self.used] = self.pool[: self.used]
            self.pool = grown
        self.slot[new] = torch.arange(self.used, self.used + k, dtype=torch.int32, device=self.device)
        self.used += k

    def _widen(self, extra: int) -> None:
        if self.pool.dtype == torch.int32 and self.pixels_bound + extra >= _INT32_LIMIT:
            self.pool = self.pool.to(torch.int64)
        self.pixels_bound += extra

    def add(self, scores: torch.Tensor, positive: torch.Tensor) -> None:
        """Count 1-D float ``scores`` with boolean labels ``positive`` (1 = anomaly)."""
        bins = order_bins(scores, self.bits)
        self._widen(bins.numel())
        mask = 2**self.block_bits - 1
        if numpy_path(bins):  # numpy: torch's CPU integer kernels are ~10x slower here
            b, y = bins.numpy(), positive.reshape(-1).numpy().view(np.int8)
            blocks = b >> self.block_bits
            slots = self.slot.numpy()[blocks]
            if (slots < 0).any():  # blocks seen for the first time (rare once the score range is covered)
                self._reserve(torch.from_numpy(np.unique(blocks[slots < 0])))
                slots = self.slot.numpy()[blocks]
            slots <<= 1
            slots += y
            slots <<= self.block_bits
            slots |= b & mask
            idx = torch.from_numpy(slots)
        else:
            blocks = bins >> self.block_bits
            self._reserve(torch.nonzero(torch.bincount(blocks, minlength=self.num_blocks)).squeeze(1))
            idx = ((self.slot[blocks] * 2 + positive.reshape(-1).to(torch.int32)) << self.block_bits) | (bins & mask)
        flat = self.pool.view(-1)
        flat.index_add_(0, idx, torch.ones((), dtype=flat.dtype, device=flat.device).expand_as(idx))

    def totals(self) -> tuple[int, int]:
        """(negatives, positives) counted so far."""
        if numpy_path(self.pool):  # numpy sums in place; torch would first copy the pool to int64
            neg, pos = self.pool.numpy().sum(axis=(0, 2), dtype=np.int64).tolist()
        else:
            neg, pos = self.pool.sum(dim=(0, 2), dtype=torch.int64).tolist()
        return int(neg), int(pos)

    def descending(self, blocks_per_chunk: int = 512) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Non-empty bins in DESCENDING key order, a chunk of blocks at a time: ``(neg, pos, bin_ids)`` numpy.

        Chunks keep the memory of a curve computation at a few MB whatever the number of bins.
        """
        width = 2**self.block_bits
        blocks = torch.nonzero(self.slot >= 0).squeeze(1).flip(0).cpu().numpy()
        slot = self.slot.cpu().numpy()
        offs = np.arange(width - 1, -1, -1, dtype=np.int64)
        for start in range(0, blocks.size, blocks_per_chunk):
            b = blocks[start : start + blocks_per_chunk]
            c = self.pool[torch.from_numpy(slot[b]).to(self.device, torch.long)].flip(-1).cpu().numpy()
            nz = (c[:, 0] != 0) | (c[:, 1] != 0)  # (nb, width)
            ids = (b.astype(np.int64)[:, None] * width + offs[None, :])[nz]
            yield c[:, 0][nz], c[:, 1][nz], ids

    def bin_lower_keys(self, bin_ids: torch.Tensor) -> torch.Tensor:
        """The smallest 32-bit key of each bin (``score >= float(key)`` is exact for the bin)."""
        return bin_ids.to(torch.int64) << (32 - self.bits)

    def reset(self) -> None:
        self.__init__(self.bits, self.block_bits, self.device)  # type: ignore[misc]

    def merge(self, other: BlockHistogram) -> None:
        """Add ``other``'s counts (blocks allocated as needed)."""
        if (other.bits, other.block_bits) != (self.bits, self.block_bits):
            raise ValueError("cannot merge histograms of different resolution")
        blocks = torch.nonzero(other.slot >= 0).squeeze(1).to(self.device)
        self._reserve(blocks)
        self._widen(other.pixels_bound)
        if other.pool.dtype == torch.int64:
            self.pool = self.pool.to(torch.int64)
        src = other.pool[other.slot[blocks.to(other.device)].long()].to(self.device, self.pool.dtype)
        self.pool[self.slot[blocks].long()] += src

    def sync(self) -> None:
        """Sum over ``torch.distributed`` ranks: union of the blocks, then one all-reduce of their counts."""
        present = (self.slot >= 0).to(torch.int32)
        dist.all_reduce(present, op=dist.ReduceOp.MAX)
        self._reserve(torch.nonzero(present).squeeze(1))
        self.pool = self.pool.to(torch.int64)
        blocks = torch.nonzero(self.slot >= 0).squeeze(1)
        canonical = self.pool[self.slot[blocks].long()].contiguous()
        dist.all_reduce(canonical, op=dist.ReduceOp.SUM)
        self.pool = canonical
        self.slot[blocks] = torch.arange(blocks.numel(), dtype=torch.int32, device=self.device)
        self.used = blocks.numel()
        bound = torch.tensor([self.pixels_bound], dtype=torch.int64, device=self.device)
        dist.all_reduce(bound, op=dist.ReduceOp.SUM)
        self.pixels_bound = int(bound.item())

    def state_dict(self) -> dict[str, Any]:
        blocks = torch.nonzero(self.slot >= 0).squeeze(1)
        return {"bits": self.bits, "block_bits": self.block_bits, "blocks": blocks.cpu(),
                "counts": self.pool[self.slot[blocks].long()].cpu().clone(), "pixels_bound": self.pixels_bound}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (state["bits"], state["block_bits"]) != (self.bits, self.block_bits):
            raise ValueError("histogram state has another resolution")
        self.reset()
        blocks = state["blocks"].to(self.device, torch.int64)
        self.pool = state["counts"].to(self.device).clone()
        self.slot[blocks] = torch.arange(blocks.numel(), dtype=torch.int32, device=self.device)
        self.used = blocks.numel()
        self.pixels_bound = int(state["pixels_bound"])
