"""When a new worker is ready: its engine answers and holds the required models.

An Ollama worker pulls what it lacks (``/api/pull``, progress read to the end); an
OpenAI-compatible engine serves the model it was started with and cannot pull, so a
required model it does not list is a start failure that says so.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence

import aiohttp

from corral.adapters.workers.base import WorkerStartError
from corral.core.names import normalize_model

__all__ = ["held_models", "pull_model", "wait_ready"]

log = logging.getLogger("corral.workers")

_PROBE_TIMEOUT = aiohttp.ClientTimeout(total=5.0, sock_connect=2.0)
# A pull may take many minutes; the caller bounds it with the readiness deadline.
_PULL_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=5.0, sock_read=600.0)


async def held_models(http: aiohttp.ClientSession, url: str, kind: str) -> set[str]:
    """The models the engine lists, normalized (``name:tag``). Raises on any failure."""
    path = "/api/tags" if kind == "ollama" else "/v1/models"
    async with http.get(url + path, timeout=_PROBE_TIMEOUT) as resp:
        body = await resp.read()
        if resp.status != 200:
            raise WorkerStartError(f"GET {path} answered {resp.status}")
    data = json.loads(body)
    entries = data.get("models" if kind == "ollama" else "data") or []
    names = set()
    for entry in entries:
        name = entry.get("name") or entry.get("model") or entry.get("id")
        if isinstance(name, str):
            names.add(normalize_model(name))
    return names


async def pull_model(http: aiohttp.ClientSession, url: str, model: str) -> None:
    """Pull ``model`` onto an Ollama engine; raises `WorkerStartError` with its error."""
    body = {"model": model, "stream": True}
    async with http.post(url + "/api/pull", json=body, timeout=_PULL_TIMEOUT) as resp:
        if resp.status != 200:
            text = (await resp.text()).strip()
            raise WorkerStartError(f"pulling {model}: {resp.status} {text[:300]}")
        status = ""
        async for raw in resp.content:
            line = raw.strip()
            if not line:
                continue
            try:
                item = json.loads(line)
            except ValueError:
                raise WorkerStartError(
                    f"pulling {model}: unreadable progress {line[:120]!r}"
                ) from None
            if isinstance(item, dict) and item.get("error"):
                raise WorkerStartError(f"pulling {model}: {item['error']}")
            if isinstance(item, dict):
                status = str(item.get("status", status))
    if status != "success":
        raise WorkerStartError(f"pulling {model} ended without success (last: {status!r})")


async def _answering(http: aiohttp.ClientSession, url: str, kind: str) -> set[str]:
    """Wait until the engine lists its models (it may still be binding or loading)."""
    delay = 0.02
    while True:
        try:
            return await held_models(http, url, kind)
        except (aiohttp.ClientError, TimeoutError, WorkerStartError, ValueError) as exc:
            log.debug("worker at %s not answering yet: %s", url, exc)
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)


async def wait_ready(url: str, kind: str, models: Sequence[str], timeout: float) -> set[str]:
    """Return the models held once the engine at ``url`` answers and holds ``models``.

    Raises `WorkerStartError` when it is not ready within ``timeout`` seconds, when a
    pull fails, or when an OpenAI-compatible engine does not serve a required model.
    """
    step = "answer"
    try:
        async with asyncio.timeout(timeout), aiohttp.ClientSession() as http:
            held = await _answering(http, url, kind)
            missing = [m for m in models if normalize_model(m) not in held]
            if missing and kind != "ollama":
                raise WorkerStartError(
                    f"the engine serves {', '.join(sorted(held)) or 'no model'}, not "
                    f"{', '.join(missing)} (an OpenAI-compatible engine cannot pull models: "
                    "start it with the model in the command)"
                )
            for model in missing:
                step = f"pull {model}"
                log.info("worker at %s: pulling %s", url, model)
                await pull_model(http, url, model)
            step = "list the pulled models"
            held = await held_models(http, url, kind)
    except TimeoutError:
        raise WorkerStartError(f"not ready within {timeout:g}s (waiting to {step})") from None
    except aiohttp.ClientError as exc:
        raise WorkerStartError(f"could not {step}: {exc or type(exc).__name__}") from None
    still = [m for m in models if normalize_model(m) not in held]
    if still:
        raise WorkerStartError(f"{', '.join(still)} not listed after the pull")
    return held
