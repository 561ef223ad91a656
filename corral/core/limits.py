"""Rate limits, concurrency caps and token budgets: the arithmetic, with time passed in.

Per key: requests per minute and tokens per minute. Per user: requests at once, and
tokens per budget period (a UTC day, week or month). `Counters` is the interface the
gateway talks to; `LocalCounters` keeps everything in this process (a Redis-backed one
for several replicas comes with the scale-out issue: each method is one round trip,
which is why admission is one call and not one per limit).

Why token buckets and not sliding-window logs: a bucket is two numbers per key (level,
last update), O(1) per request whatever the limit, and tells exactly when enough has
refilled (the Retry-After). A bucket holding one minute's allowance and refilling
steadily admits the same long-run rate as a one-minute window, with a burst of at most
one minute's worth. Tokens per minute are taken from the estimate at admission and
settled with the real count at the end, so a bucket may go below zero (the key then
waits longer), which is how a stream that ran long pays for it.

Streams are charged as they go: `Counters.charge` takes a stream's output tokens from
the key's bucket and adds them to the user's budget spending in batches while it runs
(so concurrent streams see each other's spending, and an abandoned stream has paid for
what it produced), and `finish` settles the rest with the real count. What was charged
on the way is never refunded, so the settled total is the larger of the two.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from corral.core.errors import BadRequest

__all__ = [
    "PERIODS",
    "Admission",
    "Bucket",
    "Counters",
    "Limits",
    "LocalCounters",
    "Refusal",
    "period_bounds",
    "period_name",
]

PERIODS = ("day", "week", "month")
_MINUTE = 60.0


def period_bounds(period: str, now: datetime) -> tuple[datetime, datetime]:
    """The UTC calendar ``period`` (day, week from Monday, month) holding ``now``."""
    now = now.astimezone(UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day, day + timedelta(days=1)
    if period == "week":
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    if period == "month":
        start = day.replace(day=1)
        if start.month == 12:
            return start, start.replace(year=start.year + 1, month=1)
        return start, start.replace(month=start.month + 1)
    raise BadRequest(f"budget period must be one of {', '.join(PERIODS)}", param="period")


def period_name(period: str, start: datetime) -> str:
    """How a message names the period: "May 2026", "the week of 2026-05-04", "2026-05-04"."""
    if period == "month":
        return start.strftime("%B %Y")
    if period == "week":
        return f"the week of {start:%Y-%m-%d}"
    return f"{start:%Y-%m-%d}"


@dataclass(frozen=True, slots=True)
class Limits:
    """What one request is held to; None means no limit of that kind."""

    key: str  # the key's visible prefix: rate limits are per key
    user: str  # concurrency and budgets are per user
    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None
    budget: int | None = None  # tokens per period
    period: str = "month"

    @property
    def unlimited(self) -> bool:
        return (
            self.rpm is None
            and self.tpm is None
            and self.max_concurrent is None
            and self.budget is None
        )


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request may not start: 429 (retry later) or 403 (budget exhausted)."""

    status: int
    limit: str  # rpm, tpm, concurrent or budget
    message: str
    retry_after: float  # seconds


@dataclass(slots=True, eq=False)
class Admission:
    """A request let in: what to settle and release when it ends."""

    limits: Limits
    estimate: int  # tokens taken from the tpm bucket up front
    period_start: datetime | None  # the budget period charged, when there is a budget
    charged: int = 0  # tokens charged while it ran (a stream's output, as it went)

    def settled(self, tokens: int) -> int:
        """Tokens still to charge at the end, when the request used ``tokens`` in all."""
        return max(0, tokens - self.charged)


class Bucket:
    """A token bucket of ``capacity`` refilling at ``capacity`` per minute."""

    __slots__ = ("level", "updated")

    def __init__(self, capacity: float, now: float) -> None:
        self.level = capacity
        self.updated = now

    def refill(self, capacity: float, now: float) -> None:
        if now > self.updated:
            self.level = min(capacity, self.level + (now - self.updated) * capacity / _MINUTE)
            self.updated = now

    def wait(self, capacity: float, cost: float) -> float:
        """Seconds until ``cost`` (at most the capacity) is there; 0 when it is now."""
        missing = min(cost, capacity) - self.level
        return 0.0 if missing <= 0 else missing * _MINUTE / capacity if capacity else _MINUTE


class Counters(Protocol):
    """Where the counts live: this process now, Redis when there are several replicas."""

    async def admit(self, limits: Limits, estimate: int, now: datetime) -> Admission | Refusal:
        """Check every limit and, only if all pass, take the request into each count."""
        ...

    def charge(self, admission: Admission, tokens: int) -> None:
        """The running request used ``tokens`` more (a stream's output, in batches)."""
        ...

    def finish(self, admission: Admission, tokens: int, now: datetime) -> None:
        """The request ended having used ``tokens`` in all (including what `charge`
        took on the way): settle the counts, free its place."""
        ...

    def set_spent(self, user: str, period_start: datetime, tokens: int) -> None:
        """The user's spending in the period as the store knows it (at start, on reload)."""
        ...

    def spent(self, user: str, period_start: datetime) -> int: ...


def _seconds(s: float) -> str:
    return f"{max(1, round(s))} s"


def _time(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%MZ")


class LocalCounters:
    """Every count in this process's memory; nothing here awaits anything."""

    def __init__(self) -> None:
        self._rpm: dict[str, Bucket] = {}
        self._tpm: dict[str, Bucket] = {}
        self._running: dict[str, int] = {}
        self._spent: dict[tuple[str, datetime], int] = {}
        self._periods: dict[str, tuple[datetime, datetime]] = {}

    def in_flight(self, user: str) -> int:
        return self._running.get(user, 0)

    def spent(self, user: str, period_start: datetime) -> int:
        return self._spent.get((user, period_start), 0)

    def set_spent(self, user: str, period_start: datetime, tokens: int) -> None:
        self._spent[(user, period_start)] = tokens

    def _period(self, period: str, now: datetime) -> tuple[datetime, datetime]:
        # The calendar arithmetic costs more than the rest of admission: once per period.
        bounds = self._periods.get(period)
        if bounds is None or not bounds[0] <= now < bounds[1]:
            bounds = self._periods[period] = period_bounds(period, now)
        return bounds

    def _bucket(self, table: dict[str, Bucket], key: str, cap: int, now: float) -> Bucket:
        bucket = table.get(key)
        if bucket is None:
            bucket = table[key] = Bucket(cap, now)
        else:
            bucket.refill(cap, now)
        return bucket

    async def admit(self, limits: Limits, estimate: int, now: datetime) -> Admission | Refusal:
        return self.admit_now(limits, estimate, now)

    def admit_now(self, limits: Limits, estimate: int, now: datetime) -> Admission | Refusal:
        """`admit` without the coroutine (checks first, then takes: all or nothing)."""
        t = now.timestamp()
        rpm = tpm = None
        if limits.rpm is not None:
            rpm = self._bucket(self._rpm, limits.key, limits.rpm, t)
            wait = rpm.wait(limits.rpm, 1)
            if wait or limits.rpm == 0:
                return Refusal(
                    429,
                    "rpm",
                    f"requests per minute limit of {limits.rpm:,} for key {limits.key} "
                    f"reached; resets in {_seconds(wait or _MINUTE)}",
                    wait or _MINUTE,
                )
        if limits.tpm is not None:
            tpm = self._bucket(self._tpm, limits.key, limits.tpm, t)
            wait = tpm.wait(limits.tpm, estimate)
            if wait or limits.tpm == 0:
                return Refusal(
                    429,
                    "tpm",
                    f"tokens per minute limit of {limits.tpm:,} for key {limits.key} "
                    f"reached; resets in {_seconds(wait or _MINUTE)}",
                    wait or _MINUTE,
                )
        running = self._running.get(limits.user, 0)
        if limits.max_concurrent is not None and running >= limits.max_concurrent:
            return Refusal(
                429,
                "concurrent",
                f"concurrent requests limit of {limits.max_concurrent} for user "
                f"{limits.user} reached; resets when one of them finishes",
                1.0,
            )
        start = None
        if limits.budget is not None:
            start, end = self._period(limits.period, now)
            if self._spent.get((limits.user, start), 0) >= limits.budget:
                return Refusal(
                    403,
                    "budget",
                    f"token budget of {limits.budget:,} for {period_name(limits.period, start)} "
                    f"exhausted; resets {_time(end)}",
                    (end - now).total_seconds(),
                )
        if rpm is not None:
            rpm.level -= 1
        if tpm is not None:
            tpm.level -= estimate
        self._running[limits.user] = running + 1
        return Admission(limits, estimate if tpm is not None else 0, start)

    def charge(self, admission: Admission, tokens: int) -> None:
        if tokens <= 0:
            return
        admission.charged += tokens
        limits = admission.limits
        if limits.tpm is not None:
            bucket = self._tpm.get(limits.key)
            if bucket is not None:
                bucket.level -= tokens  # refilled lazily by the next admission's clock
        if admission.period_start is not None:
            slot = (limits.user, admission.period_start)
            self._spent[slot] = self._spent.get(slot, 0) + tokens

    def finish(self, admission: Admission, tokens: int, now: datetime) -> None:
        limits = admission.limits
        left = self._running.get(limits.user, 0) - 1
        if left > 0:
            self._running[limits.user] = left
        else:
            self._running.pop(limits.user, None)
        extra = admission.settled(tokens)
        if limits.tpm is not None:
            bucket = self._bucket(self._tpm, limits.key, limits.tpm, now.timestamp())
            # The estimate was taken up front and the stream's charges on the way; the
            # real count replaces the estimate (a refund when it was high), never above
            # a full bucket.
            bucket.level = min(float(limits.tpm), bucket.level + admission.estimate - extra)
        if admission.period_start is not None and extra > 0:
            slot = (limits.user, admission.period_start)
            self._spent[slot] = self._spent.get(slot, 0) + extra
