"""The control plane over HTTP: Corral's own API beside the Ollama and OpenAI ones.

Every route here is a FastAPI route, so it is typed, validated and listed in the
OpenAPI spec (``/openapi.json``, browsable at ``/docs``). None of it is on the hot
path: the inference endpoints stay raw-ASGI pipelines (corral/app/factory.py).

Each module contributes one ``router(gw) -> APIRouter``; `control_routers` gathers
them in the order their paths should be matched. A route that must be a hot pipeline
(an alias of an inference endpoint, say) cannot live in a FastAPI router — included
routers are opaque to `HotPaths` — so such routes come from `hot_routes` instead, as
plain Starlette routes whose endpoint is a `Pipeline`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter
from starlette.routing import BaseRoute

from corral.app.admin import (
    apikeys,
    audit_search,
    backends,
    budgets,
    config_api,
    health,
    models,
    nodes,
    operations,
    people,
    seed,
    seed_nodes,
    selfservice,
    workers,
)

if TYPE_CHECKING:
    from corral.app.gateway import Gateway

__all__ = ["control_routers", "hot_routes"]


def control_routers(gw: Gateway) -> list[APIRouter]:
    return [
        health.router(gw),
        people.router(gw),
        apikeys.router(gw),
        budgets.router(gw),
        selfservice.router(gw),
        models.router(gw),
        nodes.router(gw),
        seed_nodes.router(gw),
        backends.router(gw),
        operations.router(gw),
        config_api.router(gw),
        seed.router(gw),
        workers.router(gw),
        audit_search.router(gw),
    ]


def hot_routes(gw: Gateway) -> list[BaseRoute]:
    """Plain routes (pipelines among them) that belong to the control plane's modules."""
    return [*seed.hot_routes(gw), *seed_nodes.hot_routes(gw)]
