"""Prefix and session affinity: send a request where its prompt is already cached.

Engines with a prompt prefix cache (vLLM, llama.cpp) skip the prefill of every block
they have seen, so a request sharing a long prefix with an earlier one is cheaper on
the backend that served it. The gateway cannot see those caches; it remembers what
it sent where. :class:`PrefixMemory` keeps, per backend:model, an LRU of the prefix
block hashes it dispatched there; :class:`SessionMemory` keeps the last backend of
each conversation (the ``X-Corral-Session`` header, or failing that a hash of the
conversation's opening blocks).

Affinity must never pile work on one node: as in SGLang's cache-aware router, the
preferred backend is taken only while its load is not more than ``abs_threshold``
requests *and* ``rel_threshold`` times above the least-loaded free candidate's;
beyond that the request goes by load, and the new holder learns the prefix too.

:class:`Affinity` is the combined rule used by the ``corral`` policy;
:class:`Sticky` wraps any other policy with it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

from corral.core.policy_base import Hooks, Policy, one_line
from corral.core.types import BackendState, Outcome, RequestInfo

__all__ = ["AFFINITY_OPTIONS", "Affinity", "PrefixMemory", "SessionMemory", "Sticky", "load_of"]

# Options of Affinity that make_policy accepts for any policy (they wrap it in Sticky).
AFFINITY_OPTIONS = (
    "prefix_affinity",
    "session_affinity",
    "affinity_abs",
    "affinity_rel",
    "prefix_memory",
    "min_prefix_blocks",
    "session_prefix_blocks",
    "max_sessions",
)


def load_of(b: BackendState) -> float:
    """Requests ahead on a backend: ours in flight plus the engine's own queue."""
    sig = b.signals
    return b.in_flight + (sig.waiting if sig is not None else 0.0)


class PrefixMemory:
    """Which backend:model was sent which prompt blocks, bounded per backend:model.

    Hashes are chained, so holding block ``i`` implies having seen blocks ``0..i``;
    the match length is then found by binary search over the request's blocks, each
    step one dict lookup. Blocks are recorded deepest first so the leading blocks
    (shared by more requests) are the freshest and the last to be evicted.
    """

    __slots__ = ("_index", "_lru", "capacity", "max_blocks")

    def __init__(self, capacity: int = 50_000, max_blocks: int = 512) -> None:
        if capacity < 1 or max_blocks < 1:
            raise ValueError("prefix memory capacity and max_blocks must be >= 1")
        self.capacity = capacity
        self.max_blocks = max_blocks
        self._lru: dict[str, dict[str, OrderedDict[int, None]]] = {}
        self._index: dict[str, dict[int, set[str]]] = {}  # model -> hash -> backends

    def record(self, backend: str, model: str, prefix: Sequence[int]) -> None:
        if not prefix:
            return
        per_model = self._lru.setdefault(backend, {})
        lru = per_model.get(model)
        if lru is None:
            lru = per_model[model] = OrderedDict()
        index = self._index.setdefault(model, {})
        for h in reversed(prefix[: self.max_blocks]):
            if h in lru:
                lru.move_to_end(h)
            else:
                lru[h] = None
                holders = index.get(h)
                if holders is None:
                    index[h] = {backend}
                else:
                    holders.add(backend)
        while len(lru) > self.capacity:
            old, _ = lru.popitem(last=False)
            self._drop(index, old, backend)

    def match(
        self, model: str, prefix: Sequence[int], eligible: dict[str, BackendState]
    ) -> tuple[int, list[BackendState]]:
        """The longest leading match among ``eligible`` and the backends holding it."""
        index = self._index.get(model)
        if not index or not prefix:
            return 0, []
        lo, hi = 0, min(len(prefix), self.max_blocks)
        while lo < hi:  # largest depth whose last block some eligible backend holds
            mid = (lo + hi + 1) >> 1
            holders = index.get(prefix[mid - 1])
            if holders is not None and not eligible.keys().isdisjoint(holders):
                lo = mid
            else:
                hi = mid - 1
        if lo == 0:
            return 0, []
        # In the candidates' order, not the set's (which varies with string hashing).
        holders = index[prefix[lo - 1]]
        return lo, [b for n, b in eligible.items() if n in holders]

    def forget(self, backend: str) -> None:
        for model, lru in self._lru.pop(backend, {}).items():
            index = self._index.get(model, {})
            for h in lru:
                self._drop(index, h, backend)

    def __len__(self) -> int:
        return sum(len(lru) for per in self._lru.values() for lru in per.values())

    @staticmethod
    def _drop(index: dict[int, set[str]], h: int, backend: str) -> None:
        holders = index.get(h)
        if holders is not None:
            holders.discard(backend)
            if not holders:
                del index[h]


class SessionMemory:
    """The backend each conversation last went to, least recently used forgotten."""

    __slots__ = ("_last", "capacity")

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._last: OrderedDict[str | int, str] = OrderedDict()

    def get(self, key: str | int) -> str | None:
        return self._last.get(key)

    def record(self, key: str | int, backend: str) -> None:
        last = self._last
        if last.get(key) == backend:
            last.move_to_end(key)
            return
        last[key] = backend
        last.move_to_end(key)
        if len(last) > self.capacity:
            last.popitem(last=False)

    def forget(self, backend: str) -> None:
        for key in [k for k, v in self._last.items() if v == backend]:
            del self._last[key]


class Affinity:
    """Prefer the backend holding a request's session or prompt prefix, within bounds.

    Order: an explicit session (the client asked for it), then the longest prefix
    match on a prefix-caching engine (at least ``min_prefix_blocks``), then the
    conversation-hash session, keyed by the hash of the first
    ``session_prefix_blocks`` blocks (the system prompt plus the opening turn, which
    every later turn of that conversation repeats).
    """

    def __init__(
        self,
        *,
        prefix_affinity: bool = True,
        session_affinity: bool = True,
        affinity_abs: float = 2.0,
        affinity_rel: float = 1.5,
        prefix_memory: int = 50_000,
        min_prefix_blocks: int = 1,
        session_prefix_blocks: int = 4,
        max_sessions: int = 100_000,
        load: Callable[[BackendState], float] = load_of,
        hit_worth: Callable[[BackendState, RequestInfo, int], float] | None = None,
    ) -> None:
        if affinity_abs < 0 or affinity_rel < 1.0:
            raise ValueError("affinity_abs must be >= 0 and affinity_rel >= 1")
        if min_prefix_blocks < 1 or session_prefix_blocks < 1 or max_sessions < 1:
            raise ValueError("min_prefix_blocks, session_prefix_blocks, max_sessions >= 1")
        self.prefix_on = prefix_affinity
        self.session_on = session_affinity
        self.abs_threshold = affinity_abs
        self.rel_threshold = affinity_rel
        self.min_prefix_blocks = min_prefix_blocks
        self.session_prefix_blocks = session_prefix_blocks
        self.prefixes = PrefixMemory(prefix_memory)
        self.sessions = SessionMemory(max_sessions)
        self.load = load  # requests ahead on a backend (the cost model corrects stale queues)
        # How many requests of extra load a prefix hit of so many blocks is worth on a
        # backend (its saved prefill against the wait they add); None: nothing extra.
        self.hit_worth = hit_worth

    def _conversation_key(self, info: RequestInfo) -> int | None:
        k = self.session_prefix_blocks
        return info.prefix[k - 1] if len(info.prefix) >= k else None

    def prefer(
        self, candidates: Sequence[BackendState], info: RequestInfo
    ) -> tuple[BackendState, str] | None:
        """The affine backend with a free slot and its reason, or None."""
        hit = self.choose(candidates, info)
        return None if hit is None else (hit[0], hit[1])

    def choose(
        self, candidates: Sequence[BackendState], info: RequestInfo
    ) -> tuple[BackendState, str, int] | None:
        """As :meth:`prefer`, plus how many leading prompt blocks it holds (0: a session)."""
        model = info.model
        if self.session_on and info.session is not None:
            hit = self._session_pick(info.session, candidates, model)
            if hit is not None:
                return hit, "session", 0
        if self.prefix_on and info.prefix:
            eligible = {b.name: b for b in candidates if b.prefix_cache and b.has_slot(model)}
            depth, holders = self.prefixes.match(model, info.prefix, eligible)
            # A prefix every candidate holds (a shared system prompt) tells nothing.
            if depth >= self.min_prefix_blocks and 0 < len(holders) < max(len(eligible), 2):
                best = min(holders, key=self.load)
                worth = self.hit_worth(best, info, depth) if self.hit_worth is not None else 0.0
                if not self._overloaded(best, candidates, model, worth):
                    return best, f"prefix {depth}/{len(info.prefix)} blocks", depth
        if self.session_on and info.session is None:
            key = self._conversation_key(info)
            if key is not None:
                hit = self._session_pick(key, candidates, model)
                if hit is not None:
                    return hit, "conversation", 0
        return None

    def _session_pick(
        self, key: str | int, candidates: Sequence[BackendState], model: str
    ) -> BackendState | None:
        name = self.sessions.get(key)
        if name is None:
            return None
        for b in candidates:
            if b.name == name:
                if b.has_slot(model) and not self._overloaded(b, candidates, model):
                    return b
                return None
        return None

    def _overloaded(
        self, b: BackendState, candidates: Sequence[BackendState], model: str, extra: float = 0.0
    ) -> bool:
        """SGLang's balance test: too far above the least-loaded free candidate
        (``extra`` more requests allowed for what the affinity is worth)."""
        load_fn = self.load
        mine = load_fn(b)
        limit = self.abs_threshold + extra
        if mine <= limit:
            return False  # cannot be more than the limit above anyone
        rel = self.rel_threshold
        for c in candidates:
            if c.in_flight >= c.max_concurrency or c is b:
                continue
            load = load_fn(c)
            if mine - load > limit and mine > rel * load and c.has_slot(model):
                return True
        return False

    def record(self, backend: BackendState, info: RequestInfo) -> None:
        if self.prefix_on and backend.prefix_cache and info.prefix:
            self.prefixes.record(backend.name, info.model, info.prefix)
        if self.session_on:
            if info.session is not None:
                self.sessions.record(info.session, backend.name)
            else:
                key = self._conversation_key(info)
                if key is not None:
                    self.sessions.record(key, backend.name)

    def forget(self, name: str) -> None:
        self.prefixes.forget(name)
        self.sessions.forget(name)


class Sticky(Hooks):
    """Any policy with affinity in front: the affine backend if within bounds, else
    whatever the inner policy picks."""

    def __init__(self, inner: Policy, affinity: Affinity) -> None:
        self.inner = inner
        self.affinity = affinity
        self.name = inner.name

    def select(
        self, candidates: Sequence[BackendState], info: RequestInfo, now: float
    ) -> tuple[BackendState, str] | None:
        hit = self.affinity.prefer(candidates, info)
        if hit is not None:
            b, why = hit
            return b, one_line(f"{self.name}: {why} on {b.name} ({b.in_flight} in flight)")
        return self.inner.select(candidates, info, now)

    def on_dispatch(self, backend: BackendState, info: RequestInfo, now: float) -> None:
        self.affinity.record(backend, info)
        self.inner.on_dispatch(backend, info, now)

    def on_complete(
        self, backend: BackendState, info: RequestInfo, outcome: Outcome, now: float
    ) -> None:
        self.inner.on_complete(backend, info, outcome, now)

    def on_backend_removed(self, name: str) -> None:
        self.affinity.forget(name)
        self.inner.on_backend_removed(name)
