"""The OpenAI API: /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/models.

Requests are parsed once into the canonical types; each is then served by an
OpenAI-kind backend (forwarded, with usage always requested) or an Ollama one
(translated both ways) — see corral/app/plans.py.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from corral.app.auth import authenticate, check_model_access, guard
from corral.app.fleetview import fleet_headers, fleet_models
from corral.app.gateway import Gateway
from corral.app.limits import admit
from corral.app.pipeline import Pipeline, read_request_body
from corral.app.relay import parse_openai, relay

__all__ = ["openai_routes"]

ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")


def openai_routes(gw: Gateway) -> list[BaseRoute]:
    routes: list[BaseRoute] = [
        Route(
            path,
            Pipeline(
                gw,
                path,
                (authenticate, read_request_body, parse_openai, check_model_access, admit, relay),
                dialect="openai",
            ),
            methods=["POST"],
        )
        for path in ENDPOINTS
    ]

    async def models(request: Request) -> Response:
        """Every model the fleet serves, OpenAI-shaped."""
        if denied := guard(gw.auth, request, "/v1/models"):
            return denied
        listed, backends = fleet_models(gw)
        data = [_openai_model(name, entry) for name, entry in listed.items()]
        return Response(
            msgspec.json.encode({"object": "list", "data": data}),
            media_type="application/json",
            headers=fleet_headers(request, backends),
        )

    routes.append(Route("/v1/models", models, methods=["GET"]))
    return routes


def _openai_model(name: str, entry: dict[str, Any]) -> dict[str, Any]:
    if "id" in entry:  # already OpenAI-shaped (an OpenAI-kind backend)
        return {
            "id": entry["id"],
            "object": "model",
            "created": entry.get("created", 0),
            "owned_by": entry.get("owned_by", "corral"),
        }
    created = 0
    modified = entry.get("modified_at")
    if isinstance(modified, str):
        try:
            created = int(datetime.fromisoformat(modified.replace("Z", "+00:00")).timestamp())
        except ValueError:
            created = 0
    upstream = entry.get("name") or entry.get("model") or name
    namespace = upstream.split("/")[0] if "/" in upstream else "library"
    return {"id": upstream, "object": "model", "created": created, "owned_by": namespace}
