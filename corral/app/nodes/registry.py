"""The gateway's node registry: backends that joined through node agents' heartbeats.

A node agent (`corral agent`, or a seed-003 agent) heartbeats with the fleet token.
The first heartbeat adds its engine to the fleet as a backend named by the node id
(``origin="agent"``); later ones update its URL and telemetry. A sweeper applies the
rules of `corral.core.nodes`: a silent node goes offline (out of routing, unprobed),
then is removed; one that keeps failing is degraded. A heartbeat brings it back.

The registry lives in memory: after a gateway restart the agents' next heartbeats
register their nodes again.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from pydantic import ValidationError

from corral.app.nodes.wire import (
    Heartbeat,
    HeartbeatReply,
    NodeView,
    SeedLoad,
    SeedNode,
    first_address,
)
from corral.config import BackendConfig
from corral.config.fleet import FLEET_TOKEN_HEADER, FleetConfig, check_fleet_token
from corral.core.errors import Conflict, Forbidden, InvalidField, NotFound, Unauthorized
from corral.core.nodes import NodeStatus, NodeTimeouts, node_status, should_remove, vram_from_gpus
from corral.core.types import BackendState

if TYPE_CHECKING:
    from corral.app.gateway import Gateway

__all__ = ["FleetTokenError", "Node", "NodeRegistry", "load_fleet_token"]

log = logging.getLogger("corral.nodes")

_NO_TOKEN = (
    "this gateway takes no node agents: it has no fleet token. Set fleet.token "
    "(env CORRAL_FLEET_TOKEN) or fleet.token_file on the gateway, and give the agents "
    "the same token"
)


class FleetTokenError(Exception):
    """The configured fleet token cannot be used (the message says why)."""


def load_fleet_token(cfg: FleetConfig) -> bytes | None:
    """The fleet token from the settings or its file; None when there is none."""
    if cfg.token is not None:
        return cfg.token.get_secret_value().encode()
    if cfg.token_file is None:
        return None
    path = Path(cfg.token_file).expanduser()
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise FleetTokenError(f"fleet.token_file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise FleetTokenError(f"fleet.token_file {path}: not UTF-8 text") from None
    try:
        return check_fleet_token(text).encode()
    except ValueError as exc:
        raise FleetTokenError(f"fleet.token_file {path}: the token {exc}") from None


@dataclass(eq=False)
class Node:
    """One node as its agent last reported it."""

    id: str
    source: Literal["agent", "seed"]
    beat: Heartbeat
    first_seen: float  # wall clock, for people
    last_seen: float
    heard_at: float  # the event loop's clock, for the timeouts
    status: NodeStatus = "online"


class NodeRegistry:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        cfg = gw.settings.fleet
        self.limits = NodeTimeouts(
            cfg.offline_after_s, cfg.remove_after_s, cfg.degraded_after_failures
        )
        self.nodes: dict[str, Node] = {}
        self._token: bytes | None = None
        # Heartbeats change the fleet one at a time: no two can register one id.
        self._lock = asyncio.Lock()
        self._sweeper: asyncio.Task[None] | None = None
        self._probes: set[asyncio.Task[None]] = set()

    def load_token(self) -> None:
        """Read the fleet token (FleetTokenError if its file cannot be used)."""
        self._token = load_fleet_token(self.gw.settings.fleet)

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="corral-nodes")

    async def stop(self) -> None:
        tasks = [t for t in (self._sweeper, *self._probes) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._sweeper = None

    # -- who may heartbeat ------------------------------------------------------------

    def check_token(self, authorization: str | None, header_token: str | None) -> None:
        """The caller must present the fleet token (constant-time compare).

        403 when the gateway has none (no agent can join: configure one), 401 when the
        token is missing or wrong.
        """
        if self._token is None:
            raise Forbidden(_NO_TOKEN)
        presented = header_token
        if presented is None and authorization is not None:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() == "bearer":
                presented = value.strip()
        if not presented:
            raise Unauthorized(
                f"a fleet token is required: send Authorization: Bearer <token> "
                f"(or {FLEET_TOKEN_HEADER})"
            )
        if not hmac.compare_digest(presented.encode("utf-8", "replace"), self._token):
            raise Unauthorized("the fleet token is wrong")

    @property
    def relay_headers(self) -> dict[str, str]:
        """What every request to an agent's relay carries."""
        assert self._token is not None
        return {FLEET_TOKEN_HEADER: self._token.decode()}

    # -- heartbeats ---------------------------------------------------------------------

    async def heartbeat(
        self, beat: Heartbeat, source: Literal["agent", "seed"] = "agent"
    ) -> HeartbeatReply:
        """Register the node on its first heartbeat, update it on later ones.

        Everything is checked before anything changes: a refused heartbeat leaves the
        fleet as it was.
        """
        cfg = self._backend_config(beat)
        async with self._lock:
            fleet = self.gw.fleet
            state = fleet.backends.get(beat.node_id)
            if state is not None and state.origin != "agent":
                raise Conflict(
                    f"node id {beat.node_id!r} is taken by a backend that did not join "
                    f"through an agent (origin {state.origin}); start the agent with "
                    "another --node-id",
                    param="node_id",
                )
            node = self.nodes.get(beat.node_id)
            if node is not None and state is not None:
                self._check_same_node(node, beat, cfg.url)
            headers = self.relay_headers if beat.relay else None
            # A node unknown to the fleet (new, or removed by other means since) joins;
            # one whose engine changed its API joins afresh.
            registered = state is None or state.kind != beat.kind
            if registered:
                if state is not None:
                    await self.gw.remove_backend(beat.node_id)
                # Added now, probed below outside the lock (`add_and_probe` in two
                # halves): a hung engine must not hold up every other node's heartbeat.
                state = self.gw.add_backend(cfg, origin="agent", headers=headers)
                node = None
            else:
                assert state is not None
                relayed = node.beat.relay if node is not None else beat.relay
                self._update(state, beat, cfg, headers, relayed)
            now = asyncio.get_running_loop().time()
            wall = time.time()
            if node is None:
                node = Node(beat.node_id, source, beat, wall, wall, now)
                self.nodes[beat.node_id] = node
            node.beat, node.source, node.last_seen, node.heard_at = beat, source, wall, now
            self._apply_telemetry(state, beat)
        if registered:
            await self.gw.fleet.probe(beat.node_id)
            log.info(
                "node %s joined: %s %s%s (%s)",
                beat.node_id,
                beat.kind,
                cfg.url,
                " via its relay" if beat.relay else "",
                "up" if state.healthy else f"down: {state.last_error}",
            )
        node.status = self._status(node, state, asyncio.get_running_loop().time())
        return HeartbeatReply(
            node_id=beat.node_id,
            registered=registered,
            status=node.status,
            healthy=state.healthy,
            offline_after_s=self.limits.offline_after_s,
            remove_after_s=self.limits.remove_after_s,
        )

    def _backend_config(self, beat: Heartbeat) -> BackendConfig:
        fields: dict[str, object] = {"name": beat.node_id, "url": beat.url, "kind": beat.kind}
        if beat.max_concurrency is not None:
            fields["max_concurrency"] = beat.max_concurrency
        try:
            return BackendConfig.model_validate(fields)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = str(err["loc"][0]) if err["loc"] else "url"
            msg = err["msg"].removeprefix("Value error, ")
            raise InvalidField(f"{field}: {msg} (got {beat.url!r})", param=field) from None

    def _check_same_node(self, node: Node, beat: Heartbeat, url: str) -> None:
        """A second agent claiming a live node's id is refused; the same agent restarted
        (same URL) or a node that went offline may take it over."""
        if node.beat.instance == beat.instance or node.status == "offline":
            return
        if self.gw.fleet.backends[node.id].url == url:
            return
        silent = asyncio.get_running_loop().time() - node.heard_at
        raise Conflict(
            f"node id {beat.node_id!r} is held by another agent (engine at "
            f"{node.beat.url}, heard {silent:.0f}s ago); give this agent its own "
            f"--node-id, or stop the other one (its id is free once it is offline, "
            f"{self.limits.offline_after_s:g}s after its last heartbeat)",
            param="node_id",
        )

    def _update(
        self,
        state: BackendState,
        beat: Heartbeat,
        cfg: BackendConfig,
        headers: dict[str, str] | None,
        relayed: bool,
    ) -> None:
        fleet = self.gw.fleet
        if cfg.url != state.url or beat.relay != relayed:
            log.info("node %s moved: %s -> %s", beat.node_id, state.url, cfg.url)
            fleet.retarget(beat.node_id, cfg.url, headers)
        if beat.max_concurrency is not None:
            state.max_concurrency = beat.max_concurrency
        if state.offline:
            fleet.scheduler.set_online(beat.node_id)
            log.info("node %s is back: its agent heartbeats again", beat.node_id)
            self._probe_now(beat.node_id)
        elif not state.healthy:
            # The agent says it is here: look now rather than at the next round.
            self._probe_now(beat.node_id)

    def _probe_now(self, name: str) -> None:
        task = asyncio.create_task(self.gw.fleet.probe(name))
        self._probes.add(task)
        task.add_done_callback(self._probes.discard)

    def _apply_telemetry(self, state: BackendState, beat: Heartbeat) -> None:
        self.gw.telemetry[beat.node_id] = beat.telemetry()
        # The cost model foresees evictions from the memory a backend has for models.
        state.vram_bytes = vram_from_gpus(g.memory_total_bytes for g in beat.gpus)

    # -- the sweeper --------------------------------------------------------------------

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.limits.sweep_every_s)
            try:
                await self.sweep()
            except Exception:  # keep sweeping; a bug here must not stop the registry
                log.exception("node sweep failed")

    async def sweep(self) -> None:
        """Apply the timeouts: offline, removed, degraded; log each change once."""
        now = asyncio.get_running_loop().time()
        async with self._lock:
            for node in list(self.nodes.values()):
                state = self.gw.fleet.backends.get(node.id)
                if state is None or state.origin != "agent":
                    self._drop(node.id)  # removed by other means
                    continue
                silent = now - node.heard_at
                if should_remove(self.limits, silent):
                    log.warning("node %s removed: its agent was silent %.0fs", node.id, silent)
                    # Out of the registry before the fleet's removal awaits (it closes
                    # connections): nobody sees a node whose backend is already gone.
                    self._drop(node.id)
                    await self.gw.remove_backend(node.id)
                    continue
                status = self._status(node, state, now)
                if status == "offline" and not state.offline:
                    self.gw.fleet.scheduler.set_offline(
                        node.id, f"node offline: its agent was silent {silent:.0f}s"
                    )
                if status != node.status:
                    self._log_change(node, status, state, silent)
                    node.status = status

    def _status(self, node: Node, state: BackendState, now: float) -> NodeStatus:
        return node_status(
            self.limits,
            silent_s=now - node.heard_at,
            failures=state.consecutive_failures,
            breaker_open=self._breaker_open(node.id, now),
        )

    def _breaker_open(self, name: str, now: float) -> bool:
        breakers = self.gw.fleet.breakers
        if breakers is None:
            return False
        return any(
            v.backend == name and v.model is None and v.state != "cooldown"
            for v in breakers.snapshot(now)
        )

    def _log_change(
        self, node: Node, status: NodeStatus, state: BackendState, silent: float
    ) -> None:
        if status == "offline":
            log.warning("node %s is offline: its agent was silent %.0fs", node.id, silent)
        elif status == "degraded":
            log.warning("node %s is degraded: %s", node.id, state.last_error or "failing")
        else:
            log.info("node %s is online", node.id)

    def _drop(self, name: str) -> None:
        self.nodes.pop(name, None)
        self.gw.telemetry.pop(name, None)

    # -- operations -----------------------------------------------------------------

    def get(self, node_id: str) -> Node:
        node = self.nodes.get(node_id)
        if node is None or node.id not in self.gw.fleet.backends:
            raise NotFound(f"no node {node_id!r}", param="node_id")
        return node

    async def forget(self, node_id: str) -> Node:
        """Take a node out of the fleet now (its agent, if still running, rejoins on
        its next heartbeat)."""
        async with self._lock:
            node = self.get(node_id)
            self._drop(node_id)
            await self.gw.remove_backend(node_id)
        log.info("node %s forgotten", node_id)
        return node

    def listed(self) -> list[Node]:
        return [n for _, n in sorted(self.nodes.items()) if n.id in self.gw.fleet.backends]

    # -- views ----------------------------------------------------------------------

    def view(self, node: Node) -> NodeView:
        state = self.gw.fleet.backends[node.id]
        beat = node.beat
        now = asyncio.get_running_loop().time()
        loaded = sorted(m for m in state.loaded if state.is_loaded(m, now))
        return NodeView(
            id=node.id,
            status=node.status,
            healthy=state.healthy,
            source=node.source,
            url=state.url,
            kind=state.kind,
            relay=beat.relay,
            hostname=beat.hostname,
            addresses=[str(a) for a in beat.addresses],
            engine=beat.engine,
            models=sorted(state.models),
            loaded=loaded,
            cpu=beat.cpu,
            memory=beat.memory,
            gpus=beat.gpus,
            vram_bytes=state.vram_bytes,
            in_flight=state.in_flight,
            consecutive_failures=state.consecutive_failures,
            last_error=state.last_error,
            first_seen=datetime.fromtimestamp(node.first_seen, UTC),
            last_seen=datetime.fromtimestamp(node.last_seen, UTC),
            silent_s=round(now - node.heard_at, 3),
            interval_s=beat.interval_s,
            agent_version=beat.agent_version,
        )

    def seed_view(self, node: Node) -> SeedNode:
        """The node in seed 003's ``GET /nodes`` shape."""
        state = self.gw.fleet.backends[node.id]
        beat = node.beat
        addresses = [str(a) for a in beat.addresses]
        port = _port(state.url)
        return SeedNode(
            node_id=node.id,
            ipv4=first_address(addresses, 4),
            ipv6=first_address(addresses, 6),
            port=port,
            models=sorted(state.models),
            metadata={
                "hostname": beat.hostname,
                "url": state.url,
                "kind": state.kind,
                "engine_version": beat.engine.version or state.version,
            },
            load=SeedLoad(
                cpu=beat.cpu.percent / 100 if beat.cpu else None,
                memory=beat.memory.percent / 100 if beat.memory else None,
            ),
            last_seen=datetime.fromtimestamp(node.last_seen, UTC),
            status=node.status,
            active_jobs=state.in_flight,
            failure_count=state.consecutive_failures,
        )


def _port(url: str) -> int | None:
    parts = urlsplit(url)
    try:
        return parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
