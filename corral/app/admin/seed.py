"""Seed 000's routes (the "Orion Brain Service" gateway), as aliases onto Corral's own.

Its users switch to Corral without touching their apps:

- ``POST /generate``, ``POST /chat``: the very pipelines of ``/api/generate`` and
  ``/api/chat`` (same stages, same answers, streamed or not; key with ``inference``);
- ``GET /models``: ``/api/tags``, the fleet's merged model list (``inference``);
- ``GET /health``: ``{"ok", "backends"}``, open like ``/healthz`` (names and health
  only, no URLs);
- ``GET /stats``, ``GET /backends``, ``POST /backends/register``,
  ``POST /backends/deregister``: ``/admin/stats``, ``/admin/backends`` and its
  register and delete (``admin``).

The inference aliases are plain routes whose endpoint is a `Pipeline`, so `HotPaths`
serves them directly (see corral/app/admin/__init__.py).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import msgspec
from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from corral.app.admin.backends import BackendList
from corral.app.admin.deps import Actor, requires
from corral.app.admin.openapi import refusals
from corral.app.admin.registry import deregister, register
from corral.app.admin.stats import StatsView, stats_view
from corral.app.admin.views import BackendView, backend_view, fleet_now
from corral.app.auth import authenticate, check_model_access, guard
from corral.app.fleetview import fleet_headers, fleet_models, ollama_tag
from corral.app.limits import admit
from corral.app.pipeline import Pipeline, read_request_body
from corral.app.relay import parse_ollama, relay
from corral.config.models import BackendConfig
from corral.core.errors import NotFound

if TYPE_CHECKING:
    from corral.app.gateway import Gateway

__all__ = ["hot_routes", "router"]


class BackendHealth(BaseModel):
    name: str = Field(description="The backend's name.")
    healthy: bool = Field(description="Its last probe succeeded.")


class SeedHealth(BaseModel):
    ok: bool = Field(description="At least one backend is healthy and enabled.")
    backends: list[BackendHealth] = Field(description="Every backend's health, by name.")


class Deregistration(BaseModel):
    """Which backend to remove: by name or by URL."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str | None = Field(default=None, description="The backend's name.")
    url: str | None = Field(default=None, description="Or its URL.")

    @model_validator(mode="after")
    def _one_of(self) -> Deregistration:
        if (self.name is None) == (self.url is None):
            raise ValueError("give the backend's name or its url (one of them)")
        return self


def router(gw: Gateway) -> APIRouter:
    api = APIRouter(tags=["seed aliases"])
    admin = Depends(requires(gw, "admin"))

    @api.get("/health", response_model=SeedHealth, summary="Health (seed 000)")
    async def health() -> SeedHealth:
        """Seed 000's health: ok when a backend can serve, and each backend's health.
        Open, like /healthz."""
        backends = [
            BackendHealth(name=b.name, healthy=b.healthy)
            for _, b in sorted(gw.fleet.backends.items())
        ]
        ok = any(b.routable for b in gw.fleet.backends.values())
        return SeedHealth(ok=ok, backends=backends)

    @api.get("/stats", response_model=StatsView, summary="Stats (seed 000)")
    async def stats(_: Actor = admin) -> StatsView:
        """Alias of GET /admin/stats: requests, in flight, latencies per backend."""
        return stats_view(gw, time.time())

    @api.get("/backends", response_model=BackendList, summary="Backends (seed 000)")
    async def backends(_: Actor = admin) -> BackendList:
        """Alias of GET /admin/backends."""
        now = fleet_now()
        return BackendList(
            backends=[backend_view(gw, b, now) for _, b in sorted(gw.fleet.backends.items())]
        )

    @api.post(
        "/backends/register",
        response_model=BackendView,
        status_code=201,
        summary="Register a backend (seed 000)",
        responses=refusals(
            {
                400: "A bad field, or no engine of that kind at the URL.",
                409: "The name is taken.",
            }
        ),
    )
    async def register_backend(body: BackendConfig, actor: Actor = admin) -> BackendView:
        """Alias of POST /admin/backends: probed first, stored, survives restarts."""
        return backend_view(gw, await register(gw, actor, body))

    @api.post(
        "/backends/deregister",
        response_model=BackendView,
        summary="Deregister (seed 000)",
        responses=refusals(
            {
                404: "No backend by that name or URL.",
                409: "The backend was not registered through the admin API.",
            }
        ),
    )
    async def deregister_backend(body: Deregistration, actor: Actor = admin) -> BackendView:
        """Alias of DELETE /admin/backends/{name}; the backend is named or given by URL."""
        key = body.name if body.name is not None else body.url
        assert key is not None
        state = gw.fleet.find(key)
        if state is None:
            raise NotFound(
                f"no backend with name or url {key!r}", param="name" if body.name else "url"
            )
        return backend_view(gw, await deregister(gw, actor, state.name))

    return api


def hot_routes(gw: Gateway) -> list[BaseRoute]:
    """``/generate`` and ``/chat`` as the pipelines of /api/generate and /api/chat, and
    ``/models`` as /api/tags."""
    stages = (authenticate, read_request_body, parse_ollama, check_model_access, admit, relay)
    routes: list[BaseRoute] = [
        Route(alias, Pipeline(gw, endpoint, stages), methods=["POST"])
        for alias, endpoint in (("/generate", "/api/generate"), ("/chat", "/api/chat"))
    ]

    async def models(request: Request) -> Response:
        """The fleet's models, as GET /api/tags lists them."""
        if denied := guard(gw.auth, request, "/api/tags"):
            return denied
        merged, backends = fleet_models(gw)
        body = {"models": [ollama_tag(name, entry) for name, entry in merged.items()]}
        return Response(
            msgspec.json.encode(body),
            media_type="application/json",
            headers=fleet_headers(request, backends),
        )

    routes.append(Route("/models", models, methods=["GET"]))
    return routes
