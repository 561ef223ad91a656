"""Recent demand per model, and what it says about which models to keep loaded.

`DemandCounter` counts finished requests per model in fixed time slices (``bucket_s``)
over a horizon, plus when each model was last asked for, overall and per backend.
The gateway feeds it one call per finished request (a usage listener: a few dict
operations), and the admin API reads it. Pure: every time is passed in.

From it, two answers for an operator:

- `idle_models`: models resident somewhere but not asked of that backend for a while —
  memory that could be given back (unload them).
- `recommend`: models asked for often but loaded nowhere, or on fewer backends than
  their load needs — candidates to warm up (or, held by nobody, to pull).

How many copies a model needs comes from Little's law: the requests in service at
once on average are the slot time they used divided by the window. Divided by the
slots one backend gives the model, with some headroom, that is the copies needed. A
queue that kept requests waiting says one more copy would help even when the
average looks covered, because averages hide bursts.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "Demand",
    "DemandCounter",
    "Holder",
    "IdleModel",
    "Recommendation",
    "Resident",
    "copies_needed",
    "idle_models",
    "recommend",
    "span",
]


@dataclass(frozen=True, slots=True)
class Demand:
    """What one model was asked for within a window."""

    requests: int = 0
    busy_s: float = 0.0  # slot time the requests held, summed
    waited_s: float = 0.0  # time they spent in the fair queue, summed
    cold: int = 0  # requests that had to wait for a model load
    window_s: float = 300.0

    @property
    def per_minute(self) -> float:
        return self.requests * 60.0 / self.window_s

    @property
    def concurrency(self) -> float:
        """Requests in service at once, on average over the window."""
        return self.busy_s / self.window_s

    @property
    def mean_wait_s(self) -> float:
        return self.waited_s / self.requests if self.requests else 0.0


class _Slice:
    __slots__ = ("busy", "cold", "index", "requests", "waited")

    def __init__(self, index: int) -> None:
        self.index = index
        self.requests = 0
        self.busy = 0.0
        self.waited = 0.0
        self.cold = 0


class DemandCounter:
    """Requests per model in ``bucket_s`` slices over ``horizon_s``.

    At most ``max_models`` models are tracked: a new one beyond that pushes out the
    one asked for least recently, so names nobody holds cannot grow it without bound.
    """

    def __init__(
        self, *, bucket_s: float = 10.0, horizon_s: float = 3600.0, max_models: int = 2000
    ) -> None:
        if bucket_s <= 0 or horizon_s < bucket_s:
            raise ValueError("need 0 < bucket_s <= horizon_s")
        self.bucket_s = bucket_s
        self.horizon_s = horizon_s
        self.max_models = max_models
        self._keep = math.ceil(horizon_s / bucket_s) + 1
        self._slices: dict[str, deque[_Slice]] = {}
        self._last: dict[str, float] = {}
        self._last_on: dict[str, dict[str, float]] = {}  # model -> backend -> time

    def add(
        self,
        model: str,
        backend: str | None,
        at: float,
        *,
        busy_s: float = 0.0,
        waited_s: float = 0.0,
        cold: bool = False,
    ) -> None:
        """One request for ``model`` that ended at ``at`` (served by ``backend``, if any)."""
        slices = self._slices.get(model)
        if slices is None:
            if len(self._slices) >= self.max_models:
                self._evict()
            slices = self._slices[model] = deque()
        index = int(at // self.bucket_s)
        last = slices[-1] if slices else None
        if last is None or last.index < index:
            last = _Slice(index)
            slices.append(last)
            while slices[0].index <= index - self._keep:
                slices.popleft()
        # (A record that ends out of order lands in the newest slice: near enough.)
        last.requests += 1
        if busy_s > 0.0:
            last.busy += busy_s
        if waited_s > 0.0:
            last.waited += waited_s
        if cold:
            last.cold += 1
        if at > self._last.get(model, -math.inf):
            self._last[model] = at
        if backend is not None:
            on = self._last_on.get(model)
            if on is None:
                on = self._last_on[model] = {}
            if at > on.get(backend, -math.inf):
                on[backend] = at

    def _evict(self) -> None:
        stalest = min(self._last, key=self._last.__getitem__)
        self._slices.pop(stalest, None)
        self._last.pop(stalest, None)
        self._last_on.pop(stalest, None)

    def demand(self, model: str, now: float, window_s: float) -> Demand:
        """What ``model`` was asked for in the ``window_s`` before ``now`` (whole slices)."""
        window_s = min(window_s, self.horizon_s)
        first = int((now - window_s) // self.bucket_s)
        requests = cold = 0
        busy = waited = 0.0
        for s in reversed(self._slices.get(model, ())):
            if s.index < first:
                break
            requests += s.requests
            busy += s.busy
            waited += s.waited
            cold += s.cold
        return Demand(requests, busy, waited, cold, window_s)

    def last_seen(self, model: str, backend: str | None = None) -> float | None:
        """When ``model`` was last asked for (of ``backend``, if named); None: never."""
        if backend is None:
            return self._last.get(model)
        return self._last_on.get(model, {}).get(backend)

    def models(self) -> list[str]:
        return sorted(self._slices)


def span(seconds: float) -> str:
    """A window for messages: ``90s``, ``5m``, ``2h``."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


# -- idle models --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Resident:
    """A model loaded on a backend that can unload it (an Ollama server)."""

    model: str
    backend: str
    in_flight: int = 0  # requests for it there right now


@dataclass(frozen=True, slots=True)
class IdleModel:
    model: str
    backend: str
    idle_s: float  # since its last request there (or since ``since``, if none)
    last_request_at: float | None


def idle_models(
    resident: Iterable[Resident],
    counter: DemandCounter,
    now: float,
    window_s: float,
    since: float,
) -> list[IdleModel]:
    """Resident models not asked of their backend for ``window_s``, idlest first.

    ``since`` is when counting began (the gateway's start): a model never asked for
    has been idle at least that long. One with requests in flight is never idle.
    """
    out: list[IdleModel] = []
    for r in resident:
        if r.in_flight > 0:
            continue
        last = counter.last_seen(r.model, r.backend)
        idle = now - (last if last is not None else since)
        if idle >= window_s:
            out.append(IdleModel(r.model, r.backend, idle, last))
    out.sort(key=lambda m: (-m.idle_s, m.model, m.backend))
    return out


# -- warm-up recommendations ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Holder:
    """A backend holding a model, as the recommendation sees it."""

    backend: str
    loaded: bool
    slots: int = 1  # requests it serves at once for this model
    available: bool = True  # up, enabled and not draining
    can_load: bool = True  # False: an OpenAI-kind server, loaded while it runs
    busy: float = 0.0  # share of its slots in use now, to order suggestions


@dataclass(frozen=True, slots=True)
class Recommendation:
    model: str
    action: Literal["warm", "pull"]
    backends: tuple[str, ...]  # where to warm it, best first (empty for "pull")
    loaded_on: tuple[str, ...]
    needed: int  # copies the demand needs loaded
    demand: Demand
    reason: str


def copies_needed(
    d: Demand, slots: int, loaded: int, *, headroom: float = 1.25, wait_s: float = 1.0
) -> int:
    """Copies of a model its demand needs: at least one once it is asked for at all."""
    if d.requests == 0:
        return 0
    need = max(1, math.ceil(d.concurrency * headroom / max(1, slots) - 1e-9))
    if d.mean_wait_s >= wait_s:
        need = max(need, loaded + 1)
    return need


def recommend(
    demand: Mapping[str, Demand],
    holders: Mapping[str, Sequence[Holder]],
    *,
    min_requests: int = 3,
    headroom: float = 1.25,
    wait_s: float = 1.0,
) -> list[Recommendation]:
    """Models to warm (or pull), busiest first.

    A model counts once asked for ``min_requests`` times in its window. It is
    recommended when fewer available backends have it loaded than `copies_needed`,
    and some available holder could load it; held by nobody, the advice is to pull it.
    """
    out: list[Recommendation] = []
    for model, d in demand.items():
        if d.requests < min_requests:
            continue
        held = holders.get(model, ())
        asked = f"asked for {d.requests} times in the last {span(d.window_s)}"
        asked += f" ({d.per_minute:.1f}/min)"
        if not held:
            reason = f"{asked} but no backend holds it"
            out.append(Recommendation(model, "pull", (), (), 1, d, reason))
            continue
        usable = [h for h in held if h.available]
        loaded = tuple(h.backend for h in usable if h.loaded)
        slots = min((h.slots for h in usable), default=1)
        need = copies_needed(d, slots, len(loaded), headroom=headroom, wait_s=wait_s)
        spare = sorted(
            (h for h in usable if h.can_load and not h.loaded), key=lambda h: (h.busy, h.backend)
        )
        if len(loaded) >= need or not spare:
            continue
        out.append(
            Recommendation(
                model,
                "warm",
                tuple(h.backend for h in spare[: need - len(loaded)]),
                loaded,
                need,
                d,
                _why(asked, d, need, loaded, slots, len(usable)),
            )
        )
    out.sort(key=lambda r: (-r.demand.requests, r.model))
    return out


def _why(asked: str, d: Demand, need: int, loaded: tuple[str, ...], slots: int, usable: int) -> str:
    if not loaded:
        parts = [f"{asked} but loaded nowhere: the next request waits for a model load"]
        if d.cold:
            parts.append(f"{d.cold} of them waited for one")
    else:
        parts = [
            f"{asked}, {d.concurrency:.1f} in service on average ({slots} slot"
            f"{'s' if slots != 1 else ''} a backend)"
        ]
        if d.mean_wait_s > 0:
            parts.append(f"{d.mean_wait_s:.1f}s average wait in the queue")
        parts.append(f"needs {need} copies, loaded on {len(loaded)}")
    if need > usable:
        parts.append(f"only {usable} available backends hold it: pull it onto more")
    return "; ".join(parts)
