"""The node registry's rules: when an agent's node is online, degraded, offline or gone.

A node is a backend that joined through a node agent's heartbeats. Pure: the gateway
passes in how long the agent has been silent and what it knows of the backend's
failures; nothing here reads a clock.

    silent < offline_after                 online, or degraded when the backend keeps
                                           failing (probes, connections) or its
                                           backend-wide breaker is open
    offline_after <= silent < remove_after offline: out of routing, not probed
    silent >= remove_after                 removed from the fleet
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = ["NodeStatus", "NodeTimeouts", "node_status", "should_remove", "vram_from_gpus"]

NodeStatus = Literal["online", "degraded", "offline"]


@dataclass(frozen=True, slots=True)
class NodeTimeouts:
    """The registry's thresholds (the ``fleet`` settings)."""

    offline_after_s: float
    remove_after_s: float
    degraded_after_failures: int

    def __post_init__(self) -> None:
        if self.offline_after_s <= 0 or self.remove_after_s < self.offline_after_s:
            raise ValueError("need 0 < offline_after_s <= remove_after_s")
        if self.degraded_after_failures < 1:
            raise ValueError("degraded_after_failures must be >= 1")

    @property
    def sweep_every_s(self) -> float:
        """How often to look: a few times per offline period, so a node goes offline
        at most a quarter period late, and never busier than 20 times a second."""
        return min(max(self.offline_after_s / 4, 0.05), 5.0)


def node_status(
    limits: NodeTimeouts, *, silent_s: float, failures: int, breaker_open: bool
) -> NodeStatus:
    """The status of a node whose agent was last heard ``silent_s`` ago."""
    if silent_s >= limits.offline_after_s:
        return "offline"
    if failures >= limits.degraded_after_failures or breaker_open:
        return "degraded"
    return "online"


def should_remove(limits: NodeTimeouts, silent_s: float) -> bool:
    return silent_s >= limits.remove_after_s


def vram_from_gpus(memory_totals: Iterable[int]) -> int | None:
    """Memory for models on a node: its GPUs' memory summed; None without GPUs."""
    total = sum(memory_totals)
    return total if total > 0 else None
