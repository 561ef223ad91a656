"""What the local engine says about itself: version, models, loaded models.

Ollama: ``/api/version``, ``/api/tags`` and ``/api/ps``. An OpenAI-compatible server
(vLLM, llama.cpp server): ``/v1/models``, whose models are all loaded, and vLLM's
``/version`` when it has one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import aiohttp

__all__ = ["EngineReport", "read_engine"]


@dataclass(frozen=True, slots=True)
class EngineReport:
    reachable: bool
    error: str | None = None
    version: str | None = None
    models: list[str] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)


async def read_engine(session: aiohttp.ClientSession, url: str, kind: str) -> EngineReport:
    """Ask the engine at ``url``; any failure of its model list is reported, not raised."""
    try:
        if kind == "ollama":
            tags = await _get_json(session, url + "/api/tags")
            models = _names(tags, "models", "name")
            ps = await _get_json(session, url + "/api/ps")
            loaded = _names(ps, "models", "name")
            version = _version(await _get_json(session, url + "/api/version", optional=True))
        else:
            listed = await _get_json(session, url + "/v1/models")
            models = loaded = _names(listed, "data", "id")
            version = _version(await _get_json(session, url + "/version", optional=True))
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return EngineReport(reachable=False, error=_describe(exc))
    return EngineReport(reachable=True, version=version, models=models, loaded=loaded)


async def _get_json(session: aiohttp.ClientSession, url: str, *, optional: bool = False) -> Any:
    try:
        async with session.get(url) as resp:
            if resp.status != 200:
                if optional:
                    return None
                raise ValueError(f"GET {url} answered {resp.status}")
            return await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        if optional:
            return None
        raise


def _names(data: Any, key: str, name: str) -> list[str]:
    if not isinstance(data, dict) or not isinstance(data.get(key), list):
        raise ValueError(f"the engine's answer has no {key!r} list")
    out = []
    for entry in data[key]:
        value = entry.get(name) if isinstance(entry, dict) else None
        if isinstance(value, str) and value:
            out.append(value)
    return out


def _version(data: Any) -> str | None:
    version = data.get("version") if isinstance(data, dict) else None
    return version if isinstance(version, str) else None


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:500]
