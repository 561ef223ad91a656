"""What node agents send and what the node routes answer: typed, bounded, described.

A heartbeat comes from `corral agent` (`Heartbeat`) or from an agent of seed design
003 (`SeedHeartbeat`, turned into a `Heartbeat` by `from_seed`). Lists and strings are
bounded so a heartbeat cannot be made arbitrarily large; unknown fields are ignored,
so an agent newer than its gateway still joins.
"""

from __future__ import annotations

from datetime import datetime
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from corral.config.fleet import NODE_ID_PATTERN

__all__ = [
    "NODE_ID_PATTERN",
    "Cpu",
    "EngineInfo",
    "Gpu",
    "Heartbeat",
    "HeartbeatReply",
    "Memory",
    "NodeView",
    "SeedHeartbeat",
    "SeedLoad",
    "SeedNode",
    "first_address",
    "from_seed",
]

NodeId = Annotated[str, StringConstraints(pattern=NODE_ID_PATTERN)]
ModelName = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Text = Annotated[str, StringConstraints(max_length=512)]

_SEED_OLLAMA_PORT = 11434  # seed 003 nodes run Ollama on its default port beside the agent


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class EngineInfo(_Wire):
    url: Text = Field(description="The engine's URL as the agent reaches it (often localhost).")
    version: Text | None = Field(default=None, description="The engine's version, if it says.")
    reachable: bool = Field(default=True, description="Whether the agent reached the engine.")
    error: Text | None = Field(default=None, description="Why not, when it did not.")


class Cpu(_Wire):
    percent: float = Field(ge=0, le=100, description="CPU busy over the last interval, %.")
    count: int = Field(ge=1, le=65536, description="Logical CPUs.")
    load_avg: list[float] = Field(
        default_factory=list, max_length=3, description="1, 5 and 15 minute load averages."
    )


class Memory(_Wire):
    total_bytes: int = Field(ge=0, description="Physical memory.")
    available_bytes: int = Field(ge=0, description="Memory available to new processes.")
    percent: float = Field(ge=0, le=100, description="Memory in use, %.")


class Gpu(_Wire):
    index: int = Field(ge=0, le=1024, description="The device's index on its node.")
    name: Text = Field(default="", description="The device's model name.")
    uuid: Text | None = Field(default=None, description="The device's UUID.")
    utilization_percent: float | None = Field(
        default=None, ge=0, le=100, description="GPU busy over the driver's last sample, %."
    )
    memory_total_bytes: int = Field(ge=0, description="Device memory.")
    memory_used_bytes: int = Field(ge=0, description="Device memory in use.")


class Heartbeat(_Wire):
    """One report of `corral agent` (``POST /agent/heartbeat``)."""

    node_id: NodeId = Field(
        description="The node's id, also its backend's name: letters, digits and . _ : @ -, "
        "at most 128."
    )
    instance: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        description="A random id of the agent process: tells a restart of the same agent "
        "from a second agent claiming the same node id."
    )
    url: Text = Field(
        description="Where the gateway reaches the engine: the engine itself, or the "
        "agent's relay in front of it."
    )
    kind: Literal["ollama", "openai"] = Field(
        default="ollama", description="The API the engine speaks."
    )
    relay: bool = Field(
        default=False, description="url is the agent's relay: send it the fleet token."
    )
    max_concurrency: int | None = Field(
        default=None, ge=1, le=4096, description="Requests in flight at once; unset = default."
    )
    engine: EngineInfo = Field(description="The engine as the agent sees it.")
    hostname: Text | None = Field(default=None, description="The node's host name.")
    addresses: list[IPv4Address | IPv6Address] = Field(
        default_factory=list,
        max_length=256,
        description="The node's reachable addresses (no loopback or link-local).",
    )
    models: list[ModelName] = Field(
        default_factory=list, max_length=10_000, description="Models the engine holds."
    )
    loaded: list[ModelName] = Field(
        default_factory=list, max_length=10_000, description="Models resident in memory now."
    )
    cpu: Cpu | None = Field(default=None, description="CPU load.")
    memory: Memory | None = Field(default=None, description="Memory load.")
    gpus: list[Gpu] = Field(
        default_factory=list, max_length=64, description="GPUs; [] when there are none."
    )
    interval_s: float | None = Field(
        default=None, gt=0, le=86_400, description="Seconds between the agent's heartbeats."
    )
    agent_version: Text | None = Field(default=None, description="The agent's version.")

    def telemetry(self) -> dict[str, Any]:
        """What the gateway keeps of it in ``Gateway.telemetry`` (JSON-ready)."""
        return self.model_dump(
            mode="json",
            include={
                "hostname",
                "addresses",
                "engine",
                "cpu",
                "memory",
                "gpus",
                "relay",
                "interval_s",
                "agent_version",
            },
        )


class HeartbeatReply(_Wire):
    node_id: str = Field(description="The node's id (its backend's name).")
    registered: bool = Field(description="True when this heartbeat added the node.")
    status: Literal["online", "degraded", "offline"] = Field(description="The node's status.")
    healthy: bool = Field(description="Whether the gateway's last probe of the engine passed.")
    offline_after_s: float = Field(description="Silence after which the node goes offline.")
    remove_after_s: float = Field(description="Silence after which the node is removed.")


class NodeView(_Wire):
    """A node as ``GET /admin/nodes`` shows it."""

    id: str = Field(description="The node's id, also its backend's name.")
    status: Literal["online", "degraded", "offline"] = Field(
        description="online; degraded (failing probes or connections, or its breaker "
        "open); offline (agent silent past fleet.offline_after_s)."
    )
    healthy: bool = Field(description="Whether the last probe of its engine passed.")
    source: Literal["agent", "seed"] = Field(
        description="agent: `corral agent`; seed: a seed-003 agent via /nodes/heartbeat."
    )
    url: str = Field(description="Where the gateway sends its requests.")
    kind: str = Field(description="ollama or openai.")
    relay: bool = Field(description="url is the agent's relay.")
    hostname: str | None = Field(description="The node's host name.")
    addresses: list[str] = Field(description="Its reachable addresses.")
    engine: EngineInfo = Field(description="The engine as its agent last saw it.")
    models: list[str] = Field(description="Models the gateway's probe found there.")
    loaded: list[str] = Field(description="Models resident now (gateway's view).")
    cpu: Cpu | None = Field(description="CPU load, last reported.")
    memory: Memory | None = Field(description="Memory load, last reported.")
    gpus: list[Gpu] = Field(description="GPUs, last reported.")
    vram_bytes: int | None = Field(description="Memory for models the scheduler assumes.")
    in_flight: int = Field(description="Requests running there now.")
    consecutive_failures: int = Field(description="Failed probes or connections in a row.")
    last_error: str | None = Field(description="The last failure, if any.")
    first_seen: datetime = Field(description="When its first heartbeat arrived.")
    last_seen: datetime = Field(description="When its last heartbeat arrived.")
    silent_s: float = Field(description="Seconds since then.")
    interval_s: float | None = Field(description="The agent's heartbeat interval.")
    agent_version: str | None = Field(description="The agent's version.")


# --- seed design 003 -----------------------------------------------------------------


class SeedLoad(_Wire):
    cpu: float | None = Field(default=None, ge=0, le=1, description="CPU busy, 0-1.")
    memory: float | None = Field(default=None, ge=0, le=1, description="Memory in use, 0-1.")


class SeedHeartbeat(_Wire):
    """Seed 003's heartbeat (``POST /nodes/heartbeat``). The seed node's ``port`` is its
    agent's, which Corral does not use: it talks to the node's Ollama, at
    ``metadata.ollama_url`` or else port 11434 (``metadata.ollama_port``) of its address."""

    node_id: NodeId = Field(description="The node's id.")
    ipv4: IPv4Address | None = Field(default=None, description="The node's IPv4 address.")
    ipv6: IPv6Address | None = Field(default=None, description="The node's IPv6 address.")
    port: int | None = Field(default=None, ge=1, le=65535, description="The seed agent's port.")
    models: list[ModelName] = Field(default_factory=list, max_length=10_000)
    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description="Free-form; ollama_url or ollama_port say where its Ollama listens.",
    )
    load: SeedLoad | None = Field(default=None, description="CPU and memory load, 0-1.")

    @model_validator(mode="after")
    def _reachable(self) -> Self:
        url = self.metadata.get("ollama_url")
        if url is not None and not isinstance(url, str):
            raise ValueError("metadata.ollama_url must be a URL string")
        port = self.metadata.get("ollama_port", _SEED_OLLAMA_PORT)
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValueError("metadata.ollama_port must be a port number (1-65535)")
        if url is None and self.ipv4 is None and self.ipv6 is None:
            raise ValueError("give ipv4 or ipv6 (or metadata.ollama_url): where is its Ollama?")
        return self

    def engine_url(self) -> str:
        url = self.metadata.get("ollama_url")
        if isinstance(url, str):
            return url
        port = self.metadata.get("ollama_port", _SEED_OLLAMA_PORT)
        host = str(self.ipv4) if self.ipv4 is not None else f"[{self.ipv6}]"
        return f"http://{host}:{port}"


def from_seed(beat: SeedHeartbeat) -> Heartbeat:
    """The seed's heartbeat in Corral's shape (one registration path for both)."""
    url = beat.engine_url()
    load = beat.load
    hostname = beat.metadata.get("hostname")
    return Heartbeat(
        node_id=beat.node_id,
        instance="seed",  # seed agents carry no instance id; the URL tells them apart
        url=url,
        kind="ollama",
        engine=EngineInfo(url=url),
        hostname=hostname if isinstance(hostname, str) else None,
        addresses=[a for a in (beat.ipv4, beat.ipv6) if a is not None],
        models=beat.models,
        cpu=Cpu(percent=load.cpu * 100, count=1) if load and load.cpu is not None else None,
        memory=(
            Memory(total_bytes=0, available_bytes=0, percent=load.memory * 100)
            if load and load.memory is not None
            else None
        ),
    )


class SeedNode(_Wire):
    """A node in seed 003's shape (``GET /nodes``)."""

    node_id: str = Field(description="The node's id.")
    ipv4: str | None = Field(description="Its first IPv4 address.")
    ipv6: str | None = Field(description="Its first IPv6 address.")
    port: int | None = Field(description="The port Corral reaches its engine on.")
    models: list[str] = Field(description="Models it holds.")
    metadata: dict[str, Any] = Field(description="hostname, url, kind, engine version.")
    load: SeedLoad = Field(description="CPU and memory load, 0-1.")
    last_seen: datetime = Field(description="Its last heartbeat (UTC).")
    status: Literal["online", "degraded", "offline"] = Field(description="Its status.")
    active_jobs: int = Field(description="Requests running there now.")
    failure_count: int = Field(description="Failed probes or connections in a row.")


def first_address(addresses: list[str], version: int) -> str | None:
    return next((a for a in addresses if ip_address(a).version == version), None)
