"""How many spawned workers the fleet should have, and which go first.

Pure: the gateway's supervisor (corral/app/workers.py) reads the queue and the
workers' load, passes them in with the time, and carries out the decision. The
rules, in order:

1. **The floor.** Fewer live workers (starting or ready) than ``min``: add the
   difference at once, whatever the cool-down, since ``min`` is a promise. After a
   worker failed to start or crashed, the next one waits ``retry_base_s`` x 2^(n-1)
   (up to ``retry_max_s``) for the n-th failure in a row, so a command that cannot
   start does not respawn in a tight loop. A worker that becomes ready resets the count.
2. **The cool-down.** Two scaling actions (up or down) are at least ``cooldown_s``
   apart, so a queue that comes and goes does not make the fleet flap.
3. **Up.** Requests are waiting for the workers' models and either ``up_queue`` or
   more wait, or the oldest has waited ``up_wait_s``: ask for one worker per
   ``up_queue`` waiting (at least one), less the workers already starting, within
   ``max``.
4. **Down.** Nothing waits: every ready worker idle for ``idle_s`` (no request in
   flight or finished) goes, the longest idle first, down to ``min``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "Autoscaler",
    "Pressure",
    "PruneMode",
    "ScaleDecision",
    "ScaleKind",
    "ScaleRule",
    "WorkerLoad",
    "next_gpu",
    "prune_order",
]

PruneMode = Literal["idle", "all"]
ScaleKind = Literal["min", "up", "down"]


@dataclass(frozen=True, slots=True)
class ScaleRule:
    min: int
    max: int
    up_queue: int = 4
    up_wait_s: float = 10.0
    idle_s: float = 300.0
    cooldown_s: float = 60.0
    autoscale: bool = True
    retry_base_s: float = 1.0
    retry_max_s: float = 60.0

    def __post_init__(self) -> None:
        if not 0 <= self.min <= self.max or self.up_queue < 1:
            raise ValueError("need 0 <= min <= max and up_queue >= 1")


@dataclass(frozen=True, slots=True)
class WorkerLoad:
    """One live worker as the autoscaler sees it."""

    id: str
    ready: bool  # serving; False while it starts (engine, model pulls)
    in_flight: int = 0
    idle_since: float | None = None  # when it last had nothing to do; None = busy
    started_at: float = 0.0

    def idle_for(self, now: float) -> float:
        return 0.0 if self.idle_since is None or self.in_flight else now - self.idle_since


@dataclass(frozen=True, slots=True)
class Pressure:
    """The queue in front of the workers' models."""

    waiting: int = 0
    oldest_wait_s: float = 0.0


@dataclass(frozen=True, slots=True)
class ScaleDecision:
    add: int = 0
    remove: tuple[str, ...] = ()
    reason: str = ""
    kind: ScaleKind | None = None  # min: refilling the floor; up, down: scaling

    def __bool__(self) -> bool:
        return bool(self.add or self.remove)


_NOTHING = ScaleDecision()


class Autoscaler:
    """Holds what the rules remember between looks: the last action and the failures."""

    def __init__(self, rule: ScaleRule) -> None:
        self.rule = rule
        self.last_action_at: float | None = None
        self.failures = 0  # failed starts and crashes in a row
        self.retry_at = -math.inf

    def cooling_until(self) -> float | None:
        if self.last_action_at is None:
            return None
        return self.last_action_at + self.rule.cooldown_s

    def failed(self, now: float) -> None:
        """A worker failed to start or crashed: the next start waits (doubling)."""
        self.failures += 1
        delay = self.rule.retry_base_s * 2 ** (self.failures - 1)
        self.retry_at = now + min(delay, self.rule.retry_max_s)

    def succeeded(self) -> None:
        """A worker became ready: starts are no longer held back."""
        self.failures = 0
        self.retry_at = -math.inf

    def decide(
        self, workers: Sequence[WorkerLoad], pressure: Pressure, now: float
    ) -> ScaleDecision:
        rule = self.rule
        live = len(workers)
        may_start = now >= self.retry_at
        if live < rule.min:
            if not may_start:
                return _NOTHING
            reason = f"below min ({live} of {rule.min})"
            return ScaleDecision(add=rule.min - live, reason=reason, kind="min")
        if not rule.autoscale:
            return _NOTHING
        until = self.cooling_until()
        if until is not None and now < until:
            return _NOTHING
        if pressure.waiting:
            if pressure.waiting < rule.up_queue and pressure.oldest_wait_s < rule.up_wait_s:
                return _NOTHING
            starting = sum(1 for w in workers if not w.ready)
            wanted = max(1, math.ceil(pressure.waiting / rule.up_queue)) - starting
            add = min(wanted, rule.max - live)
            if add <= 0 or not may_start:
                return _NOTHING
            self.last_action_at = now
            return ScaleDecision(
                add=add,
                reason=f"{pressure.waiting} waiting, oldest {pressure.oldest_wait_s:.1f}s",
                kind="up",
            )
        idle = [w for w in workers if w.ready and w.idle_for(now) >= rule.idle_s]
        spare = live - rule.min
        if not idle or spare <= 0:
            return _NOTHING
        idle.sort(key=lambda w: -w.idle_for(now))
        gone = tuple(w.id for w in idle[:spare])
        self.last_action_at = now
        return ScaleDecision(remove=gone, reason=f"idle for {rule.idle_s:g}s or more", kind="down")


def prune_order(workers: Iterable[WorkerLoad], mode: PruneMode, now: float) -> list[str]:
    """Which workers a prune takes, first to last.

    ``idle``: ready workers with nothing in flight, the longest idle first. ``all``:
    those, then workers still starting (the newest first), then busy ones with the
    fewest requests in flight first (they are drained before they stop).
    """
    ready_idle = [w for w in workers if w.ready and not w.in_flight]
    ready_idle.sort(key=lambda w: (-w.idle_for(now), w.started_at))
    if mode == "idle":
        return [w.id for w in ready_idle]
    starting = sorted((w for w in workers if not w.ready), key=lambda w: -w.started_at)
    busy = sorted((w for w in workers if w.ready and w.in_flight), key=lambda w: w.in_flight)
    return [w.id for w in (*ready_idle, *starting, *busy)]


def next_gpu(gpus: Sequence[str], in_use: Mapping[str, int], turn: int) -> tuple[str, int]:
    """The GPU for a new worker, and the next turn.

    Round-robin over ``gpus`` starting at ``turn``, skipping to the GPU running the
    fewest workers, so a GPU freed by a prune is refilled first.
    """
    if not gpus:
        raise ValueError("no GPUs to choose from")
    n = len(gpus)
    order = [(turn + i) % n for i in range(n)]
    best = min(order, key=lambda i: in_use.get(gpus[i], 0))
    return gpus[best], (best + 1) % n
