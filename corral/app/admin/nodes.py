"""Node agents' heartbeats and the admin's view of the nodes they brought.

``POST /agent/heartbeat`` is not under ``/admin``: node agents call it with the fleet
token, not an API key. ``/admin/nodes`` lists, shows and forgets nodes (admin scope).
The registry itself is corral/app/nodes/.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, Field

from corral.app.admin.audit import audit_action
from corral.app.admin.deps import actor_of, requires
from corral.app.nodes.wire import NODE_ID_PATTERN, Heartbeat, HeartbeatReply, NodeView
from corral.config.fleet import FLEET_TOKEN_HEADER

if TYPE_CHECKING:
    from corral.app.gateway import Gateway

__all__ = ["NodeIdPath", "fleet_token", "router"]

NodeIdPath = Annotated[str, Path(pattern=NODE_ID_PATTERN, description="The node's id.")]

_TOKEN_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "The fleet token is missing or wrong."},
    403: {"description": "The gateway has no fleet token: it takes no agents."},
    409: {"description": "The node id is taken by another backend or another live agent."},
}


def fleet_token(gw: Gateway) -> Callable[[Request], None]:
    """A dependency: the caller presents the fleet token (checked before the body)."""

    def dependency(request: Request) -> None:
        gw.nodes.check_token(
            request.headers.get("authorization"), request.headers.get(FLEET_TOKEN_HEADER)
        )

    return dependency


class NodeList(BaseModel):
    nodes: list[NodeView] = Field(description="Every node, by id.")


def router(gw: Gateway) -> APIRouter:
    api = APIRouter(tags=["nodes"])
    admin = Depends(requires(gw, "admin"))

    @api.post(
        "/agent/heartbeat",
        response_model=HeartbeatReply,
        summary="A node agent's heartbeat",
        dependencies=[Depends(fleet_token(gw))],
        responses=_TOKEN_ERRORS,
    )
    async def heartbeat(beat: Heartbeat) -> HeartbeatReply:
        """Called by `corral agent` every interval with the fleet token (``Authorization:
        Bearer <token>``). The first heartbeat of a node id adds its engine to the fleet
        as a backend of that name (probed at once); later ones update its URL, models
        and telemetry, and bring an offline or failing node back. A malformed report is
        a 400 naming the field, and changes nothing."""
        return await gw.nodes.heartbeat(beat)

    @api.get("/admin/nodes", response_model=NodeList, summary="List nodes", dependencies=[admin])
    async def list_nodes() -> NodeList:
        """Every node that joined through an agent, with its status (online, degraded,
        offline), its engine, the models the gateway found there, and the CPU, memory
        and GPU load its agent last reported."""
        return NodeList(nodes=[gw.nodes.view(n) for n in gw.nodes.listed()])

    @api.get(
        "/admin/nodes/{node_id}",
        response_model=NodeView,
        summary="Show a node",
        dependencies=[admin],
    )
    async def show_node(node_id: NodeIdPath) -> NodeView:
        """One node as ``GET /admin/nodes`` lists it; 404 if there is none by that id."""
        return gw.nodes.view(gw.nodes.get(node_id))

    @api.delete(
        "/admin/nodes/{node_id}",
        response_model=NodeView,
        summary="Forget a node",
        dependencies=[admin],
    )
    async def forget_node(node_id: NodeIdPath, request: Request) -> NodeView:
        """Take the node's backend out of the fleet now (requests under way finish) and
        forget its reports; audited. An agent still running rejoins on its next
        heartbeat: stop it first. Answers the node as it was."""
        actor = actor_of(gw, request)  # verified by the dependency; named in the audit
        before = gw.nodes.view(gw.nodes.get(node_id))
        await gw.nodes.forget(node_id)
        await audit_action(gw, actor, "node.forget", node_id, before=before.model_dump(mode="json"))
        return before

    return api
