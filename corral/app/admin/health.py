"""Liveness and readiness: ``/healthz`` and ``/readyz``, open to probes without a key."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse

if TYPE_CHECKING:
    from corral.app.gateway import Gateway

__all__ = ["Readiness", "router"]


class Liveness(BaseModel):
    status: str = Field(description='Always "ok" while the process serves requests.')


class Readiness(BaseModel):
    ready: bool = Field(description="True when every check passes.")
    checks: dict[str, bool] = Field(
        description="store (reachable), migrations (schema at head), backends (at least "
        "one healthy backend)."
    )
    healthy_backends: int = Field(description="Backends that passed their last probe.")


def router(gw: Gateway) -> APIRouter:
    api = APIRouter(tags=["health"])

    @api.get("/healthz", response_model=Liveness, summary="Liveness")
    async def healthz() -> Liveness:
        """The process is up and its event loop answers. For a liveness probe."""
        return Liveness(status="ok")

    @api.get(
        "/readyz",
        response_model=Readiness,
        summary="Readiness",
        responses={503: {"model": Readiness, "description": "Not ready; checks say why."}},
    )
    async def readyz() -> JSONResponse:
        """Ready to take traffic: the store answers, its schema is migrated, and at
        least one backend is healthy. 503 (with the same body) otherwise."""
        store_ok = migrated = False
        if gw.store is not None:
            try:
                store_ok = await gw.store.ping()
                migrated = store_ok and await gw.store.migrated()
            except Exception:
                store_ok = migrated = False
        healthy = sum(1 for b in gw.fleet.backends.values() if b.healthy and b.enabled)
        checks = {"store": store_ok, "migrations": migrated, "backends": healthy > 0}
        ready = all(checks.values())
        body = Readiness(ready=ready, checks=checks, healthy_backends=healthy)
        return JSONResponse(body.model_dump(), status_code=200 if ready else 503)

    return api
