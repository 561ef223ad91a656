"""The app factory: settings in, ASGI app out; all state hangs off the app."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from corral import __version__
from corral.app.admin import control_routers, hot_routes
from corral.app.admin.errors import control_error, dialect_of, http_refusal, validation_error
from corral.app.admin.openapi import control_openapi
from corral.app.asgi import Message, Receive, Scope, Send, send_error
from corral.app.fleetview import fleet_headers
from corral.app.gateway import Gateway
from corral.app.ollama_api import ollama_routes
from corral.app.openai_api import openai_routes
from corral.app.pipeline import Pipeline
from corral.config import ConfigSource, Settings
from corral.core.errors import CorralError, MethodNotAllowed, PayloadTooLarge, RouteNotFound

__all__ = ["HotPaths", "create_app"]

_API_DESCRIPTION = (
    "Corral's own API: the control plane (/admin/..., /healthz, /readyz) and the "
    "self-service routes. The Ollama API (/api/...) and the OpenAI API (/v1/chat/"
    "completions, /v1/completions, /v1/embeddings, /v1/models) are served beside it "
    "exactly as those servers define them; see docs/api.md."
)


def create_app(
    settings: Settings,
    *,
    gateway: Gateway | None = None,
    config_source: ConfigSource | None = None,
    on_startup: Callable[[Gateway], Awaitable[None]] | None = None,
    on_shutdown: Callable[[Gateway], Awaitable[None]] | None = None,
) -> HotPaths:
    gw = gateway or Gateway(settings, config_source=config_source)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if on_startup is not None:
            await on_startup(gw)
        await gw.start()
        try:
            yield
        finally:
            await gw.stop()
            if on_shutdown is not None:
                await on_shutdown(gw)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        error: CorralError
        if exc.status_code == 413:
            error = PayloadTooLarge(str(exc.detail))
        elif exc.status_code == 405:
            error = MethodNotAllowed(f"method {request.method} not allowed for {request.url.path}")
        elif exc.status_code == 404:
            error = RouteNotFound(f"no such endpoint: {request.method} {request.url.path}")
        else:
            error = http_refusal(exc.status_code, str(exc.detail), exc.__cause__)
        body = error.body(dialect_of(request.url.path))
        headers = {**(exc.headers or {}), **fleet_headers(request, [])}
        return Response(body, error.status, headers=headers, media_type="application/json")

    routes = [*ollama_routes(gw), *openai_routes(gw), *hot_routes(gw)]
    # FastAPI for the control plane's typed routes and its OpenAPI spec; the Ollama and
    # OpenAI endpoints are plain routes (not in the spec) and the hot ones never reach
    # this app at all (HotPaths below).
    app = FastAPI(
        title="Corral",
        version=__version__,
        description=_API_DESCRIPTION,
        routes=routes,
        exception_handlers={
            HTTPException: http_error,
            CorralError: control_error,
            RequestValidationError: validation_error,
        },
        lifespan=lifespan,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    for router in control_routers(gw):
        app.include_router(router)
    app.openapi = control_openapi(app)  # type: ignore[method-assign]  # errors as answered
    app.state.gateway = gw
    cors = None
    if settings.cors.origins:
        cors = {
            "allow_origins": settings.cors.origins,
            "allow_credentials": settings.cors.allow_credentials,
            "allow_methods": ["*"],
            "allow_headers": ["*"],
            "expose_headers": [
                "X-Corral-Backend",
                "X-Corral-Request-Id",
                "X-Corral-Route-Reason",
                "X-Corral-Schema",
            ],
            "max_age": settings.cors.max_age_s,
        }
    return HotPaths(app, routes, cors=cors)


class HotPaths:
    """Sends the pipeline endpoints straight to their Pipeline, everything else to Starlette.

    An exact (method, path) lookup replaces route matching and two middleware layers
    that would otherwise wrap every ``send`` of every streamed chunk. Pipelines render
    their own errors, so they need neither.
    """

    def __init__(
        self, app: Starlette, routes: list[BaseRoute], *, cors: dict[str, Any] | None = None
    ) -> None:
        self.app = app
        self.state = app.state
        self.routes = app.routes
        self._hot: dict[tuple[str, str], Pipeline] = {}
        for route in routes:
            if isinstance(route, Route) and isinstance(route.endpoint, Pipeline):
                if "{" in route.path:
                    continue
                for method in route.methods or ():
                    self._hot[(method, route.path)] = route.endpoint
        # CORS, when configured, sees every request, hot or not, from outside.
        self._entry: Callable[[Scope, Receive, Send], Awaitable[None]] = (
            CORSMiddleware(self._dispatch, **cors) if cors else self._dispatch
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._entry(scope, receive, send)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            pipeline = self._hot.get((scope["method"], scope["path"]))
            if pipeline is not None:
                await pipeline(scope, receive, send)
                return
            if not scope["path"].startswith(_UNBOUNDED):
                # The control plane reads bodies whole, before it checks the key:
                # bounded like the pipelines' bodies, or anyone could fill the memory.
                limit = max(self.state.gateway.settings.limits.max_body_bytes, _CONTROL_FLOOR)
                declared = _declared_length(scope)
                if declared > limit:
                    error = PayloadTooLarge(
                        f"request body of {declared} bytes exceeds {limit} bytes"
                    )
                    await send_error(send, error, dialect_of(scope["path"]))
                    return
                receive = _bounded(receive, limit)
                if scope["method"] in _WITH_BODY:
                    scope = _json_by_default(scope)
        await self.app(scope, receive, send)


# Model blobs (GGUF files of gigabytes) stream through to the backends, unbounded.
_UNBOUNDED = "/api/blobs/"
# Never below this, so a small limits.max_body_bytes cannot lock the admin out of the
# API that changes it.
_CONTROL_FLOOR = 1024 * 1024


# Every control-plane route takes JSON (none takes a form). curl -d sends it as
# application/x-www-form-urlencoded and other tools as text/plain or with no type at
# all; read as what it is, not refused as "not a dictionary".
_WITH_BODY = frozenset(("POST", "PUT", "PATCH", "DELETE"))
_NOT_SAID_JSON = (b"", b"application/x-www-form-urlencoded", b"text/plain")


def _json_by_default(scope: Scope) -> Scope:
    """``scope`` with its body declared JSON when the client did not say what it is."""
    headers = scope["headers"]
    for i, (name, value) in enumerate(headers):
        if name == b"content-type":
            if value.split(b";", 1)[0].strip().lower() not in _NOT_SAID_JSON:
                return scope
            headers = [h for j, h in enumerate(headers) if j != i]
            break
    return {**scope, "headers": [*headers, (b"content-type", b"application/json")]}


def _declared_length(scope: Scope) -> int:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else 0
    return 0


def _bounded(receive: Receive, limit: int) -> Receive:
    """``receive`` that refuses (413) a body, chunked or not, once it passes ``limit``."""
    size = 0

    async def bounded() -> Message:
        nonlocal size
        message = await receive()
        size += len(message.get("body", b""))
        if size > limit:
            # An HTTPException, which FastAPI lets through while it reads a body.
            raise HTTPException(413, f"request body exceeds {limit} bytes")
        return message

    return bounded
