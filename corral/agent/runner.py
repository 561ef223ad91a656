"""The agent's loop: read the engine and the host, heartbeat, wait, again.

The gateway may be away (restarting, unreachable, refusing): the agent keeps going,
retrying with backoff, and logs one line each time its situation changes (joined,
gateway unreachable, token refused, ...), not one per failed attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from dataclasses import dataclass
from typing import Any

import aiohttp

from corral import __version__
from corral.agent.engine import EngineReport, read_engine
from corral.agent.options import AgentOptions, advertised_url, is_loopback_url
from corral.agent.relay import Relay
from corral.agent.telemetry import Telemetry, reachable_addresses
from corral.core.retry import Backoff

__all__ = ["Agent", "Outcome", "build_heartbeat"]

log = logging.getLogger("corral.agent")


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one heartbeat went: ``state`` names the situation, for change-only logging."""

    ok: bool
    state: str
    message: str
    reply: dict[str, Any] | None = None


def build_heartbeat(
    opts: AgentOptions,
    *,
    instance: str,
    url: str,
    engine: EngineReport,
    addresses: list[str],
    telemetry: Telemetry,
    hostname: str,
) -> dict[str, Any]:
    """The report the gateway's ``POST /agent/heartbeat`` takes."""
    return {
        "node_id": opts.node_id,
        "instance": instance,
        "url": url,
        "kind": opts.kind,
        "relay": opts.relay,
        "max_concurrency": opts.max_concurrency,
        "engine": {
            "url": opts.engine,
            "version": engine.version,
            "reachable": engine.reachable,
            "error": engine.error,
        },
        "hostname": hostname,
        "addresses": addresses,
        "models": engine.models,
        "loaded": engine.loaded,
        "cpu": telemetry.cpu(),
        "memory": telemetry.memory(),
        "gpus": telemetry.gpus(),
        "interval_s": opts.interval_s,
        "agent_version": __version__,
    }


class Agent:
    def __init__(self, opts: AgentOptions, *, hostname: str) -> None:
        self.opts = opts
        self.hostname = hostname
        # Tells this process from another agent claiming the same node id.
        self.instance = secrets.token_hex(8)
        self.relay: Relay | None = None
        self.url = opts.engine
        self._state: str | None = None
        self._engine_up: bool | None = None
        self._warned_interval = False
        base = min(1.0, opts.interval_s)
        self._backoff = Backoff(base, max(opts.interval_s, 30.0), seed=secrets.randbits(32))

    async def run(self, stop: asyncio.Event) -> None:
        """Heartbeat until ``stop`` is set."""
        opts = self.opts
        telemetry = Telemetry()
        timeout = aiohttp.ClientTimeout(total=opts.timeout_s)
        try:
            if opts.relay:
                self.relay = Relay(
                    opts.engine, opts.token, host=opts.relay_host, port=opts.relay_port
                )
                await self.relay.start()
            port = self.relay.port if self.relay is not None else 0
            self.url = advertised_url(opts, port, reachable_addresses())
            self._announce()
            async with aiohttp.ClientSession(timeout=timeout) as session:
                failures = 0
                while not stop.is_set():
                    outcome = await self.beat(session, telemetry)
                    self._log(outcome)
                    failures = 0 if outcome.ok else failures + 1
                    delay = opts.interval_s if outcome.ok else self._retry_in(failures)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(delay):
                            await stop.wait()
        finally:
            telemetry.close()
            if self.relay is not None:
                await self.relay.stop()

    def _retry_in(self, failures: int) -> float:
        return max(self._backoff.base, self._backoff.delay(failures))

    def _announce(self) -> None:
        opts = self.opts
        via = f" via its relay on port {self.relay.port}" if self.relay is not None else ""
        print(
            f"corral agent: node {opts.node_id} -> {opts.gateway}; engine {opts.kind} "
            f"{opts.engine}{via}, advertised as {self.url}",
            flush=True,
        )
        if not opts.relay and not opts.advertise_url and is_loopback_url(opts.engine):
            log.warning(
                "the engine URL %s is a loopback address: only a gateway on this host can "
                "reach it; use --relay, or --advertise-url with a reachable address",
                opts.engine,
            )

    async def beat(self, session: aiohttp.ClientSession, telemetry: Telemetry) -> Outcome:
        """Read the engine and the host, send one heartbeat, say how it went."""
        engine = await read_engine(session, self.opts.engine, self.opts.kind)
        self._engine_changed(engine)
        report = build_heartbeat(
            self.opts,
            instance=self.instance,
            url=self.url,
            engine=engine,
            addresses=reachable_addresses(),
            telemetry=telemetry,
            hostname=self.hostname,
        )
        return await self.send(session, report)

    async def send(self, session: aiohttp.ClientSession, report: dict[str, Any]) -> Outcome:
        url = self.opts.gateway + "/agent/heartbeat"
        headers = {"Authorization": f"Bearer {self.opts.token}"}
        try:
            async with session.post(url, json=report, headers=headers) as resp:
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            why = str(exc) or type(exc).__name__
            return Outcome(False, "unreachable", f"gateway {self.opts.gateway} unreachable: {why}")
        if status == 200:
            try:
                reply = _json(text)
            except ValueError:
                why = f"gateway answered 200 with non-JSON: {text:.200}"
                return Outcome(False, "bad-reply", why)
            return Outcome(True, "joined", "", reply)
        return Outcome(False, f"http-{status}", _refusal(status, text))

    def _log(self, outcome: Outcome) -> None:
        if outcome.state == self._state:
            return
        self._state = outcome.state
        if outcome.ok:
            reply = outcome.reply or {}
            log.info(
                "node %s %s with gateway %s (status %s)",
                self.opts.node_id,
                "registered" if reply.get("registered") else "heartbeating",
                self.opts.gateway,
                reply.get("status", "?"),
            )
            self._check_interval(reply)
        else:
            log.warning("%s; retrying with backoff", outcome.message)

    def _check_interval(self, reply: dict[str, Any]) -> None:
        offline = reply.get("offline_after_s")
        if self._warned_interval or not isinstance(offline, int | float):
            return
        if self.opts.interval_s * 2 > offline:
            self._warned_interval = True
            log.warning(
                "--interval %gs is long for the gateway's fleet.offline_after_s (%gs): one "
                "late heartbeat takes the node offline; use at most a third of it",
                self.opts.interval_s,
                offline,
            )

    def _engine_changed(self, engine: EngineReport) -> None:
        if engine.reachable == self._engine_up:
            return
        self._engine_up = engine.reachable
        if engine.reachable:
            log.info(
                "engine %s answers (%s, %d models)",
                self.opts.engine,
                engine.version or "version unknown",
                len(engine.models),
            )
        else:
            log.warning("engine %s does not answer: %s", self.opts.engine, engine.error)


def _json(text: str) -> dict[str, Any]:
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("not an object")
    return data


def _refusal(status: int, text: str) -> str:
    """The gateway's refusal in one line (its error message, when it sent one)."""
    message = text.strip()[:300]
    try:
        data = json.loads(text)
        err = data.get("error") if isinstance(data, dict) else None
        message = (err.get("message") if isinstance(err, dict) else err) or message
    except ValueError:
        pass
    hint = {
        401: " (check the fleet token)",
        403: " (the gateway has no fleet token configured)",
        409: " (another agent or backend has this node id)",
    }.get(status, "")
    return f"gateway refused the heartbeat: {status} {message}{hint}"
