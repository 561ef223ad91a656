"""The gateway object: everything a running Corral holds, built by the app factory."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from corral.adapters.fleet import Fleet
from corral.adapters.images import ImageFetcher
from corral.config import Settings
from corral.core.models import ModelMap
from corral.core.policies import make_policy
from corral.core.usage import UsageRecord

__all__ = ["Gateway"]

log = logging.getLogger("corral.gateway")


class Gateway:
    """Settings, the fleet, counters and the usage buffer; no module globals."""

    def __init__(self, settings: Settings, fleet: Fleet | None = None) -> None:
        self.settings = settings
        self.fleet = fleet or Fleet(
            make_policy(settings.policy),
            max_waiting=settings.queue.max_waiting,
            queue_timeout=settings.queue.timeout_s,
            retry_after=settings.queue.retry_after_s,
            connect_timeout=settings.timeouts.connect_s,
            probe_interval=settings.health.interval_s,
            probe_timeout=settings.health.timeout_s,
            models_refresh=settings.health.models_refresh_s,
            models=ModelMap(
                (m.to_logical() for m in settings.models), list_unmapped=settings.list_unmapped
            ),
        )
        for b in settings.backends:
            self.fleet.add(
                b.name,
                b.url,
                kind=b.kind,
                max_concurrency=b.max_concurrency,
                weight=b.weight,
                enabled=b.enabled,
            )
        self.started_at = time.time()
        self.open_streams = 0
        # Finished requests, newest last. The accounting store (a later stage) drains
        # this; until then it keeps the most recent ones for inspection.
        self.usage: deque[UsageRecord] = deque(maxlen=10_000)
        self.usage_listeners: list[Callable[[UsageRecord], None]] = []
        self.requests_total = 0
        self.demo_nodes: list[Any] = []  # simulated nodes started by --demo
        self.demo_engines: list[Any] = []  # real engines started by --demo
        # Fetches http(s) image URLs for backends that only take image bytes (Ollama).
        self.images = ImageFetcher(settings.images)

    def record(self, record: UsageRecord) -> None:
        self.requests_total += 1
        self.usage.append(record)
        for listener in self.usage_listeners:
            listener(record)

    async def start(self) -> None:
        await self.fleet.start()
        up = [b.name for b in self.fleet.backends.values() if b.healthy]
        down = [b.name for b in self.fleet.backends.values() if not b.healthy]
        log.info("backends up: %s; down: %s", ", ".join(up) or "none", ", ".join(down) or "none")

    async def stop(self) -> None:
        await self.fleet.stop()
        await self.images.close()
