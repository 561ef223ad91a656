"""The gateway's numbers: requests since start, what runs now, recent latencies.

Latencies come from the most recent finished requests the gateway keeps in memory
(``Gateway.usage``, up to 10,000), computed when asked: nothing is added to the
request path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from corral.core.usage import UsageRecord

if TYPE_CHECKING:
    from corral.app.gateway import Gateway

__all__ = ["BackendStats", "Latency", "StatsView", "stats_view"]


class Latency(BaseModel):
    p50_s: float | None = Field(description="Median, seconds; null without requests.")
    p95_s: float | None = Field(description="95th percentile, seconds.")
    mean_s: float | None = Field(description="Mean, seconds.")


class BackendStats(BaseModel):
    name: str = Field(description="The backend.")
    healthy: bool = Field(description="Its last probe succeeded.")
    in_flight: int = Field(description="Requests running on it now.")
    served: int = Field(description="Requests it answered since the gateway started.")
    failed: int = Field(description="Requests that failed on it since the gateway started.")
    recent_requests: int = Field(description="Of the recent requests, how many it served.")
    recent_errors: int = Field(description="Of those, how many ended with an error status.")
    latency: Latency = Field(description="Whole-request time of its recent requests.")
    ttfb: Latency = Field(description="Time to first byte of its recent requests.")


class StatsView(BaseModel):
    uptime_s: float = Field(description="Seconds since the gateway started.")
    requests_total: int = Field(description="Requests finished since start (every endpoint).")
    in_flight: int = Field(description="Requests holding a backend slot now.")
    open_streams: int = Field(description="Streamed answers open now.")
    waiting: int = Field(description="Requests waiting in the queue.")
    paused: bool = Field(description="Admission is paused.")
    recent: int = Field(description="Recent requests the numbers below are computed over.")
    by_status: dict[str, int] = Field(description="Recent requests by status class (2xx, 4xx...).")
    latency: Latency = Field(description="Whole-request time of the recent requests.")
    backends: list[BackendStats] = Field(description="Per backend, by name.")


def _latency(values: Sequence[float]) -> Latency:
    if not values:
        return Latency(p50_s=None, p95_s=None, mean_s=None)
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 6)

    return Latency(p50_s=at(0.5), p95_s=at(0.95), mean_s=round(sum(ordered) / len(ordered), 6))


def _status_class(status: int) -> str:
    return f"{status // 100}xx" if status >= 100 else str(status)


def stats_view(gw: Gateway, now: float) -> StatsView:
    records: list[UsageRecord] = list(gw.usage)
    by_status: dict[str, int] = {}
    per_backend: dict[str, list[UsageRecord]] = {}
    for r in records:
        key = _status_class(r.status)
        by_status[key] = by_status.get(key, 0) + 1
        if r.backend is not None:
            per_backend.setdefault(r.backend, []).append(r)
    backends = []
    for name, state in sorted(gw.fleet.backends.items()):
        mine = per_backend.get(name, [])
        backends.append(
            BackendStats(
                name=name,
                healthy=state.healthy,
                in_flight=state.in_flight,
                served=state.served,
                failed=state.failed,
                recent_requests=len(mine),
                recent_errors=sum(1 for r in mine if r.status >= 400 or r.error),
                latency=_latency([r.duration_s for r in mine]),
                ttfb=_latency([r.ttfb_s for r in mine if r.ttfb_s is not None]),
            )
        )
    sched = gw.fleet.scheduler
    return StatsView(
        uptime_s=round(now - gw.started_at, 3),
        requests_total=gw.requests_total,
        in_flight=sched.in_flight,
        open_streams=gw.open_streams,
        waiting=sched.waiting,
        paused=sched.paused,
        recent=len(records),
        by_status=dict(sorted(by_status.items())),
        latency=_latency([r.duration_s for r in records]),
        backends=backends,
    )
