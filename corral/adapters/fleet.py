"""The live fleet: backend states, their connections, health probes and slot waits.

``Fleet`` drives the pure ``Scheduler`` from the event loop: it owns the futures of
queued requests, probes each backend on an interval (``/api/tags`` for Ollama, which
also refreshes its model list), and refreshes model lists on demand when a request
names a model nobody seems to hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

import msgspec

from corral.adapters.engine_metrics import parse_vllm_metrics
from corral.adapters.upstream import HttpTransport, Transport, UpstreamRequest
from corral.core.breakers import BreakerBoard
from corral.core.errors import QueueTimeout
from corral.core.models import ModelMap
from corral.core.names import normalize_model
from corral.core.policies import Policy
from corral.core.scheduler import Scheduler, Ticket
from corral.core.types import BackendKind, BackendState, Outcome, RequestInfo

__all__ = ["Fleet"]

log = logging.getLogger("corral.fleet")

_tags_decoder = msgspec.json.Decoder()
_KEEP_ALIVE_S = 300.0  # Ollama's default keep-alive, when /api/ps gives no expiry


class Fleet:
    def __init__(
        self,
        policy: Policy | Callable[[str], Policy],
        *,
        max_waiting: int,
        max_waiting_per_tenant: int | None = None,
        aging_s: float = 30.0,
        breakers: BreakerBoard | None = None,
        queue_timeout: float,
        retry_after: float,
        connect_timeout: float,
        probe_interval: float,
        probe_timeout: float,
        models_refresh: float = 30.0,
        models: ModelMap | None = None,
        transport_factory: Callable[[str, Mapping[str, str]], Transport] | None = None,
        retire_after: float = 3600.0,
    ) -> None:
        self.breakers = breakers
        self.scheduler = Scheduler(
            policy,
            max_waiting=max_waiting,
            max_waiting_per_tenant=max_waiting_per_tenant,
            aging_s=aging_s,
            breakers=breakers,
        )
        # Logical models and aliases: backends' own names are filed under these keys.
        self.models = models or ModelMap()
        self.transports: dict[str, Transport] = {}
        # Raw /api/tags entries per backend, served merged by GET /api/tags.
        self.tag_entries: dict[str, dict[str, dict[str, Any]]] = {}
        self._queue_timeout = queue_timeout
        self._retry_after = retry_after
        self._probe_interval = probe_interval
        self._probe_timeout = probe_timeout
        self._models_refresh = models_refresh
        self._models_read_at: dict[str, float] = {}
        self._no_metrics: set[str] = set()
        self._make_transport = transport_factory or (
            lambda url, headers: HttpTransport(
                url, connect_timeout=connect_timeout, headers=headers
            )
        )
        # Transports replaced by `retarget`, closed once the requests they may still
        # carry are long over (``retire_after``: the longest a request may last).
        self._retired: list[tuple[float, Transport]] = []
        self._retire_after = retire_after
        self._loop_task: asyncio.Task[None] | None = None
        self._refresh: asyncio.Task[None] | None = None
        self._last_refresh = -1e9
        self._wake_prober = asyncio.Event()

    # -- membership -------------------------------------------------------------

    @property
    def backends(self) -> dict[str, BackendState]:
        return self.scheduler.backends

    def add(
        self,
        name: str,
        url: str,
        *,
        kind: BackendKind = "ollama",
        max_concurrency: int = 4,
        weight: float = 1.0,
        enabled: bool = True,
        headers: Mapping[str, str] | None = None,
    ) -> BackendState:
        """A new backend (``headers`` go with every request sent to it)."""
        state = BackendState(
            name=name,
            url=url.rstrip("/"),
            kind=kind,
            max_concurrency=max_concurrency,
            weight=weight,
            enabled=enabled,
        )
        self.scheduler.add_backend(state)
        self.transports[name] = self._make_transport(state.url, headers or {})
        self.tag_entries[name] = {}
        return state

    def retarget(self, name: str, url: str, headers: Mapping[str, str] | None = None) -> None:
        """Send ``name``'s future requests to a new URL (a node's address changed).

        Requests already under way finish on the old connections; the old transport
        is closed ``retire_after`` seconds later.
        """
        state = self.backends[name]
        old = self.transports[name]
        state.url = url.rstrip("/")
        self.transports[name] = self._make_transport(state.url, headers or {})
        self._retired.append((asyncio.get_running_loop().time(), old))
        self.probe_soon()

    async def remove(self, name: str) -> None:
        self.scheduler.remove_backend(name)
        self.tag_entries.pop(name, None)
        self._models_read_at.pop(name, None)
        transport = self.transports.pop(name, None)
        if transport is not None:
            await transport.close()

    def find(self, key: str) -> BackendState | None:
        """A backend by name or by URL."""
        state = self.backends.get(key)
        if state is not None:
            return state
        key = key.rstrip("/")
        for state in self.backends.values():
            if state.url == key:
                return state
        return None

    def routable(self, kind: BackendKind | None = None) -> list[BackendState]:
        return [
            b for b in self.backends.values() if b.routable and (kind is None or b.kind == kind)
        ]

    # -- lifecycle --------------------------------------------------------------

    async def start(self) -> None:
        """Probe every backend once (an unreachable one is marked down), then loop."""
        await self.probe_all()
        self._loop_task = asyncio.create_task(self._probe_loop(), name="corral-probes")

    async def stop(self) -> None:
        for task in (self._loop_task, self._refresh):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for transport in self.transports.values():
            await transport.close()
        retired, self._retired = self._retired, []
        for _, transport in retired:
            await transport.close()

    async def _probe_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._probe_interval):
                    await self._wake_prober.wait()
            self._wake_prober.clear()
            await self.probe_all(models=False)
            if self._retired:
                await self._close_retired()

    async def _close_retired(self) -> None:
        cutoff = asyncio.get_running_loop().time() - self._retire_after
        done = [t for at, t in self._retired if at <= cutoff]
        self._retired = [(at, t) for at, t in self._retired if at > cutoff]
        for transport in done:
            await transport.close()

    def probe_soon(self) -> None:
        """Ask for a probe round now (e.g. after a connect error)."""
        self._wake_prober.set()

    # -- probes -----------------------------------------------------------------

    async def probe_all(self, names: Iterable[str] | None = None, *, models: bool = True) -> None:
        targets = list(names) if names is not None else list(self.backends)
        await asyncio.gather(*(self.probe(n, models=models) for n in targets))

    async def probe(self, name: str, *, models: bool = True) -> None:
        """Check one backend; read its model list too when asked or when it is stale.

        A liveness check between model refreshes asks the cheapest endpoint
        (``/api/version`` on Ollama); a down backend always gets the full read.
        """
        state = self.backends.get(name)
        transport = self.transports.get(name)
        if state is None or transport is None or state.offline:
            return  # an offline node is probed again when its agent is heard
        now = asyncio.get_running_loop().time()
        stale = now - self._models_read_at.get(name, -1e9) >= self._models_refresh
        read_models = models or stale or not state.healthy
        if state.kind == "ollama":
            path = "/api/tags" if read_models else "/api/version"
        else:
            path = "/v1/models"
        try:
            async with asyncio.timeout(self._probe_timeout):
                resp = await transport.send(UpstreamRequest("GET", path))
                try:
                    body = await resp.read()
                finally:
                    resp.close()
                if resp.status != 200:
                    raise RuntimeError(f"{path} answered {resp.status}")
                entries = _parse_model_list(state.kind, body) if read_models else None
                if state.version is None and state.kind == "ollama":
                    state.version = await self._read_version(transport)
                if state.kind == "openai" and name not in self._no_metrics:
                    await self._read_signals(state, transport, now)
                resident = (
                    await self._read_ps(name, transport, now) if state.kind == "ollama" else None
                )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any failure of a probe marks the backend down
            self._mark_down(state, f"probe failed: {exc or type(exc).__name__}", now)
            return
        placed = None
        if entries is not None:
            self._models_read_at[name] = now
            placed = self.models.backend_models(name, entries)
            self.tag_entries[name] = {key: entries[m.source] for key, m in placed.items()}
            state.model_bytes = {
                key: int(entries[m.source].get("size") or 0) for key, m in placed.items()
            }
        if self.scheduler.probed(name, now, models=placed, loaded=resident):
            log.info("backend %s is up (%d models)", name, len(state.models))
            self._pump()

    async def _read_signals(self, state: BackendState, transport: Transport, now: float) -> None:
        """vLLM's load signals from its /metrics; engines without them are not asked again."""
        resp = await transport.send(UpstreamRequest("GET", "/metrics"))
        try:
            text = (await resp.read()).decode("utf-8", "replace") if resp.status == 200 else ""
        finally:
            resp.close()
        signals = parse_vllm_metrics(text, now) if text else None
        if signals is None:
            self._no_metrics.add(state.name)
        state.signals = signals

    async def _read_ps(self, name: str, transport: Transport, now: float) -> dict[str, float]:
        """Ollama's resident models (/api/ps) and when each unloads, on the loop's clock."""
        resp = await transport.send(UpstreamRequest("GET", "/api/ps"))
        try:
            body = await resp.read() if resp.status == 200 else b""
        finally:
            resp.close()
        if not body:
            return {}
        entries = _parse_model_list("ollama", body)
        placed = self.models.backend_models(name, entries)
        wall = time.time()
        return {
            key: now + _until(entries[m.source].get("expires_at"), wall)
            for key, m in placed.items()
        }

    async def _read_version(self, transport: Transport) -> str | None:
        resp = await transport.send(UpstreamRequest("GET", "/api/version"))
        try:
            if resp.status != 200:
                return None
            data = msgspec.json.decode(await resp.read())
        finally:
            resp.close()
        version = data.get("version") if isinstance(data, dict) else None
        return version if isinstance(version, str) else None

    def _mark_down(self, state: BackendState, why: str, now: float) -> None:
        if self.scheduler.unreachable(state.name, now, why):
            log.warning("backend %s is down: %s", state.name, why)

    def report_unreachable(self, name: str, why: str) -> None:
        """A request could not connect: take the backend out now, probe it soon."""
        state = self.backends.get(name)
        if state is not None:
            self._mark_down(state, why, asyncio.get_running_loop().time())
            self.probe_soon()

    def upstream_name(self, name: str, model: str) -> str:
        """The name backend ``name`` uses for ``model`` (a normalized key)."""
        entry = self.tag_entries.get(name, {}).get(model)
        if entry is not None:
            upstream = entry.get("id") or entry.get("model") or entry.get("name")
            if isinstance(upstream, str):
                return upstream
        return model

    def forget_model(self, name: str, model: str) -> None:
        self.scheduler.forget_model(name, model)
        self.tag_entries.get(name, {}).pop(model, None)

    async def refresh_models(self, min_interval: float = 1.0) -> None:
        """Refresh every backend's model list now, coalescing concurrent callers."""
        loop = asyncio.get_running_loop()
        if self._refresh is None or self._refresh.done():
            if loop.time() - self._last_refresh < min_interval:
                return
            self._last_refresh = loop.time()
            self._refresh = asyncio.create_task(self.probe_all())
        await asyncio.shield(self._refresh)

    # -- slots --------------------------------------------------------------------

    async def acquire(
        self, info: RequestInfo, exclude: frozenset[str] = frozenset(), attempt: int = 1
    ) -> Ticket:
        """Wait for a slot; the returned ticket carries the routing decision."""
        loop = asyncio.get_running_loop()
        sched = self.scheduler
        wait = self._queue_timeout
        if info.max_wait_s is not None and info.max_wait_s < wait:
            wait = info.max_wait_s
        ticket = sched.submit(info, loop.time(), wait, exclude=exclude, attempt=attempt)
        if ticket.decision is not None:
            return ticket
        future: asyncio.Future[Ticket] = loop.create_future()
        ticket.token = future
        self._pump()
        try:
            async with asyncio.timeout(wait):
                return await future
        except TimeoutError:
            sched.cancel(ticket)
            raise QueueTimeout(
                f"no backend for {info.model!r} had a free slot within "
                f"{wait:g}s; try again shortly",
                retry_after=self._retry_after,
            ) from None
        except asyncio.CancelledError:
            sched.cancel(ticket)
            if future.done() and not future.cancelled():
                # Bound in the same instant the client left: hand the slot back.
                self.release(ticket, Outcome(ok=True))
            raise

    def release(self, ticket: Ticket, outcome: Outcome) -> None:
        now = asyncio.get_running_loop().time()
        for bound in self.scheduler.release(ticket, outcome, now):
            self._hand_over(bound)
        if self.breakers is not None and self.breakers.has_events:
            for event in self.breakers.drain_events():
                log.warning("breaker %s", event)

    # -- operations (the admin API calls these) ------------------------------------

    def pause(self) -> None:
        """Stop dispatching; requests queue (up to their deadlines) until resume()."""
        self.scheduler.pause()
        log.warning("admission paused: requests queue until resumed")

    def resume(self) -> None:
        log.info("admission resumed (%d waiting)", self.scheduler.waiting)
        for bound in self.scheduler.resume(asyncio.get_running_loop().time()):
            self._hand_over(bound)

    def drain(self, name: str, on: bool = True) -> None:
        """A draining backend finishes what it has and takes nothing new."""
        self.scheduler.drain(name, on)
        log.info("backend %s %s", name, "draining" if on else "no longer draining")
        if not on:
            self._pump()

    def cool_down(self, backend: str, model: str | None, seconds: float, reason: str) -> None:
        """Keep traffic off backend:model (or the whole backend) for ``seconds``."""
        if self.breakers is not None:
            now = asyncio.get_running_loop().time()
            self.breakers.cooldown(backend, model, now + seconds, reason, now=now)
            log.info("cooldown %s:%s for %.1fs: %s", backend, model or "*", seconds, reason)

    def charge(self, ticket: Ticket, output_tokens: float) -> None:
        self.scheduler.charge(ticket, output_tokens)

    def _pump(self) -> None:
        now = asyncio.get_running_loop().time()
        for bound in self.scheduler.pump(now):
            self._hand_over(bound)

    def _hand_over(self, ticket: Ticket) -> None:
        token = ticket.token
        if token is None and ticket.decision is not None:
            return  # bound inside submit(): the caller reads ticket.decision itself
        assert isinstance(token, asyncio.Future)
        if token.done():
            self.release(ticket, Outcome(ok=True))
        else:
            token.set_result(ticket)


def _until(expires_at: object, wall: float) -> float:
    """Seconds from now until an /api/ps ``expires_at`` (RFC 3339; far future = never)."""
    if not isinstance(expires_at, str):
        return _KEEP_ALIVE_S
    try:
        when = datetime.fromisoformat(expires_at).timestamp()
    except ValueError:
        return _KEEP_ALIVE_S
    left = when - wall
    return float("inf") if left > 10 * 365 * 86400 else max(0.0, left)


def _parse_model_list(kind: BackendKind, body: bytes) -> dict[str, dict[str, Any]]:
    data = _tags_decoder.decode(body)
    out: dict[str, dict[str, Any]] = {}
    if kind == "ollama":
        for entry in data.get("models") or []:
            name = entry.get("name") or entry.get("model")
            if isinstance(name, str):
                out[normalize_model(name)] = entry
    else:
        # Keyed like Ollama names (a bare id means id:latest) so one lookup serves
        # both kinds; the entry keeps the id the backend wants to hear.
        for entry in data.get("data") or []:
            name = entry.get("id")
            if isinstance(name, str):
                out[normalize_model(name)] = entry
    return out
