"""How the control plane answers errors: one JSON shape, clear messages, never a 500.

Admin and self-service routes answer in the OpenAI error shape
(``{"error": {"message", "type", "param", "code"}}``), which names the offending field
in ``param``. A body or query that fails validation is a 400 whose message names the
field and says what was wrong with it (FastAPI's default would be a 422 listing
pydantic internals).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.responses import Response

from corral.core.errors import CorralError, InvalidField

__all__ = ["control_error", "dialect_of", "validation_error"]

log = logging.getLogger("corral.admin")

_OLLAMA_PREFIXES = ("/api/",)


def dialect_of(path: str) -> str:
    """The error dialect a path's clients expect: Ollama's for its API, else OpenAI's."""
    if path == "/" or path.startswith(_OLLAMA_PREFIXES):
        return "ollama"
    return "openai"


def _render(error: CorralError, path: str) -> Response:
    return Response(
        error.body(dialect_of(path)),
        error.status,
        headers=error.headers(),
        media_type="application/json",
    )


async def control_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CorralError)
    return _render(exc, request.url.path)


def _field(loc: tuple[Any, ...]) -> str:
    # ("body", "backends", 0, "url") -> "backends[0].url"; the source (body/query/path) is dropped.
    parts = list(loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc)
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


async def validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = []
    first = "body"
    for i, err in enumerate(exc.errors()):
        field = _field(tuple(err.get("loc", ())))
        if i == 0:
            first = field
        problems.append(f"{field}: {err.get('msg', 'invalid')}")
    error = InvalidField("; ".join(problems) or "invalid request", param=first)
    return _render(error, request.url.path)
