"""The request path, stage by stage.

An endpoint is an ordered tuple of stages over one ``RequestContext``; reading
``Pipeline.stage_names`` shows the whole flow of an endpoint in one place. A stage
either finishes the response itself or leaves it to a later stage; raising a
``CorralError`` rejects the request in the client's dialect. The request is settled
once, whatever happened: its ``on_end`` hook gives back its place under the limits and
charges its tokens, then its usage record is journaled (with ``audit.content`` on, the
request's audit line goes into the same journal line). A response settles just before
its last body message goes out (`RequestContext.finish`), so a client that has read a
whole answer always has its row, even if the process is killed the next instant;
anything that ends otherwise (a client gone, a bug) settles after the stages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from random import getrandbits as _randbits
from typing import TYPE_CHECKING, Any

from corral.app.asgi import (
    JSON,
    ClientGone,
    Message,
    Receive,
    Scope,
    Send,
    corked,
    error_headers,
    read_body,
    response_start,
    watch_client,
)
from corral.core.errors import CorralError
from corral.core.types import RouteDecision
from corral.core.usage import UsageRecord, UsageSource

if TYPE_CHECKING:
    from corral.adapters.store.keycache import Identity
    from corral.app.gateway import Gateway

__all__ = [
    "BODY_STAGES",
    "Pipeline",
    "RequestContext",
    "Stage",
    "read_request_body",
    "request_id",
]

log = logging.getLogger("corral.pipeline")


@dataclass(slots=True, eq=False)
class RequestContext:
    gw: Gateway
    scope: Scope
    receive: Receive
    send: Send
    endpoint: str
    dialect: str
    request_id: str
    started: float
    body: bytes = b""
    parsed: Any = None
    model: str = ""  # normalized (name:tag), for routing
    requested_model: str = ""  # as the client wrote it, for messages
    stream: bool = False
    uses_slot: bool = True
    decision: RouteDecision | None = None
    ticket: Any = None  # the scheduler's Ticket while a backend slot is held
    tenant: str = ""
    identity: Identity | None = None  # who the API key speaks for, when auth is on
    admission: Any = None  # the limits' Admission while the request counts against them
    on_end: Callable[[RequestContext], None] | None = None  # settles admission, always
    # A stream's last count of what it relayed (its usage when the backend gave none),
    # run by `settle` first, however the stream ended.
    closing: Callable[[], None] | None = None
    streamed_tokens: int = 0  # output tokens metered (and charged) while streaming
    attempts: int = 0
    response_started: bool = False
    status: int = 0
    ttfb: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    usage_estimated: bool = False
    usage_source: UsageSource | None = None
    # Set when the counts are an estimate the backend's tokenizer may replace (a CountJob).
    count_job: Any = None
    load_duration_s: float | None = None
    error: str | None = None
    schema: Any = None  # a SchemaCheck when the request asked for structured output
    schema_retried: bool = False
    client_gone: bool = False
    # Set just before the last body message: a disconnect seen after it is the normal
    # end of the exchange, not a client leaving.
    finished: bool = False
    extra_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    transcript: Any = None  # audit.content full: keeps the answer's text on its way out
    audit: Any = None  # the ContentAudit, when it covers this endpoint
    settled: bool = False  # on_end ran and the usage record is journaled

    async def finish(self, body: bytes = b"") -> None:
        """Send the response's last body message, settling the request just before it."""
        self.finished = True
        message: Message = {"type": "http.response.body", "body": body}
        send = self.send
        if self.transcript is not None:
            send = self.transcript.keep(message)  # the answer's text, then the raw send
        settle(self)
        await send(message)

    async def respond(
        self,
        status: int,
        body: bytes,
        content_type: bytes = JSON,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        """A whole response: its start, then `finish` with ``body``, in one write."""
        self.response_started = True
        with corked(self.send):
            await self.send(response_start(status, len(body), content_type, headers))
            await self.finish(body)

    def id_headers(self) -> list[tuple[bytes, bytes]]:
        """X-Corral-Request-Id and X-Corral-Backend ("none" when nothing was routed)."""
        headers = [(b"x-corral-request-id", self.request_id.encode())]
        if self.decision is not None:
            headers.append((b"x-corral-backend", self.decision.backend.encode()))
            headers.append((b"x-corral-route-reason", self.decision.reason.encode()))
        else:
            headers.append((b"x-corral-backend", b"none"))
        return headers


Stage = Callable[[RequestContext], Awaitable[None]]

# The stages that read the request body. Stages before one (authentication) run on
# the headers alone; the client is watched for departure once the body is read.
BODY_STAGES = frozenset(("read_request_body", "spool_blob"))


async def read_request_body(ctx: RequestContext) -> None:
    ctx.body = await read_body(ctx.scope, ctx.receive, ctx.gw.settings.limits.max_body_bytes)


class Pipeline:
    """An ASGI app running one endpoint's stages, with the client watched for departure."""

    def __init__(
        self, gw: Gateway, endpoint: str, stages: tuple[Stage, ...], dialect: str = "ollama"
    ) -> None:
        self.gw = gw
        self.endpoint = endpoint
        self.stages = stages
        self.dialect = dialect
        names = [s.__name__ for s in stages]
        self._unwatched = next(i for i, n in enumerate(names) if n in BODY_STAGES) + 1
        # The request audit, when on for this endpoint (None costs nothing per request).
        content = gw.content
        self._content = content if content is not None and content.covers(endpoint) else None
        self._transcribe = self._content is not None and self._content.full

    @property
    def stage_names(self) -> tuple[str, ...]:
        return tuple(s.__name__ for s in self.stages)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gw = self.gw
        rid = request_id(scope)
        ctx = RequestContext(
            gw, scope, receive, send, self.endpoint, self.dialect, rid, time.time()
        )
        if self._content is not None:
            ctx.audit = self._content
            if self._transcribe:
                self._content.transcribe(ctx)
        task = asyncio.current_task()
        assert task is not None
        unwatch: Callable[[], object] | None = None

        def gone() -> None:
            if not ctx.finished:
                ctx.client_gone = True
                task.cancel()

        try:
            stages = self.stages
            for stage in stages[: self._unwatched]:
                await stage(ctx)  # up to the body: the client is watched only once it is read
            unwatch = watch_client(receive, send, gone)
            for stage in stages[self._unwatched :]:
                await stage(ctx)
        except CorralError as exc:
            ctx.error = exc.message
            if not ctx.response_started:
                await _refuse(ctx, exc)
        except ClientGone:
            ctx.client_gone = True
        except Exception as exc:  # a bug: still answer in the client's dialect, and log it
            log.exception("request %s to %s failed", rid, self.endpoint)
            ctx.error = f"internal error: {type(exc).__name__}"
            if not ctx.response_started:
                await _refuse(ctx, CorralError(ctx.error))
        except asyncio.CancelledError:
            if not ctx.client_gone:
                raise
            # We cancelled ourselves because the client left: that is a normal end.
            task.uncancel()
            ctx.error = "client disconnected"
            ctx.status = 499
        finally:
            if unwatch is not None:
                unwatch()
            settle(ctx)


async def _refuse(ctx: RequestContext, error: CorralError) -> None:
    """Answer with ``error`` in the client's dialect (the response has not started)."""
    ctx.status = error.status
    headers = error_headers(error, ctx.id_headers())
    await ctx.respond(error.status, error.body(ctx.dialect), headers=headers)


def settle(ctx: RequestContext) -> None:
    """Once per request: give back its place under the limits, then journal its usage
    record (and audit line). Nothing here may raise: the record must not be lost."""
    if ctx.settled:
        return
    ctx.settled = True
    gw = ctx.gw
    closing, ctx.closing = ctx.closing, None  # it holds ctx: no cycle left behind
    if closing is not None:
        try:
            closing()
        except Exception:
            log.exception("counting the stream of request %s failed", ctx.request_id)
    if ctx.on_end is not None:
        try:
            ctx.on_end(ctx)
        except Exception:  # never lose the usage record over it
            log.exception("ending request %s failed", ctx.request_id)
    content = None
    if ctx.audit is not None:
        try:
            content = ctx.audit.line(ctx)
        except Exception:  # the usage row goes in without it
            log.exception("auditing request %s failed", ctx.request_id)
    with contextlib.suppress(Exception):
        record = _usage(ctx)
        gw.record(record, content)
        if ctx.count_job is not None:
            gw.counter.submit(record, ctx.count_job)  # amends the record later


def request_id(scope: Scope) -> str:
    """The client's X-Request-Id when it sent a sane one, else a fresh random id."""
    for name, value in scope["headers"]:
        if name == b"x-request-id" and 0 < len(value) <= 128:
            return str(value.decode("latin-1"))
    # 64 random bits from the process's generator (seeded from the OS at start, and
    # again in a forked child): no system call per request, unlike os.urandom.
    return f"{_randbits(64):016x}"


def _usage(ctx: RequestContext) -> UsageRecord:
    return UsageRecord(
        request_id=ctx.request_id,
        endpoint=ctx.endpoint,
        dialect=ctx.dialect,
        model=ctx.model,
        backend=ctx.decision.backend if ctx.decision else None,
        status=ctx.status,
        started_at=ctx.started,
        duration_s=time.time() - ctx.started,
        ttfb_s=ctx.ttfb,
        stream=ctx.stream,
        prompt_tokens=ctx.prompt_tokens,
        completion_tokens=ctx.completion_tokens,
        usage_estimated=ctx.usage_estimated,
        usage_source=ctx.usage_source,
        load_duration_s=ctx.load_duration_s,
        attempts=ctx.attempts,
        error=ctx.error,
        client_gone=ctx.client_gone,
        tenant=ctx.tenant,
        user=ctx.identity.user if ctx.identity else None,
        key_prefix=ctx.identity.prefix if ctx.identity else None,
        route_reason=ctx.decision.reason if ctx.decision else None,
        queued_s=ctx.decision.queued_s if ctx.decision else 0.0,
    )
