"""The cyclic garbage collector, run on a clock rather than on allocation counts.

CPython starts a young collection when the count of *net* new tracked objects passes a
threshold. A streaming gateway defeats that count: streams start and end at the same
rate, so the count grows slowly while the young generation fills with every stream
opened since the last collection. When the threshold is finally passed, the collection
walks all of them at once: 30-75 ms with 1,000 streams open, every few seconds, and
every open stream stalls that long (bench/streams_ab.py --gc-probe, BENCHMARKS.md).

`CollectorPacer` turns the automatic collector off and runs a young collection every
``period`` seconds instead. Each then walks only what was made since the last tick and
is still alive (a few dozen streams at 1,000 open: about a millisecond).

What survives a young collection is walked again only by a middle collection, and
everything (but the startup heap frozen before serving) by a full one. Those walk the
whole live set: ~50 ms with 1,000 streams open, a stall of every stream. They are due
every ``middle_every`` and ``full_every`` ticks (1 and 10 minutes), and they wait for a
quiet moment (at most ``quiet`` requests open), when the live set is small; under
load that never lets up they run anyway once ``patience`` times overdue (10 and 100
minutes). They free only cyclic garbage that outlived its first young collection;
the young collections in the streaming benchmark found no cyclic garbage at all, so
waiting should cost little memory.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable

__all__ = ["CollectorPacer"]


class CollectorPacer:
    """Young collections every ``period`` s; middle and full ones when due and quiet (see
    the module). ``start`` turns the automatic collector off, ``stop`` turns it back on
    (if it was on). ``open_requests`` says how many requests are open now."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        open_requests: Callable[[], int] = lambda: 0,
        *,
        period: float = 0.1,
        middle_every: int = 600,
        full_every: int = 6000,
        quiet: int = 32,
        patience: int = 10,
    ) -> None:
        if period <= 0 or middle_every < 1 or full_every < middle_every or patience < 1:
            raise ValueError("period > 0, 1 <= middle_every <= full_every, patience >= 1")
        self._loop = loop
        self._open_requests = open_requests
        self.period = period
        self.middle_every = middle_every
        self.full_every = full_every
        self.quiet = quiet
        self.patience = patience
        self.ticks = 0
        self._since_middle = 0  # ticks since the last middle (or full) collection
        self._since_full = 0
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
        self._since_middle += 1
        self._since_full += 1
        gc.collect(self._generation())
        self._handle = self._loop.call_later(self.period, self._tick)

    def _generation(self) -> int:
        """0, or the older generation that is due and may run now."""
        full = self._since_full >= self.full_every
        middle = self._since_middle >= self.middle_every
        if not (full or middle):
            return 0
        overdue = (
            self._since_full >= self.full_every * self.patience
            or self._since_middle >= self.middle_every * self.patience
        )
        if not overdue and self._open_requests() > self.quiet:
            return 0
        self._since_middle = 0
        if full:
            self._since_full = 0
            return 2
        return 1
