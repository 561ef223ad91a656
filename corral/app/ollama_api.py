"""The Ollama API as the fleet's single server: routes and the fleet-wide views.

Inference (generate, chat, embed, embeddings) and show go to one backend through the
relay; tags, ps and version merge what the fleet knows; model management fans out.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from corral import __version__
from corral.adapters.upstream import UpstreamRequest
from corral.app.auth import authenticate, check_model_access, guard
from corral.app.fanout import (
    blob_exists,
    blob_upload,
    fan_out,
    merged_progress,
    parse_manage,
    spool_blob,
)
from corral.app.fleetview import fleet_headers, fleet_models, ollama_tag
from corral.app.gateway import Gateway
from corral.app.limits import admit
from corral.app.pipeline import Pipeline, read_request_body
from corral.app.relay import parse_ollama, relay
from corral.core.types import BackendState

__all__ = ["ollama_routes"]

_INFERENCE = ("/api/generate", "/api/chat", "/api/embed", "/api/embeddings", "/api/show")


def _json(request: Request, data: Any, backends: list[BackendState]) -> Response:
    return Response(
        msgspec.json.encode(data),
        media_type="application/json",
        headers=fleet_headers(request, backends),
    )


def ollama_routes(gw: Gateway) -> list[BaseRoute]:
    routes: list[BaseRoute] = []
    for path in _INFERENCE:
        routes.append(
            Route(
                path,
                Pipeline(
                    gw,
                    path,
                    (
                        authenticate,
                        read_request_body,
                        parse_ollama,
                        check_model_access,
                        admit,
                        relay,
                    ),
                ),
                methods=["POST"],
            )
        )
    for path in ("/api/pull", "/api/push", "/api/create"):
        stages = (authenticate, read_request_body, parse_manage, merged_progress)
        routes.append(Route(path, Pipeline(gw, path, stages), methods=["POST"]))
    routes.append(
        Route(
            "/api/copy",
            Pipeline(gw, "/api/copy", (authenticate, read_request_body, parse_manage, fan_out)),
            methods=["POST"],
        )
    )
    routes.append(
        Route(
            "/api/delete",
            Pipeline(gw, "/api/delete", (authenticate, read_request_body, parse_manage, fan_out)),
            methods=["DELETE"],
        )
    )
    routes.append(
        Route(
            "/api/blobs/{digest}",
            Pipeline(gw, "/api/blobs", (authenticate, read_request_body, blob_exists)),
            methods=["HEAD"],
        )
    )
    routes.append(
        Route(
            "/api/blobs/{digest}",
            Pipeline(gw, "/api/blobs", (authenticate, spool_blob, blob_upload)),
            methods=["POST"],
        )
    )

    async def root(request: Request) -> Response:
        return PlainTextResponse("Ollama is running", headers=fleet_headers(request, []))

    async def tags(request: Request) -> Response:
        """The fleet's models, one entry per model (from the last probe of each backend)."""
        if denied := guard(gw.auth, request, "/api/tags"):
            return denied
        merged, backends = fleet_models(gw)
        tags = [ollama_tag(name, entry) for name, entry in merged.items()]
        return _json(request, {"models": tags}, backends)

    async def ps(request: Request) -> Response:
        """What is loaded where: every backend's /api/ps, each entry marked with its backend.

        An OpenAI-kind server (vLLM, llama.cpp) keeps its models loaded while it runs,
        so each of its models is listed as resident.
        """
        if denied := guard(gw.auth, request, "/api/ps"):
            return denied
        backends = gw.fleet.routable("ollama")
        found = await asyncio.gather(*(_ps_of(gw, b) for b in backends))
        entries = [e for part in found for e in part]
        servers = gw.fleet.routable("openai")
        for b in servers:
            for key, entry in gw.fleet.tag_entries.get(b.name, {}).items():
                resident = ollama_tag(key, entry) | {"size_vram": 0, "backend": b.name}
                if isinstance(entry.get("max_model_len"), int):
                    resident["context_length"] = entry["max_model_len"]
                entries.append(resident)
        return _json(request, {"models": entries}, [*backends, *servers])

    async def version(request: Request) -> Response:
        """The lowest version in the fleet: what every backend can be relied on to do."""
        backends = gw.fleet.routable("ollama")
        versions = [b.version for b in backends if b.version]
        lowest = min(versions, key=_version_key) if versions else __version__
        return _json(request, {"version": lowest, "corral": __version__}, backends)

    routes += [
        Route("/", root, methods=["GET", "HEAD"]),
        Route("/api/tags", tags, methods=["GET"]),
        Route("/api/ps", ps, methods=["GET"]),
        Route("/api/version", version, methods=["GET"]),
    ]
    return routes


async def _ps_of(gw: Gateway, b: BackendState) -> list[dict[str, Any]]:
    try:
        async with asyncio.timeout(gw.settings.health.timeout_s):
            resp = await gw.fleet.transports[b.name].send(UpstreamRequest("GET", "/api/ps"))
            try:
                body = await resp.read()
            finally:
                resp.close()
        if resp.status != 200:
            return []
        entries = msgspec.json.decode(body).get("models") or []
    except Exception:  # a backend that cannot say what it holds contributes nothing
        return []
    for entry in entries:
        entry["backend"] = b.name
    return list(entries)


def _version_key(v: str) -> tuple[int, ...]:
    parts: list[int] = []
    for piece in v.lstrip("v").split("-")[0].split("."):
        parts.append(int(piece) if piece.isdigit() else 0)
    return tuple(parts)
