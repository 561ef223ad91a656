"""vLLM's paged KV cache with automatic prefix caching, as plain bookkeeping.

The cache is ``num_blocks`` blocks of ``block_size`` tokens. What it reproduces (see
vLLM's ``v1/core/block_pool.py`` and ``kv_cache_manager.py``):

* a full prompt block is named by a hash chained over every block before it, so a
  block only matches when the whole prefix up to it matches;
* a block is referenced by every running sequence that uses it; at zero references it
  goes to the back of ONE free queue *keeping its hash*, so it still serves hits until
  an allocation pops it from the front (lazy LRU eviction);
* a sequence frees its blocks tail first, so the private end of a prompt is evicted
  before the shared head;
* usage is ``1 - free / total``: cached but unreferenced blocks count as free.

Pure: no clock, no I/O. Block ids are ints; the pool never hands out a block twice.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence

__all__ = ["BlockPool", "chain_hashes", "token_block_hashes"]


def chain_hashes(block_hashes: Iterable[int]) -> tuple[int, ...]:
    """Chain per-block hashes so each one names its whole prefix.

    Python's hash of an int tuple is stable across processes (no hash randomisation
    for ints), which keeps a run repeatable.
    """
    out: list[int] = []
    parent = 0
    for h in block_hashes:
        parent = hash((parent, h))
        out.append(parent)
    return tuple(out)


def token_block_hashes(token_ids: Sequence[int], block_size: int) -> tuple[int, ...]:
    """Chained hashes of the full ``block_size`` blocks of a token sequence."""
    full = len(token_ids) // block_size
    blocks = (tuple(token_ids[i * block_size : (i + 1) * block_size]) for i in range(full))
    return chain_hashes(hash(b) for b in blocks)


class BlockPool:
    """Blocks, their references and hashes, and the free queue."""

    def __init__(self, num_blocks: int, block_size: int = 16) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError("the KV cache needs at least one block of at least one token")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.evictions = 0
        self._hash: list[int | None] = [None] * num_blocks
        self._ref: list[int] = [0] * num_blocks
        # Insertion order is the LRU order: allocation pops from the front.
        self._free: OrderedDict[int, None] = OrderedDict((b, None) for b in range(num_blocks))
        self._cached: dict[int, int] = {}  # chain hash -> block id

    # ----------------------------------------------------------------- queries
    @property
    def free_blocks(self) -> int:
        return len(self._free)

    @property
    def used_blocks(self) -> int:
        return self.num_blocks - len(self._free)

    @property
    def usage(self) -> float:
        return self.used_blocks / self.num_blocks

    @property
    def cached_blocks(self) -> int:
        """Blocks that carry a prefix hash (referenced or not)."""
        return len(self._cached)

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    def longest_hit(self, hashes: Sequence[int], max_blocks: int) -> list[int]:
        """Block ids of the longest cached prefix of ``hashes``, at most ``max_blocks``."""
        out: list[int] = []
        for h in hashes[: max(0, max_blocks)]:
            block = self._cached.get(h)
            if block is None:
                break
            out.append(block)
        return out

    def available_with(self, hit: Sequence[int]) -> int:
        """Free blocks left for new data once the ``hit`` blocks are taken."""
        return len(self._free) - sum(1 for b in hit if self._ref[b] == 0)

    # ----------------------------------------------------------------- changes
    def take(self, hit: Sequence[int]) -> None:
        """Reference cached blocks (a hit): they leave the free queue if idle."""
        for b in hit:
            if self._ref[b] == 0:
                del self._free[b]
            self._ref[b] += 1

    def allocate(self, n: int) -> list[int]:
        """``n`` blocks for new data, evicting cached ones from the queue front."""
        if n > len(self._free):
            raise ValueError(f"asked for {n} blocks, {len(self._free)} free")
        out = []
        for _ in range(n):
            b, _none = self._free.popitem(last=False)
            h = self._hash[b]
            if h is not None:
                self._hash[b] = None
                del self._cached[h]
                self.evictions += 1
            self._ref[b] = 1
            out.append(b)
        return out

    def free(self, blocks: Sequence[int]) -> None:
        """Drop one reference from each block, tail first (as vLLM frees them)."""
        for b in reversed(blocks):
            self._ref[b] -= 1
            if self._ref[b] == 0:
                self._free[b] = None

    def cache(self, block: int, chain_hash: int) -> None:
        """Name a full block by its prefix hash, unless another block has the name."""
        if self._hash[block] is None and chain_hash not in self._cached:
            self._hash[block] = chain_hash
            self._cached[chain_hash] = block

    def reset_cache(self) -> int:
        """Forget every idle block's hash (vLLM's ``/reset_prefix_cache``); returns how many."""
        dropped = 0
        for h, b in list(self._cached.items()):
            if self._ref[b] == 0:
                del self._cached[h]
                self._hash[b] = None
                dropped += 1
        return dropped
