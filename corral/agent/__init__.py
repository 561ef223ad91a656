"""The node agent (`corral agent`): runs beside an engine and heartbeats to the gateway.

It reports the node's engine (URL, kind, version, models, loaded models), its
reachable addresses and its CPU, memory and GPU load, and can relay requests to an
engine bound to localhost. It stands apart from the gateway: it uses the settings'
shared rules (corral.config) and the pure core, never corral.app or corral.adapters.
"""

from __future__ import annotations

__all__: list[str] = []
