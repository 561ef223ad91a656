"""Model management across the fleet: pull, push, create, copy, delete and blobs.

Without an ``X-Corral-Backend`` header these go to every healthy Ollama backend; with
it, to the one named (by name or URL). Progress streams (pull, push, create) from all
targets are merged into one NDJSON stream: per-layer progress is summed across
backends, each other status is shown once, and the last line is ``success`` only if
every backend succeeded — otherwise an ``error`` line names the ones that failed.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from typing import IO

import msgspec

from corral.app.asgi import JSON, ClientGone
from corral.app.backend_calls import (
    BackendReply,
    ProgressQueue,
    call_backend,
    error_text,
    read_progress,
)
from corral.app.pipeline import RequestContext
from corral.core.errors import (
    BadRequest,
    CorralError,
    InvalidField,
    NotFound,
    Unavailable,
    UpstreamError,
)
from corral.core.types import BackendState

__all__ = [
    "blob_exists",
    "blob_upload",
    "fan_out",
    "merged_progress",
    "parse_manage",
    "spool_blob",
]

_STREAMING = {"/api/pull", "/api/push", "/api/create"}


def targets(ctx: RequestContext) -> list[BackendState]:
    fleet = ctx.gw.fleet
    for name, value in ctx.scope["headers"]:
        if name == b"x-corral-backend":
            key = value.decode("latin-1").strip()
            state = fleet.find(key)
            if state is None:
                raise NotFound(f"no backend named {key!r}", param="X-Corral-Backend")
            if state.kind != "ollama":
                raise BadRequest(f"backend {key!r} is not an Ollama server")
            return [state]
    found = fleet.routable("ollama")
    if not found:
        raise Unavailable("no healthy Ollama backend to manage models on", retry_after=5)
    return found


async def parse_manage(ctx: RequestContext) -> None:
    if not ctx.body.strip():
        raise BadRequest("missing request body")
    try:
        data = msgspec.json.decode(ctx.body)
    except msgspec.DecodeError as exc:
        raise BadRequest(f"invalid JSON in request body: {exc}") from None
    except RecursionError:  # msgspec's depth guard: [[[[...]]]] thousands deep
        raise BadRequest("invalid JSON in request body: nested too deeply") from None
    if not isinstance(data, dict):
        raise BadRequest("request body must be a JSON object")
    if ctx.endpoint == "/api/copy":
        for key in ("source", "destination"):
            if not isinstance(data.get(key), str) or not data[key]:
                raise BadRequest(f"{key} is required", param=key)
        ctx.model = data["source"]
    else:
        model = data.get("model") or data.get("name")
        if model is not None and not isinstance(model, str):
            raise InvalidField("model must be a string", param="model")
        if not model:
            raise BadRequest("model is required", param="model")
        ctx.model = model
    for flag in ("stream", "insecure"):
        # As Ollama's own decoder would: "yes" is not a boolean.
        if data.get(flag) is not None and not isinstance(data[flag], bool):
            raise InvalidField(f"{flag} must be true or false", param=flag)
    ctx.stream = ctx.endpoint in _STREAMING and data.get("stream") is not False
    ctx.parsed = data


async def _call(
    ctx: RequestContext, b: BackendState, method: str, body: bytes | IO[bytes] | None
) -> BackendReply:
    return await call_backend(ctx.gw.fleet, b, method, ctx.scope["path"], body)


def _names_header(states: list[BackendState]) -> list[tuple[bytes, bytes]]:
    return [(b"x-corral-backend", ",".join(b.name for b in states).encode())]


def _headers(ctx: RequestContext, states: list[BackendState]) -> list[tuple[bytes, bytes]]:
    return [(b"x-corral-request-id", ctx.request_id.encode()), *_names_header(states)]


async def fan_out(ctx: RequestContext) -> None:
    """copy and delete: one answer from all targets."""
    chosen = targets(ctx)
    method = ctx.scope["method"]
    outcomes = await asyncio.gather(*(_call(ctx, b, method, ctx.body) for b in chosen))
    await ctx.gw.fleet.probe_all(b.name for b in chosen)
    ok = [o for o in outcomes if o.error is None]
    missing = [o for o in outcomes if o.status == 404]
    failed = [o for o in outcomes if o.error is not None and o.status != 404]
    headers = _headers(ctx, chosen)
    if failed:
        detail = "; ".join(f"{o.backend}: {o.error}" for o in failed)
        status = failed[0].status if failed[0].status >= 400 else 502
        raise UpstreamError(f"{ctx.endpoint} failed on {detail}", status=status)
    if not ok:
        raise NotFound(error_text(missing[0].body) or f'model "{ctx.model}" not found')
    ctx.status = 200
    await ctx.respond(200, b"", headers=headers)


async def merged_progress(ctx: RequestContext) -> None:
    """pull, push and create: one merged progress stream, or one final answer."""
    chosen = targets(ctx)
    queue: ProgressQueue = asyncio.Queue()
    idle = ctx.gw.settings.timeouts.stream_idle_s
    refused: dict[str, int] = {}
    tasks = [
        asyncio.create_task(
            read_progress(
                ctx.gw.fleet,
                b,
                ctx.endpoint,
                ctx.parsed,
                queue,
                idle_timeout=idle,
                refused=refused,
            )
        )
        for b in chosen
    ]
    headers = _headers(ctx, chosen)
    try:
        lines = _merge(queue, [b.name for b in chosen])
        if ctx.stream:
            ctx.response_started = True
            ctx.status = 200
            await ctx.send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"application/x-ndjson"), *headers],
                }
            )
            async for line in lines:
                await ctx.send({"type": "http.response.body", "body": line, "more_body": True})
            await ctx.finish()
            return
        last = b""
        async for line in lines:
            last = line
        final = msgspec.json.decode(last)
        if "error" in final:
            ctx.error = final["error"]
            ctx.status = _failed_status(refused, len(chosen))
        else:
            ctx.status = 200
        await ctx.respond(ctx.status, last.rstrip(b"\n"), headers=headers)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _failed_status(refused: dict[str, int], targets: int) -> int:
    """The status of a failed non-streamed pull, push or create: the backends' own 4xx
    when every one refused the request alike (the client's mistake, e.g. a create
    with neither from nor files), else 500, as Ollama answers a failed pull."""
    codes = set(refused.values())
    if len(refused) == targets and len(codes) == 1 and 400 <= (code := codes.pop()) < 500:
        return code
    return 500


async def _merge(queue: ProgressQueue, names: list[str]) -> AsyncIterator[bytes]:
    pending = set(names)
    failures: dict[str, str] = {}
    succeeded: set[str] = set()
    layers: dict[str, dict[str, tuple[int, int]]] = {}
    seen: set[str] = set()
    encode = msgspec.json.encode
    while pending:
        name, line, error = await queue.get()
        if line is None:
            pending.discard(name)
            if error is not None:
                failures[name] = error
            continue
        status = str(line.get("status", ""))
        digest = line.get("digest")
        if status == "success":
            succeeded.add(name)
        elif isinstance(digest, str) and "total" in line:
            per = layers.setdefault(digest, {})
            per[name] = (int(line.get("total") or 0), int(line.get("completed") or 0))
            total = sum(t for t, _ in per.values())
            done = sum(c for _, c in per.values())
            yield (
                encode({"status": status, "digest": digest, "total": total, "completed": done})
                + b"\n"
            )
        elif status and status not in seen:
            seen.add(status)
            yield encode(line) + b"\n"
    for name in names:
        if name not in succeeded and name not in failures:
            failures[name] = "ended without success"
    if failures:
        detail = "; ".join(f"{n}: {e}" for n, e in sorted(failures.items()))
        yield (
            encode({"error": f"failed on {len(failures)} of {len(names)} backends: {detail}"})
            + b"\n"
        )
    else:
        yield b'{"status":"success"}\n'


# -- blobs --------------------------------------------------------------------------


async def blob_exists(ctx: RequestContext) -> None:
    chosen = targets(ctx)
    outcomes = await asyncio.gather(*(_call(ctx, b, "HEAD", None) for b in chosen))
    status = 200 if all(o.status == 200 for o in outcomes) else 404
    ctx.status = status
    ctx.response_started = True
    await ctx.send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": _headers(ctx, chosen),
        }
    )
    await ctx.finish()


async def spool_blob(ctx: RequestContext) -> None:
    """Read an uploaded blob to a temporary file, checking its digest on the way."""
    digest = ctx.scope["path"].rsplit("/", 1)[-1]
    if not digest.startswith("sha256:") or len(digest) != 71:
        raise BadRequest(f"invalid digest {digest!r}: expected sha256:<64 hex digits>")
    hasher = hashlib.sha256()
    fd, path = tempfile.mkstemp(prefix="corral-blob-")
    ctx.parsed = path
    with os.fdopen(fd, "wb") as out:
        while True:
            message = await ctx.receive()
            if message["type"] == "http.disconnect":
                os.unlink(path)
                raise ClientGone
            chunk = message.get("body", b"")
            hasher.update(chunk)
            out.write(chunk)
            if not message.get("more_body", False):
                break
    got = "sha256:" + hasher.hexdigest()
    if got != digest:
        os.unlink(path)
        raise BadRequest(f'digest mismatch, expected "{digest}", got "{got}"')


async def blob_upload(ctx: RequestContext) -> None:
    path: str = ctx.parsed
    try:
        chosen = targets(ctx)
        outcomes = await asyncio.gather(*(_upload(ctx, b, path) for b in chosen))
    finally:
        os.unlink(path)
    failed = [o for o in outcomes if o.error is not None]
    if failed:
        detail = "; ".join(f"{o.backend}: {o.error}" for o in failed)
        raise CorralError(f"blob upload failed on {detail}", status=failed[0].status or 502)
    ctx.status = 201
    await ctx.respond(201, b"", JSON, headers=_headers(ctx, chosen))


async def _upload(ctx: RequestContext, b: BackendState, path: str) -> BackendReply:
    with open(path, "rb") as fh:  # noqa: ASYNC230 - a local temp file, read in pieces
        return await _call(ctx, b, "POST", fh)
