"""Circuit breakers and cooldowns, one per backend and one per backend:model.

Why: a backend that fails fast (Ollama answering 503 in a millisecond) always has the
fewest requests in flight, so least-connections would send it *more* work. A breaker
turns repeated failures into "no traffic for a while", then lets a few probes test
whether it recovered.

States::

    closed ──N consecutive transient failures, or error rate ≥ r over the window──► open
    open ──open period over──► half-open (admits ``half_open_probes`` at a time)
    half-open ──probe succeeds──► closed
    half-open ──probe fails──► open, for twice as long (up to ``max_open_s``)

The open period is ``open_s * 2^k`` for the k-th trip in a row; k starts again once a
breaker has stayed closed for a whole window.

Which breaker an outcome counts against (``Outcome.status`` 0 = no HTTP answer)::

    outcome                                   backend breaker   backend:model breaker
    ok                                        success           success
    permanent (400, 404, ...: client's fault) success           neither
    transient, no answer / 502 / 504          failure           neither
    transient, other HTTP (429, 500, 503)     success           failure

A backend that answers at all is reachable, so model-scoped errors (a 503 for one
model, an out-of-memory load) close only that model's door; 502/504 come from a proxy
saying the engine behind it is unreachable or hung, which is backend-wide.

A *cooldown* is an explicit block until a given time (Ollama's busy 503 with
Retry-After, an operator's hand), independent of the breaker state.

Pure: time is passed in. ``allows`` is the hot path: when nothing of a backend is open
or cooling it is one dict lookup, with no allocation.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

from corral.core.retry import NO_RESPONSE, SlidingCounts
from corral.core.types import Outcome

__all__ = ["BACKEND_WIDE_STATUSES", "BreakerBoard", "BreakerConfig", "BreakerView", "Transition"]

BreakerState = Literal["closed", "open", "half_open"]
Event = Literal["opened", "half_open", "closed", "cooldown", "cooldown_over"]

# Transient statuses that say the whole backend is unreachable or hung.
BACKEND_WIDE_STATUSES = frozenset({NO_RESPONSE, 502, 504})

_BACKEND = ""  # the backend-level breaker's key among a backend's breakers
_NEVER = float("-inf")
_OK, _FAIL, _NEUTRAL = 1, 2, 3
_VERBS = {"half_open": "half-open", "cooldown_over": "cooldown over"}


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """Thresholds; see the module docstring for what each one drives."""

    consecutive_failures: int = 5
    error_rate: float = 0.5
    window_s: float = 30.0
    min_requests: int = 10
    open_s: float = 5.0
    max_open_s: float = 60.0
    half_open_probes: int = 1
    # A probe whose outcome never came back frees its place after this long, so a lost
    # release cannot hold a breaker half-open forever.
    probe_timeout_s: float = 300.0

    def __post_init__(self) -> None:
        if self.consecutive_failures < 1 or self.half_open_probes < 1 or self.min_requests < 1:
            raise ValueError("consecutive_failures, half_open_probes, min_requests must be >= 1")
        if not 0.0 < self.error_rate <= 1.0:
            raise ValueError("error_rate must be in (0, 1]")
        if self.window_s <= 0 or self.open_s <= 0 or self.max_open_s < self.open_s:
            raise ValueError("window_s, open_s must be > 0 and max_open_s >= open_s")


@dataclass(frozen=True, slots=True)
class Transition:
    """A state change, for the gateway's log: ``str()`` reads as one line."""

    at: float
    backend: str
    model: str | None
    event: Event
    reason: str

    def __str__(self) -> str:
        target = self.backend if self.model is None else f"{self.backend}:{self.model}"
        return f"{_VERBS.get(self.event, self.event)} {target}: {self.reason}"


@dataclass(frozen=True, slots=True)
class BreakerView:
    """One breaker that is not simply closed, as the admin API shows it.

    ``state`` is ``cooldown`` for a closed breaker under an explicit cooldown;
    ``until`` is when it may take traffic again (None: half-open, probing now).
    """

    backend: str
    model: str | None
    state: Literal["open", "half_open", "cooldown"]
    since: float
    until: float | None
    reason: str
    consecutive_failures: int
    window_failures: int
    window_requests: int
    probes_in_flight: int
    trips: int
    cooldown_until: float | None


@dataclass(slots=True, eq=False)
class _Breaker:
    """One breaker; ``model`` is ``_BACKEND`` for the backend-level one."""

    backend: str
    model: str
    window: SlidingCounts  # total = answers, marked = failures
    state: BreakerState = "closed"
    since: float = _NEVER
    opened_at: float = _NEVER
    closed_at: float = _NEVER
    until: float = _NEVER
    trips: int = 0
    consecutive: int = 0
    probes: int = 0
    probe_at: float = _NEVER
    reason: str = ""
    cool_until: float = _NEVER
    cool_since: float = _NEVER
    cool_reason: str = ""

    def transition(self, now: float, event: Event, reason: str) -> Transition:
        model = None if self.model == _BACKEND else self.model
        return Transition(now, self.backend, model, event, reason)


def _status_text(status: int) -> str:
    return "no response" if status == NO_RESPONSE else str(status)


class BreakerBoard:
    """Every breaker and cooldown of the fleet; implements the scheduler's ``Breakers``.

    State changes are kept (the last ``max_events``) until :meth:`drain_events`.
    """

    def __init__(self, config: BreakerConfig | None = None, *, max_events: int = 256) -> None:
        self.config = config if config is not None else BreakerConfig()
        self._all: dict[str, dict[str, _Breaker]] = {}
        # Only breakers that are not closed or are cooling: what ``allows`` consults.
        self._blocked: dict[str, dict[str, _Breaker]] = {}
        self._events: deque[Transition] = deque(maxlen=max_events)

    # -- the scheduler's protocol -------------------------------------------------

    def allows(self, backend: str, model: str, now: float) -> bool:
        """May backend:model take a new request now?"""
        blocked = self._blocked.get(backend)
        if blocked is None:
            return True
        b = blocked.get(_BACKEND)
        if b is not None and not self._admits(b, now):
            return False
        b = blocked.get(model)
        return b is None or self._admits(b, now)

    def on_dispatch(self, backend: str, model: str, now: float) -> None:
        """A request was bound: in half-open it takes one of the probe places."""
        blocked = self._blocked.get(backend)
        if blocked is None:
            return
        for b in (blocked.get(_BACKEND), blocked.get(model)):
            if b is not None and b.state == "half_open":
                b.probes += 1
                b.probe_at = now

    def record(self, backend: str, model: str, outcome: Outcome, now: float) -> None:
        """Count how a request ended (the module docstring's table). One sent before its
        breaker opened (``now - outcome.duration_s``) is ignored while that is open."""
        if outcome.ok:
            on_backend, on_model = _OK, _OK
        elif not outcome.transient:
            on_backend, on_model = _OK, _NEUTRAL
        elif outcome.status in BACKEND_WIDE_STATUSES:
            on_backend, on_model = _FAIL, _NEUTRAL
        else:
            on_backend, on_model = _OK, _FAIL
        started = now - outcome.duration_s
        self._apply(self._get(backend, _BACKEND), on_backend, outcome.status, started, now)
        self._apply(self._get(backend, model), on_model, outcome.status, started, now)

    def forget_backend(self, backend: str) -> None:
        self._all.pop(backend, None)
        self._blocked.pop(backend, None)

    # -- cooldowns, admin ---------------------------------------------------------

    def cooldown(
        self, backend: str, model: str | None, until: float, reason: str, *, now: float
    ) -> None:
        """Keep backend (model None) or backend:model out of routing until ``until``
        (a longer cooldown already in place is kept)."""
        if until <= now:
            return
        b = self._get(backend, _BACKEND if model is None else model)
        if until <= b.cool_until:
            return
        if b.cool_until <= now:
            b.cool_since = now
        b.cool_until = until
        b.cool_reason = reason
        self._block(b)
        self._events.append(b.transition(now, "cooldown", f"{reason}, for {until - now:g}s"))

    def snapshot(self, now: float) -> list[BreakerView]:
        """Every breaker that is open, half-open or cooling, sorted by name."""
        views: list[BreakerView] = []
        for backend in sorted(self._blocked):
            blocked = self._blocked[backend]
            for key in sorted(blocked):
                b = blocked[key]
                self._refresh(b, now)
                if key in blocked:  # else its cooldown just ended
                    views.append(self._view(b, now))
        return views

    def clear(self, backend: str | None = None, model: str | None = None) -> int:
        """Close open breakers and end cooldowns: all, one backend's, or one model's.

        ``model`` None clears the backend-level breaker and every model's. Returns
        how many were cleared.
        """
        names = list(self._blocked) if backend is None else [backend]
        cleared = 0
        for name in names:
            blocked = self._blocked.get(name)
            if blocked is None:
                continue
            keys = list(blocked) if model is None else [k for k in (model,) if k in blocked]
            for key in keys:
                del blocked[key]
                self._all[name].pop(key, None)  # a fresh breaker starts next time
                cleared += 1
            if not blocked:
                del self._blocked[name]
        return cleared

    @property
    def has_events(self) -> bool:
        """State changes wait to be drained (a cheap test for the release path)."""
        return bool(self._events)

    def drain_events(self) -> list[Transition]:
        """The state changes since the last call, oldest first."""
        events = list(self._events)
        self._events.clear()
        return events

    # -- transitions --------------------------------------------------------------

    def _get(self, backend: str, key: str) -> _Breaker:
        breakers = self._all.get(backend)
        if breakers is None:
            breakers = self._all[backend] = {}
        b = breakers.get(key)
        if b is None:
            b = breakers[key] = _Breaker(backend, key, SlidingCounts(self.config.window_s))
        return b

    def _admits(self, b: _Breaker, now: float) -> bool:
        self._refresh(b, now)
        if b.cool_until > now or b.state == "open":
            return False
        if b.state == "closed" or b.probes < self.config.half_open_probes:
            return True
        if now - b.probe_at >= self.config.probe_timeout_s:
            b.probes = 0  # their outcomes never came back: let new probes go
            return True
        return False

    def _refresh(self, b: _Breaker, now: float) -> None:
        """Apply what time alone changes: a cooldown ending, an open period ending."""
        if b.cool_until != _NEVER and b.cool_until <= now:
            b.cool_until = _NEVER
            self._events.append(b.transition(now, "cooldown_over", b.cool_reason))
            b.cool_reason = ""
            if b.state == "closed":
                self._unblock(b)
        if b.state == "open" and now >= b.until:
            b.state = "half_open"
            b.since = now
            b.probes = 0
            n = self.config.half_open_probes
            self._events.append(
                b.transition(now, "half_open", f"open period over, {n} probe(s) allowed")
            )

    def _apply(self, b: _Breaker, verdict: int, status: int, started: float, now: float) -> None:
        cfg = self.config
        if b.state == "closed":
            if verdict == _NEUTRAL:
                return
            failed = verdict == _FAIL
            b.window.add(now, 1, 1 if failed else 0)
            if not failed:
                b.consecutive = 0
                return
            b.consecutive += 1
            if b.consecutive >= cfg.consecutive_failures:
                self._open(b, now, f"{b.consecutive} consecutive failures ({_status_text(status)})")
                return
            answers, failures = b.window.totals(now)
            if answers >= cfg.min_requests and failures >= cfg.error_rate * answers:
                self._open(
                    b,
                    now,
                    f"error rate {failures / answers:.0%} ({failures}/{answers}) "
                    f"over {cfg.window_s:g}s, last {_status_text(status)}",
                )
            return
        if started < b.opened_at:
            return  # sent before it opened: says nothing about recovery
        self._refresh(b, now)
        if b.state != "half_open":
            return
        if b.probes > 0:
            b.probes -= 1
        if verdict == _OK:
            self._close(b, now)
        elif verdict == _FAIL:
            self._open(b, now, f"probe failed ({_status_text(status)})")

    def _open(self, b: _Breaker, now: float, reason: str) -> None:
        cfg = self.config
        if b.state == "closed" and now - b.closed_at >= cfg.window_s:
            b.trips = 0  # it held for a whole window: start the doubling again
        period = min(cfg.open_s * 2.0 ** min(b.trips, 30), cfg.max_open_s)
        b.trips += 1
        b.state = "open"
        b.since = b.opened_at = now
        b.until = now + period
        b.probes = 0
        b.reason = reason
        self._block(b)
        self._events.append(b.transition(now, "opened", f"{reason}, for {period:g}s"))

    def _close(self, b: _Breaker, now: float) -> None:
        b.state = "closed"
        b.since = b.closed_at = now
        b.consecutive = 0
        b.probes = 0
        b.reason = ""
        b.window.reset()  # failures from before the trip must not trip it again
        if b.cool_until <= now:
            self._unblock(b)
        self._events.append(b.transition(now, "closed", "probe succeeded"))

    def _block(self, b: _Breaker) -> None:
        self._blocked.setdefault(b.backend, {})[b.model] = b

    def _unblock(self, b: _Breaker) -> None:
        blocked = self._blocked.get(b.backend)
        if blocked is not None:
            blocked.pop(b.model, None)
            if not blocked:
                del self._blocked[b.backend]

    def _view(self, b: _Breaker, now: float) -> BreakerView:
        cooling = b.cool_until > now
        answers, failures = b.window.totals(now)
        until: float | None
        if b.state == "closed":
            state: Literal["open", "half_open", "cooldown"] = "cooldown"
            since, until, reason = b.cool_since, b.cool_until, b.cool_reason
        else:
            state, since, reason = b.state, b.since, b.reason
            until = b.until if b.state == "open" else None
            if cooling:
                until = max(until or now, b.cool_until)
                reason = f"{reason}; cooldown: {b.cool_reason}"
        return BreakerView(
            backend=b.backend,
            model=None if b.model == _BACKEND else b.model,
            state=state,
            since=since,
            until=until,
            reason=reason,
            consecutive_failures=b.consecutive,
            window_failures=failures,
            window_requests=answers,
            probes_in_flight=b.probes,
            trips=b.trips,
            cooldown_until=b.cool_until if cooling else None,
        )
