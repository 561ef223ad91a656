"""Model-management calls to one backend, shared by the Ollama API's fan-out
(corral/app/fanout.py) and the admin API's model routes (corral/app/admin/models.py).

`call_backend` sends one request and reads its whole answer; `read_progress` follows
one backend's NDJSON progress stream (pull, push, create) into a queue that a merger
reads, so several backends can be followed at once and their lines combined however
the caller wants (one Ollama-shaped stream, or one line per backend).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import IO, Any

import aiohttp
import msgspec

from corral.adapters.fleet import Fleet
from corral.adapters.upstream import UpstreamConnectError, UpstreamRequest
from corral.core.types import BackendState

__all__ = [
    "JSON_HEADERS",
    "BackendReply",
    "ProgressEvent",
    "ProgressQueue",
    "call_backend",
    "error_text",
    "read_progress",
]

JSON_HEADERS = {"content-type": "application/json"}

# (backend, a progress line, None) while it streams; (backend, None, error or None) at its end.
ProgressEvent = tuple[str, dict[str, Any] | None, str | None]
ProgressQueue = asyncio.Queue[ProgressEvent]


@dataclass
class BackendReply:
    """One backend's answer: its status and body, or why there was none (``error``)."""

    backend: str
    status: int = 0
    body: bytes = b""
    error: str | None = None


def error_text(body: bytes) -> str | None:
    """The message of an Ollama error body (``{"error": "..."}``), or the text itself."""
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return body.decode("utf-8", "replace").strip()[:200] or None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):  # the OpenAI shape
            error = error.get("message")
        return str(error) if error is not None else None
    return None


async def call_backend(
    fleet: Fleet,
    b: BackendState,
    method: str,
    path: str,
    body: bytes | IO[bytes] | None,
    *,
    timeout: float | None = None,
) -> BackendReply:
    """Send one request to ``b`` and read the whole answer; any failure is in ``error``."""
    out = BackendReply(b.name)
    transport = fleet.transports.get(b.name)
    if transport is None:
        out.error = "no longer in the fleet"
        return out
    try:
        async with asyncio.timeout(timeout):
            resp = await transport.send(UpstreamRequest(method, path, body, JSON_HEADERS))
            try:
                out.status = resp.status
                out.body = await resp.read()
            finally:
                resp.close()
    except UpstreamConnectError as exc:
        out.error = f"unreachable: {exc}"
        return out
    except aiohttp.ClientError as exc:
        out.error = f"failed: {exc}"
        return out
    except TimeoutError:
        out.error = f"no answer within {timeout:g}s"
        return out
    if out.status >= 400:
        out.error = error_text(out.body) or f"HTTP {out.status}"
    return out


async def read_progress(
    fleet: Fleet,
    b: BackendState,
    path: str,
    payload: dict[str, Any],
    queue: ProgressQueue,
    *,
    idle_timeout: float | None = None,
) -> None:
    """Follow one backend's progress stream into ``queue``; end with (name, None, error).

    Progress is always asked for (``stream: true``), whatever the client wanted: the
    caller decides what it shows. An ``{"error": ...}`` line, a non-200 answer, a cut
    stream or a silence longer than ``idle_timeout`` ends the backend with that error.
    Its model list is re-read before the end is reported, so the caller's next answer
    (and the next request) already sees what the operation changed.
    """
    transport = fleet.transports.get(b.name)
    if transport is None:
        await queue.put((b.name, None, "no longer in the fleet"))
        return
    body = msgspec.json.encode({**payload, "stream": True})
    error: str | None = None
    try:
        async with asyncio.timeout(idle_timeout) as quiet:
            resp = await transport.send(UpstreamRequest("POST", path, body, JSON_HEADERS))
            try:
                if resp.status != 200:
                    error = error_text(await resp.read()) or f"HTTP {resp.status}"
                else:
                    buf = b""
                    async for chunk in resp.chunks():
                        if idle_timeout is not None:
                            quiet.reschedule(asyncio.get_running_loop().time() + idle_timeout)
                        buf += chunk
                        *complete, buf = buf.split(b"\n")
                        for raw in complete:
                            if raw.strip():
                                error = await _put_line(b.name, raw, queue) or error
                    if buf.strip():
                        error = await _put_line(b.name, buf, queue) or error
            finally:
                resp.close()
    except UpstreamConnectError as exc:
        await queue.put((b.name, None, f"unreachable: {exc}"))
        return
    except aiohttp.ClientError as exc:
        error = f"failed mid-stream: {exc}"
    except TimeoutError:
        error = f"no progress for {idle_timeout:g}s"
    await fleet.probe(b.name)
    await queue.put((b.name, None, error))


async def _put_line(name: str, raw: bytes, queue: ProgressQueue) -> str | None:
    try:
        line = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return "sent malformed progress"
    if not isinstance(line, dict):
        return "sent malformed progress"
    if "error" in line:
        return str(line["error"])
    await queue.put((name, line, None))
    return None
