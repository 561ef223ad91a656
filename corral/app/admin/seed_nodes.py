"""Seed design 003's hub API, as aliases onto Corral's own (docs/admin-api.md).

``POST /nodes/heartbeat`` registers a seed agent's node like ``/agent/heartbeat``
(with the fleet token); ``GET /nodes`` and ``GET /nodes/{node_id}`` show nodes in the
seed's shape; ``POST /jobs`` is an Ollama generate routed by the scheduler, so it is a
hot pipeline (`hot_routes`), not a FastAPI route.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends
from starlette.routing import BaseRoute, Route

from corral.app.admin.deps import requires
from corral.app.admin.nodes import NodeIdPath, fleet_token
from corral.app.auth import authenticate, check_model_access
from corral.app.limits import admit
from corral.app.nodes.wire import HeartbeatReply, SeedHeartbeat, SeedNode, from_seed
from corral.app.pipeline import Pipeline, read_request_body
from corral.app.relay import parse_ollama, relay

if TYPE_CHECKING:
    from corral.app.gateway import Gateway

__all__ = ["hot_routes", "router"]


def router(gw: Gateway) -> APIRouter:
    api = APIRouter(tags=["seed 003 aliases"])
    admin = Depends(requires(gw, "admin"))

    @api.post(
        "/nodes/heartbeat",
        response_model=HeartbeatReply,
        summary="A seed-003 node's heartbeat (alias)",
        dependencies=[Depends(fleet_token(gw))],
        responses={
            401: {"description": "The fleet token is missing or wrong."},
            403: {"description": "The gateway has no fleet token: it takes no agents."},
        },
    )
    async def seed_heartbeat(beat: SeedHeartbeat) -> HeartbeatReply:
        """Seed 003's heartbeat shape (node_id, ipv4, ipv6, port, models, metadata,
        load), with the fleet token. Registers the node's Ollama like
        ``POST /agent/heartbeat``: at ``metadata.ollama_url``, else port 11434 (or
        ``metadata.ollama_port``) of its ipv4 (else ipv6) address. The seed's ``port``
        (its agent's ``/execute``) is not used."""
        return await gw.nodes.heartbeat(from_seed(beat), source="seed")

    @api.get(
        "/nodes",
        response_model=list[SeedNode],
        summary="List nodes (seed 003 alias)",
        dependencies=[admin],
    )
    async def seed_nodes() -> list[SeedNode]:
        """Every node in seed 003's shape: the alias of ``GET /admin/nodes`` (admin
        scope when auth is on)."""
        return [gw.nodes.seed_view(n) for n in gw.nodes.listed()]

    @api.get(
        "/nodes/{node_id}",
        response_model=SeedNode,
        summary="Show a node (seed 003 alias)",
        dependencies=[admin],
    )
    async def seed_node(node_id: NodeIdPath) -> SeedNode:
        """One node in seed 003's shape: the alias of ``GET /admin/nodes/{node_id}``."""
        return gw.nodes.seed_view(gw.nodes.get(node_id))

    return api


def hot_routes(gw: Gateway) -> list[BaseRoute]:
    """``POST /jobs``: seed 003's job, which is an Ollama generate body."""
    stages = (authenticate, read_request_body, parse_ollama, check_model_access, admit, relay)
    return [Route("/jobs", Pipeline(gw, "/api/generate", stages), methods=["POST"])]
