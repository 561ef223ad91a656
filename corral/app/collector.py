"""The cyclic garbage collector, run on a clock rather than on allocation counts.

CPython starts a young collection when the count of *net* new tracked objects passes a
threshold. A streaming gateway defeats that count: streams start and end at the same
rate, so the count grows slowly while the young generation fills with every stream
opened since the last collection. When the threshold is finally passed, the collection
walks all of them at once: 30-75 ms with 1,000 streams open, every few seconds, and
every open stream stalls that long (bench/streams_ab.py --gc-probe, BENCHMARKS.md).

`CollectorPacer` turns the automatic collector off and runs a young collection every
``period`` seconds instead. Each then walks only what was made since the last tick and
is still alive (a few dozen streams at 1,000 open: about a millisecond). What survives
a young collection is walked again only by a middle collection, every
``middle_every`` ticks, and everything (but the startup heap frozen before serving) by
a full one, every ``full_every`` ticks: rare pauses as long as the live set is large,
which still free cyclic garbage that outlived its first collection.
"""

from __future__ import annotations

import asyncio
import gc

__all__ = ["CollectorPacer"]


class CollectorPacer:
    """Young collections every ``period`` s; a middle one every ``middle_every`` ticks and
    a full one every ``full_every`` ticks. ``start`` turns the automatic collector off,
    ``stop`` turns it back on (if it was on)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        period: float = 0.1,
        middle_every: int = 600,
        full_every: int = 6000,
    ) -> None:
        if period <= 0 or middle_every < 1 or full_every < middle_every:
            raise ValueError("period > 0 and 1 <= middle_every <= full_every")
        self._loop = loop
        self.period = period
        self.middle_every = middle_every
        self.full_every = full_every
        self.ticks = 0
        self._handle: asyncio.TimerHandle | None = None
        self._was_enabled = False

    def start(self) -> None:
        if self._handle is not None:
            return
        self._was_enabled = gc.isenabled()
        gc.disable()
        self._handle = self._loop.call_later(self.period, self._tick)

    def stop(self) -> None:
        if self._handle is None:
            return
        self._handle.cancel()
        self._handle = None
        if self._was_enabled:
            gc.enable()

    def _tick(self) -> None:
        self.ticks += 1
        if self.ticks % self.full_every == 0:
            gc.collect(2)
        elif self.ticks % self.middle_every == 0:
            gc.collect(1)
        else:
            gc.collect(0)
        self._handle = self._loop.call_later(self.period, self._tick)
