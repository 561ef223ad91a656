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

from corral.core.errors import BadRequest, CorralError, InvalidField, InvalidJSON

__all__ = ["control_error", "dialect_of", "http_refusal", "validation_error"]

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


def _problem(err: dict[str, Any]) -> tuple[str, str]:
    """(field, what is wrong with it) for one of pydantic's errors."""
    loc = tuple(err.get("loc", ()))
    if err.get("type") == "json_invalid":
        # FastAPI puts the character position where the field would be.
        where = loc[1] if len(loc) > 1 else "?"
        reason = (err.get("ctx") or {}).get("error", "JSON decode error")
        return "body", f"invalid JSON at character {where}: {reason}"
    return _field(loc), str(err.get("msg", "invalid"))


async def validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = []
    first = "body"
    for i, err in enumerate(exc.errors()):
        field, message = _problem(err)
        if i == 0:
            first = field
        problems.append(f"{field}: {message}")
    unreadable = any(err.get("type") == "json_invalid" for err in exc.errors())
    kind = InvalidJSON if unreadable else InvalidField
    error = kind("; ".join(problems) or "invalid request", param=first)
    return _render(error, request.url.path)


def http_refusal(status: int, detail: str, cause: BaseException | None) -> CorralError:
    """The error for an HTTP status Starlette or FastAPI raised on their own (not 404/405).

    FastAPI answers a body it cannot decode at all (not UTF-8, nested too deeply, a
    number of thousands of digits) with a bare 400; that is bad JSON, said as such.
    """
    if status == 400 and cause is not None:
        reason = _UNREADABLE.get(type(cause)) or str(cause) or type(cause).__name__
        if "integer string conversion" in reason:  # Python's own words, not the client's
            reason = "a number with too many digits"
        return InvalidJSON(f"body: invalid JSON: {reason}", param="body")
    if 400 <= status < 500:
        return BadRequest(detail, status=status)
    return CorralError(detail, status=status)


_UNREADABLE: dict[type[BaseException], str] = {
    RecursionError: "nested too deeply",
    UnicodeDecodeError: "not UTF-8",
}
