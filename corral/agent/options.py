"""The agent's options, checked once at start, and the URL it advertises.

Every problem is reported in one line naming the option, before anything starts.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import ValidationError

from corral.config import BackendConfig
from corral.config.fleet import NODE_ID_PATTERN, check_fleet_token
from corral.core.names import url_host

__all__ = [
    "AgentOptions",
    "OptionError",
    "advertised_url",
    "default_node_id",
    "is_loopback_url",
    "read_token",
]

EngineKind = Literal["ollama", "openai"]


class OptionError(ValueError):
    """An option cannot be used; the message names it."""


@dataclass(frozen=True, slots=True)
class AgentOptions:
    gateway: str
    token: str
    engine: str
    kind: EngineKind
    node_id: str
    interval_s: float
    advertise_url: str | None = None
    relay: bool = False
    relay_host: str = "0.0.0.0"
    relay_port: int = 11435
    max_concurrency: int | None = None
    timeout_s: float = 10.0

    @classmethod
    def checked(
        cls,
        *,
        gateway: str,
        token: str,
        engine: str,
        kind: str,
        node_id: str,
        interval_s: float,
        advertise_url: str | None = None,
        relay: bool = False,
        relay_host: str = "0.0.0.0",
        relay_port: int = 11435,
        max_concurrency: int | None = None,
    ) -> AgentOptions:
        if kind not in ("ollama", "openai"):
            raise OptionError(f"--kind: {kind!r} is not ollama or openai")
        if not re.match(NODE_ID_PATTERN, node_id):
            raise OptionError(
                f"--node-id: {node_id!r} is not a node id (letters, digits and . _ : @ -, "
                "at most 128, starting with a letter or digit)"
            )
        if not interval_s > 0:
            raise OptionError(f"--interval: must be above 0 (got {interval_s:g})")
        if not 0 <= relay_port <= 65535:
            raise OptionError(f"--relay-port: {relay_port} is not a port")
        if max_concurrency is not None and max_concurrency < 1:
            raise OptionError("--max-concurrency: must be at least 1")
        try:
            check_fleet_token(token)
        except ValueError as exc:
            raise OptionError(f"fleet token: {exc}") from None
        engine_url = _url("--engine", engine, kind)
        if kind == "openai":
            # The gateway adds /v1/... itself; a pasted OpenAI base URL ends in /v1.
            engine_url = engine_url.removesuffix("/v1")
        return cls(
            gateway=_gateway_url(gateway),
            token=token,
            engine=engine_url,
            kind=kind,  # type: ignore[arg-type]  # checked above
            node_id=node_id,
            interval_s=interval_s,
            advertise_url=_url("--advertise-url", advertise_url, kind) if advertise_url else None,
            relay=relay,
            relay_host=relay_host,
            relay_port=relay_port,
            max_concurrency=max_concurrency,
            # A heartbeat or an engine read slower than the interval is a failed one.
            timeout_s=min(10.0, max(interval_s, 0.5)),
        )


def _url(option: str, url: str, kind: str) -> str:
    try:
        return BackendConfig.model_validate({"url": url, "kind": kind}).url
    except ValidationError as exc:
        msg = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise OptionError(f"{option}: {url!r} {msg}") from None


def _gateway_url(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise OptionError(f"--gateway: {url!r} is not an http(s):// URL, e.g. http://gw:8088")
    if parts.query or parts.fragment or parts.username:
        raise OptionError(f"--gateway: {url!r} must be a plain base URL")
    return url.strip().rstrip("/")


def read_token(flag: str | None, file: Path | None) -> str:
    """The fleet token: ``--token`` (or env CORRAL_FLEET_TOKEN), else ``--token-file``."""
    if flag and file:
        raise OptionError("give the fleet token once: --token (or env) or --token-file")
    if flag:
        return flag.strip()
    if file is not None:
        try:
            return file.expanduser().read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise OptionError(f"--token-file: {file}: {exc.strerror or exc}") from None
    raise OptionError(
        "no fleet token: pass --token-file FILE or set CORRAL_FLEET_TOKEN "
        "(the token set on the gateway as fleet.token)"
    )


def default_node_id() -> str:
    """The host name, made into a node id (other characters become '-')."""
    name = socket.gethostname() or "node"
    name = re.sub(r"[^A-Za-z0-9._:@-]", "-", name)[:128].lstrip("._:@-")
    return name or "node"


def advertised_url(opts: AgentOptions, relay_port: int, addresses: list[str]) -> str:
    """Where the gateway should send requests for this node.

    ``--advertise-url`` when given. With the relay: the relay's address (its
    ``--relay-host``, or when that is a wildcard the host's first reachable address,
    else its name). Without: the engine's URL as given.
    """
    if opts.advertise_url:
        return opts.advertise_url
    if not opts.relay:
        return opts.engine
    host = opts.relay_host
    if _is_wildcard(host):
        host = addresses[0] if addresses else socket.gethostname()
    return f"http://{url_host(host)}:{relay_port}"


def _is_wildcard(host: str) -> bool:
    if host in ("", "*"):
        return True
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
