"""The gateway object: everything a running Corral holds, built by the app factory."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from corral.adapters.fleet import Fleet
from corral.adapters.images import ImageFetcher
from corral.adapters.store.backends import backend_config, list_backends
from corral.adapters.store.db import Store
from corral.adapters.store.journal import Journal
from corral.adapters.store.request_audit import ContentLine
from corral.adapters.store.usage_log import UsageLog
from corral.app.auth import Auth, database_url
from corral.app.content_audit import ContentAudit, Retention
from corral.app.counting import TokenCounter
from corral.app.logbuffer import LogBuffer
from corral.app.nodes import NodeRegistry
from corral.app.workers import WorkerPool
from corral.config import ConfigSource, Settings
from corral.config.models import BackendConfig
from corral.core.breakers import BreakerBoard, BreakerConfig
from corral.core.errors import Conflict, NotFound
from corral.core.models import ModelMap
from corral.core.policies import Policy, make_policy
from corral.core.retry import Backoff, RetryBudget, RetryPolicy
from corral.core.types import BackendState
from corral.core.usage import UsageRecord

__all__ = ["Gateway", "breaker_config", "retry_policy"]

log = logging.getLogger("corral.gateway")


def policy_chooser(settings: Settings) -> Callable[[str], Policy]:
    """The routing policy for each model: the first matching group's, else the default.

    One policy object per group, so what a policy learns (latencies, load times,
    prefixes) is shared by the group's models; the scheduler caches each model's.
    """
    default = make_policy(settings.policy, settings.routing.options)
    groups = [(g, make_policy(g.policy, g.options)) for g in settings.routing.groups]

    def policy_for(model: str) -> Policy:
        return next((p for g, p in groups if g.matches(model)), default)

    return policy_for


def breaker_config(settings: Settings) -> BreakerConfig:
    cfg = settings.breakers
    return BreakerConfig(
        consecutive_failures=cfg.consecutive_failures,
        error_rate=cfg.error_rate,
        window_s=cfg.window_s,
        min_requests=cfg.min_requests,
        open_s=cfg.open_s,
        max_open_s=cfg.max_open_s,
        half_open_probes=cfg.half_open_probes,
    )


def breaker_board(settings: Settings) -> BreakerBoard | None:
    if not settings.breakers.enabled:
        return None
    return BreakerBoard(breaker_config(settings))


def retry_policy(settings: Settings) -> RetryPolicy:
    # Retries stay a small share of requests, so they never amplify an outage.
    return RetryPolicy(
        settings.retry.attempts,
        budget=RetryBudget(settings.retry.budget_ratio),
        backoff=Backoff(settings.retry.backoff_s, settings.retry.backoff_max_s),
    )


class Gateway:
    """Settings, the fleet, counters and the usage buffer; no module globals."""

    def __init__(
        self,
        settings: Settings,
        fleet: Fleet | None = None,
        *,
        store: Store | None = None,
        environ: Mapping[str, str] | None = None,
        config_source: ConfigSource | None = None,
    ) -> None:
        self.settings = settings
        # Where the settings came from (file, env, flags), for reload and save; None
        # when they were handed in as a value.
        self.config_source = config_source
        # The settings it started with: changes made at run time that apply only at
        # the next start are the differences from these (GET /admin/config).
        self.started_settings = settings
        # Recent log records for GET /admin/logs: on the root logger while running.
        self.logs = LogBuffer(settings.log_buffer)
        # The store: opened at start unless one is handed in (then its owner closes it).
        self.store: Store | None = store
        self._owns_store = store is None
        self.auth = Auth(settings)
        self._environ = environ  # where CORRAL_ADMIN_KEY is read; None = the process's
        self.fleet = fleet or Fleet(
            policy_chooser(settings),
            max_waiting=settings.queue.max_waiting,
            max_waiting_per_tenant=settings.queue.max_per_tenant,
            aging_s=settings.queue.aging_s,
            breakers=breaker_board(settings),
            queue_timeout=settings.queue.timeout_s,
            retry_after=settings.queue.retry_after_s,
            connect_timeout=settings.timeouts.connect_s,
            probe_interval=settings.health.interval_s,
            probe_timeout=settings.health.timeout_s,
            models_refresh=settings.health.models_refresh_s,
            models=ModelMap(
                (m.to_logical() for m in settings.models), list_unmapped=settings.list_unmapped
            ),
            retire_after=settings.timeouts.request_s,
        )
        for b in settings.backends:
            self.add_backend(b)
        self.fleet.scheduler.keep_alive_s = settings.routing.keep_alive_s
        self.retry_policy = retry_policy(settings)
        self.started_at = time.time()
        self.open_streams = 0
        # Finished requests, newest last. The accounting store (a later stage) drains
        # this; until then it keeps the most recent ones for inspection.
        self.usage: deque[UsageRecord] = deque(maxlen=10_000)
        self.usage_listeners: list[Callable[[UsageRecord], None]] = []
        # The usage ledger (usage.journal): each record is journaled, then batched into
        # the store; open between start and stop.
        self.ledger: UsageLog | None = None
        # The request audit (audit.content): None when off, so requests skip it entirely.
        self.content = ContentAudit(settings.audit) if settings.audit.content != "off" else None
        self.retention: Retention | None = None  # purges request audit rows; open while running
        self.requests_total = 0
        self.demo_nodes: list[Any] = []  # simulated nodes started by --demo
        self.demo_engines: list[Any] = []  # real engines started by --demo
        # What each backend's node agent last reported (CPU, memory, GPUs, addresses),
        # by backend name; shown by the admin API.
        self.telemetry: dict[str, dict[str, Any]] = {}
        # Fetches http(s) image URLs for backends that only take image bytes (Ollama).
        self.images = ImageFetcher(settings.images)
        # Nodes that joined through `corral agent` heartbeats (corral/app/nodes.py).
        self.nodes = NodeRegistry(self)
        # Spawned workers (settings.workers): started with the gateway, stopped with it.
        self.workers = WorkerPool(self, settings.workers) if settings.workers.enabled else None
        # Counts, with the backend's tokenizer, the tokens of answers that came without.
        self.counter = TokenCounter(self, timeout_s=settings.usage.tokenize_timeout_s)

    def add_backend(
        self,
        b: BackendConfig,
        *,
        origin: str = "config",
        headers: Mapping[str, str] | None = None,
    ) -> BackendState:
        """Put a backend into the fleet (not probed yet: `add_and_probe` does both).

        The one way a backend joins, whatever brought it: the settings, the admin API,
        a node agent or a spawned worker (``origin``). A taken name is `Conflict`.
        ``headers`` go with every request to it (a node relay's fleet token).
        """
        if b.name in self.fleet.backends:
            raise Conflict(f"backend {b.name!r} already exists", param="name")
        state = self.fleet.add(
            b.name,
            b.url,
            kind=b.kind,
            max_concurrency=b.max_concurrency,
            weight=b.weight,
            enabled=b.enabled,
            headers=headers,
        )
        state.max_per_model = b.max_per_model
        state.vram_bytes = int(b.vram_gb * 1024**3) if b.vram_gb is not None else None
        state.max_loaded_models = b.max_loaded_models
        state.origin = origin
        state.tags = tuple(b.tags)
        state.labels = dict(b.labels)
        return state

    async def add_and_probe(
        self, b: BackendConfig, *, origin: str, headers: Mapping[str, str] | None = None
    ) -> BackendState:
        """`add_backend`, then one probe so its health and models are known at once."""
        state = self.add_backend(b, origin=origin, headers=headers)
        await self.fleet.probe(b.name)
        return state

    async def remove_backend(self, name: str) -> BackendState:
        """Take a backend out of the fleet (its in-flight requests finish on their own
        connections); `NotFound` if there is none by that name."""
        state = self.fleet.backends.get(name)
        if state is None:
            raise NotFound(f"no backend named {name!r}", param="name")
        await self.fleet.remove(name)
        self.telemetry.pop(name, None)
        return state

    def record(self, record: UsageRecord, content: ContentLine | None = None) -> None:
        self.requests_total += 1
        self.usage.append(record)
        if self.ledger is not None:
            self.ledger.append(record, self._kind_of(record), content)
        for listener in self.usage_listeners:
            listener(record)

    def amend(self, record: UsageRecord) -> None:
        """``record``, already recorded, now has better counts (from the backend's
        tokenizer): the ledger's row is updated, not added to. The record was changed in
        place, so `usage` shows the new counts too."""
        if self.ledger is not None:
            self.ledger.append(record, self._kind_of(record), amend=True)

    def _kind_of(self, record: UsageRecord) -> str | None:
        """The dialect the request's backend spoke (its row's ``dialect_out``)."""
        backend = self.fleet.backends.get(record.backend) if record.backend else None
        return backend.kind if backend is not None else None

    async def start(self) -> None:
        self.nodes.load_token()  # before anything opens: a bad token file stops the start
        logging.getLogger().addHandler(self.logs)
        if self.store is None:
            self.store = await Store.open(database_url(self.settings))
        try:
            await self.store.upgrade()
            await self.auth.start(self.store, self._environ)
            await self._add_registered(self.store)
            if self.settings.usage.journal:
                ledger = UsageLog(
                    self.store,
                    Journal(self.settings.data_dir / "usage.journal"),
                    batch_s=self.settings.usage.batch_s,
                    batch_max=self.settings.usage.batch_max,
                )
                await ledger.start()  # replays what a previous run left uncommitted
                self.ledger = ledger
            rotate = self.ledger.journal.rotate if self.ledger and self.content else None
            self.retention = Retention(self.store, self.settings.audit, rotate)
            self.retention.start()
            if self.content is not None:
                # Say it where operators look: prompts may be stored from now on.
                kept = "prompts and answers" if self.content.full else "request metadata"
                log.warning(
                    "request audit %s: %s kept %g days",
                    self.content.level,
                    kept,
                    self.settings.audit.retention_days,
                )
        except BaseException:
            await self.auth.stop()
            await self._close_store()
            logging.getLogger().removeHandler(self.logs)
            raise
        await self.fleet.start()
        await self.nodes.start()
        up = [b.name for b in self.fleet.backends.values() if b.healthy]
        down = [b.name for b in self.fleet.backends.values() if not b.healthy]
        log.info("backends up: %s; down: %s", ", ".join(up) or "none", ", ".join(down) or "none")
        if self.workers is not None:
            await self.workers.start()

    async def _add_registered(self, store: Store) -> None:
        """The backends registered through the admin API in earlier runs."""
        for stored in await list_backends(store):
            try:
                self.add_backend(backend_config(stored), origin="registered")
            except Exception as exc:  # one bad row must not keep the gateway down
                log.error("registered backend %s not added: %s", stored.name, exc)

    async def stop(self) -> None:
        if self.workers is not None:  # first: they leave the fleet, then their processes end
            await self.workers.stop()
        await self.nodes.stop()
        # Counts under way go into the ledger before it closes (and need the transports).
        await self.counter.drain(self.settings.usage.tokenize_timeout_s)
        await self.fleet.stop()
        await self.images.close()
        await self.auth.stop()
        if self.retention is not None:
            retention, self.retention = self.retention, None
            await retention.stop()
        if self.ledger is not None:  # after the fleet: its last requests are recorded
            ledger, self.ledger = self.ledger, None
            await ledger.stop()
        await self._close_store()
        logging.getLogger().removeHandler(self.logs)

    async def _close_store(self) -> None:
        if self.store is not None and self._owns_store:
            await self.store.close()
            self.store = None
