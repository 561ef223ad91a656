"""How a backend of ``GET /admin/backends`` reads in one word, and its cells.

Shared by ``corral status`` and ``corral backends ls``. A backend's condition is one
state, the most pressing first: disabled, offline (its node agent went silent),
drained/draining, down (its last probe failed), degraded (its agent's node is
failing), healthy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rich.text import Text

from corral.app.ctl.output import seconds

__all__ = ["STATE_STYLES", "breakers_cell", "in_flight_cell", "loaded_cell", "state_of", "styled"]

STATE_STYLES = {
    "healthy": "green",
    "degraded": "yellow",
    "draining": "yellow",
    "drained": "yellow",
    "down": "red",
    "offline": "red",
    "disabled": "dim",
}


def state_of(backend: Mapping[str, Any], node_status: str | None = None) -> str:
    """One word for the backend's condition; ``node_status`` is its agent node's
    (online, degraded, offline), when it came from one."""
    if backend.get("enabled") is False:
        return "disabled"
    if node_status == "offline":
        return "offline"
    if backend.get("draining"):
        return "drained" if backend.get("drained") or not backend.get("in_flight") else "draining"
    if not backend.get("healthy"):
        return "down"
    if node_status == "degraded":
        return "degraded"
    return "healthy"


def styled(state: str) -> Text:
    return Text(state, style=STATE_STYLES.get(state, ""))


def in_flight_cell(backend: Mapping[str, Any]) -> str:
    return f"{backend.get('in_flight', 0)}/{backend.get('max_concurrency', '?')}"


def loaded_cell(backend: Mapping[str, Any]) -> list[str]:
    return [str(m.get("model")) for m in backend.get("loaded") or [] if isinstance(m, dict)]


def breakers_cell(backend: Mapping[str, Any]) -> list[str]:
    """``open 25 s``, ``half_open llama3.2:1b``, ``cooldown 4 s``: each breaker not closed."""
    out = []
    for b in backend.get("breakers") or []:
        if not isinstance(b, dict):
            continue
        words = [str(b.get("state"))]
        if b.get("model"):
            words.append(str(b["model"]))
        left = seconds(b.get("until_in_s"))
        if left:
            words.append(left)
        out.append(" ".join(words))
    return out
