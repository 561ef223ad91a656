"""Is there an engine of the declared kind at a URL? Asked before a backend is registered.

An Ollama server answers ``GET /api/version`` with ``{"version": ...}`` and
``GET /api/tags`` with ``{"models": [...]}``; an OpenAI-compatible server (vLLM,
llama.cpp server, Ollama's own /v1) answers ``GET /v1/models`` with
``{"data": [...]}``. Anything else — nothing listening, a web page, another API — is
refused with a sentence saying what answered, so the operator can fix the URL or the
kind.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from corral.adapters.upstream import HttpTransport, UpstreamConnectError, UpstreamRequest
from corral.core.types import BackendKind

__all__ = ["EngineCheck", "check_engine"]

_MAX_BODY = 4 * 1024 * 1024  # a model list is small; a huge body is not one


@dataclass(frozen=True, slots=True)
class EngineCheck:
    ok: bool
    detail: str  # what answered, in a sentence
    version: str | None = None
    models: int | None = None


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    content_type: str
    data: Any  # decoded JSON, or None when the body was not JSON


class _NothingAnswered(Exception):
    pass


async def _get(transport: HttpTransport, path: str) -> _Answer:
    try:
        resp = await transport.send(UpstreamRequest("GET", path))
    except UpstreamConnectError as exc:
        raise _NothingAnswered(str(exc)) from None
    except OSError as exc:
        raise _NothingAnswered(str(exc) or type(exc).__name__) from None
    try:
        body = await resp.read()
    finally:
        resp.close()
    data = None
    if len(body) <= _MAX_BODY:
        try:
            data = json.loads(body)
        except ValueError:
            data = None
    return _Answer(resp.status, resp.content_type.split(";")[0].strip(), data)


def _describe(path: str, answer: _Answer) -> str:
    what = "JSON" if answer.data is not None else answer.content_type or "no content type"
    return f"GET {path} answered HTTP {answer.status} ({what})"


def _has(answer: _Answer, key: str, kind: type) -> bool:
    """A 200 whose JSON object carries ``key`` of type ``kind``."""
    return (
        answer.status == 200
        and isinstance(answer.data, dict)
        and isinstance(answer.data.get(key), kind)
    )


def _openai_ok(models: _Answer) -> bool:
    return _has(models, "data", list)


async def _check(transport: HttpTransport, url: str, kind: BackendKind) -> EngineCheck:
    if kind == "ollama":
        version = await _get(transport, "/api/version")
        tags = await _get(transport, "/api/tags")
        version_ok, tags_ok = _has(version, "version", str), _has(tags, "models", list)
        if version_ok and tags_ok:
            number = version.data["version"]
            return EngineCheck(True, f"Ollama {number}", number, len(tags.data["models"]))
        bad = ("/api/tags", tags) if version_ok else ("/api/version", version)
        why = f"{url} is not an Ollama server: {_describe(*bad)}"
        models = await _get(transport, "/v1/models")
        if _openai_ok(models):
            why += "; it answers GET /v1/models like an OpenAI-compatible server: use kind openai"
        return EngineCheck(False, why)
    models = await _get(transport, "/v1/models")
    if _openai_ok(models):
        return EngineCheck(True, "an OpenAI-compatible server", None, len(models.data["data"]))
    why = f"{url} is not an OpenAI-compatible server: {_describe('/v1/models', models)}"
    if url.endswith("/v1"):
        why += " (Corral adds /v1/... to the URL itself: try it without the trailing /v1)"
    return EngineCheck(False, why)


async def check_engine(
    url: str, kind: BackendKind, *, timeout: float, connect_timeout: float | None = None
) -> EngineCheck:
    """Ask ``url`` what it is; ``ok`` when it is an engine of ``kind``."""
    transport = HttpTransport(url, connect_timeout=connect_timeout or timeout)
    try:
        async with asyncio.timeout(timeout):
            return await _check(transport, url, kind)
    except _NothingAnswered as exc:
        return EngineCheck(False, f"nothing answered at {url}: {exc}")
    except TimeoutError:
        return EngineCheck(False, f"nothing answered at {url} within {timeout:g}s")
    finally:
        await transport.close()
