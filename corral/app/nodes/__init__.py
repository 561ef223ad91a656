"""Nodes: backends that joined through node agents (`corral agent`) and their reports."""

from __future__ import annotations

from corral.app.nodes.registry import FleetTokenError, Node, NodeRegistry, load_fleet_token

__all__ = ["FleetTokenError", "Node", "NodeRegistry", "load_fleet_token"]
