"""A backend's answer on its way to the client: whole or streamed, passed through or
translated by the plan, with the token counts it carried, or an estimate (and a job
for the backend's tokenizer, see corral/app/counting.py) when it carried none.

Streams: headers go out with the first chunk, so a backend that fails before it can
still be failed over (`Retry`). After it, every chunk is handled where it arrives:
with a plain-http backend and uvicorn's own ``send`` the chunk is written to the
client from the upstream protocol's callback (`RawResponse.pipe`, `direct_body`),
with no task wake-up, ASGI message or await per chunk; otherwise it is pulled and
sent one awaited ``send`` at a time. Either way the same per-chunk work runs
(`_Passed`, `_Handled`): forward or translate, touch the watchdog, meter the tenant's
share.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import msgspec

from corral.adapters.ollama import Final, read_final
from corral.adapters.upstream import UpstreamResponse
from corral.app.asgi import Send, Watchdog, corked, direct_body
from corral.app.counting import CountJob
from corral.app.pipeline import RequestContext
from corral.app.plans import Plan, StreamHandler, prompt_chars
from corral.app.structured import DONE, SchemaTap, judge_whole
from corral.core.canonical import Usage
from corral.core.errors import CorralError, UpstreamError
from corral.core.limits import Admission
from corral.core.retry import NO_RESPONSE

__all__ = [
    "Retry",
    "answer_whole",
    "end_stream_with_error",
    "relay_handled_stream",
    "relay_planned_whole",
    "relay_stream",
    "relay_whole",
    "start_response",
]

_NDJSON = b"application/x-ndjson"
_JSON = b"application/json"


class Retry(Exception):
    """This attempt failed before the client saw anything; try another backend."""

    def __init__(
        self,
        error: CorralError,
        *,
        forget_model: bool = False,
        status: int = NO_RESPONSE,
        gone: bool = False,
    ) -> None:
        self.error = error
        self.forget_model = forget_model
        self.status = status  # what the backend answered; NO_RESPONSE when nothing came
        # Refused or dropped the connection: the backend is down, the work was lost.
        self.gone = gone


class _Meter:
    """Charges a stream's output tokens as they arrive: to its tenant's fair share and,
    when the request counts against limits, to its key's tokens per minute and its
    user's budget.

    One line (NDJSON) or event (SSE: two newlines) is about one token; the charges go
    out in batches of 16, and the counts the backend reports at the end settle the
    difference. `close` counts the last, unbatched tokens of a stream that ended or
    was abandoned, so the settlement (and an estimate) knows everything that was
    streamed (``ctx.streamed_tokens``).
    """

    __slots__ = (
        "_admission",
        "_batch",
        "_ctx",
        "_fleet",
        "_limiter",
        "_pending",
        "_per_token",
        "_ticket",
    )

    BATCH = 16

    def __init__(self, ctx: RequestContext, newlines_per_token: int) -> None:
        self._ctx = ctx
        self._fleet = ctx.gw.fleet
        self._ticket = ctx.ticket
        admission = ctx.admission
        self._admission = admission if isinstance(admission, Admission) else None
        self._limiter = ctx.gw.auth.limits
        self._per_token = newlines_per_token
        self._batch = newlines_per_token * self.BATCH  # newlines that make one charge
        self._pending = 0

    def add(self, chunk: bytes) -> None:
        self._pending += chunk.count(b"\n")
        if self._pending >= self._batch:
            tokens = self._pending // self._per_token
            self._pending -= tokens * self._per_token
            self._ctx.streamed_tokens += tokens
            if self._ticket is not None:
                self._fleet.charge(self._ticket, tokens)
            if self._admission is not None:
                self._limiter.charge(self._admission, tokens)

    def close(self) -> None:
        self._ctx.streamed_tokens += self._pending // self._per_token
        self._pending = 0


async def start_response(ctx: RequestContext, status: int, content_type: bytes) -> None:
    """The head of a streamed answer (its length unknown: uvicorn frames it chunked)."""
    headers = [(b"content-type", content_type), *ctx.id_headers(), *ctx.extra_headers]
    ctx.response_started = True
    await ctx.send({"type": "http.response.start", "status": status, "headers": headers})


async def answer_whole(ctx: RequestContext, status: int, content_type: bytes, body: bytes) -> None:
    """A whole answer with the request's id headers: head and body in one write."""
    ctx.status = status
    await ctx.respond(status, body, content_type, [*ctx.id_headers(), *ctx.extra_headers])


async def relay_whole(ctx: RequestContext, resp: UpstreamResponse, watchdog: Watchdog) -> None:
    """A non-streamed answer is read whole first, so a failure can still fail over."""
    body = await resp.read()
    final = read_final(body)
    if final is None:
        raise Retry(UpstreamError("backend sent malformed JSON"))
    _account(ctx, final)
    if ctx.usage_source is None:  # an answer without counts
        _account_usage(ctx, _estimate(ctx, final.text_chars() // 4))
    watchdog.touch()
    ctx.ttfb = watchdog.last - watchdog.started
    if ctx.schema is not None:
        judge_whole(ctx, body)
    await answer_whole(ctx, 200, resp.content_type.encode(), body)


async def relay_stream(ctx: RequestContext, resp: UpstreamResponse, watchdog: Watchdog) -> None:
    """Forward chunks untouched as they arrive; read only the tail for the final counts."""
    gw = ctx.gw
    chunks = resp.chunks()
    send = ctx.send
    # Headers go out with the first chunk, so a backend that dies before it can
    # still be failed over.
    first = await anext(chunks, b"")
    if not first:
        raise Retry(UpstreamError("backend closed the stream before the first chunk"))
    watchdog.touch()
    watchdog.set_idle(gw.settings.timeouts.stream_idle_s)
    ctx.ttfb = watchdog.last - watchdog.started
    ctx.status = 200
    tap = SchemaTap(ctx) if ctx.schema is not None else None
    meter = _Meter(ctx, 1)

    def closing() -> None:
        meter.close()
        if ctx.usage_source is None:  # no counts: cut short, or the backend gave none
            _account_usage(ctx, _estimate(ctx, ctx.streamed_tokens))

    ctx.closing = closing
    gw.open_streams += 1
    try:
        with corked(send):  # the head and the first chunk leave in one write
            await start_response(ctx, 200, resp.content_type.encode() or _NDJSON)
            await send({"type": "http.response.body", "body": first, "more_body": True})
        out = _Out(send)  # after the cork: its direct writes go to the real transport
        relayed = _Passed(watchdog, out.write, tap, meter, first)
        meter.add(first)
        if tap is not None:
            tap.feed(first)
        await out.pump(resp, chunks, relayed.feed)
        final = read_final(relayed.prev + relayed.last)
        if final is None or not (final.done or final.error):
            await end_stream_with_error(ctx, "backend ended the stream before it was done")
            return
        _account(ctx, final)
        if tap is not None and (problem := tap.problem()) is not None:
            await end_stream_with_error(ctx, problem)
            return
        await ctx.finish()
    finally:
        gw.open_streams -= 1


class _Out:
    """Where a stream's pieces go after its first: straight onto uvicorn's transport from
    the upstream protocol's callback when both ends allow it (`RawResponse.pipe`,
    `direct_body`), else one awaited ASGI ``send`` per piece read."""

    __slots__ = ("_body", "_pending", "_send", "write")

    def __init__(self, send: Send) -> None:
        self._send = send
        self._body = direct_body(send)
        self._pending: list[bytes] = []
        self.write: Callable[[bytes], bool] = (
            self._body.write if self._body is not None else self._collect
        )

    def _collect(self, data: bytes) -> bool:
        self._pending.append(data)
        return True

    async def pump(
        self,
        resp: UpstreamResponse,
        chunks: AsyncIterator[bytes],
        feed: Callable[[bytes], bool],
        stop: Callable[[], bool] = lambda: False,
    ) -> None:
        """Run ``feed`` over the rest of the body, until it ends or ``stop()`` says so
        after ``feed`` returned False."""
        body = self._body
        pipe = getattr(resp, "pipe", None)
        if body is not None and pipe is not None:
            while not await pipe(feed):
                if stop():
                    return
                await body.drain()
            return
        pending = self._pending
        send = self._send
        async for chunk in chunks:
            more = feed(chunk)
            if pending:
                data = pending[0] if len(pending) == 1 else b"".join(pending)
                pending.clear()
                await send({"type": "http.response.body", "body": data, "more_body": True})
            if not more:
                if stop():
                    return
                if body is not None:
                    await body.drain()


class _Passed:
    """The work on each chunk of an Ollama pass-through stream, wherever it runs:
    forward it, keep the watchdog and the fair share up to date, keep the tail (the last
    line carries the counts)."""

    __slots__ = ("_clock", "_meter", "_tap", "_watchdog", "_write", "last", "prev")

    def __init__(
        self,
        watchdog: Watchdog,
        write: Callable[[bytes], bool],
        tap: SchemaTap | None,
        meter: _Meter,
        first: bytes,
    ) -> None:
        self._clock = asyncio.get_running_loop().time
        self._watchdog = watchdog
        self._write = write
        self._meter = meter
        self._tap = tap
        self.prev = b""
        self.last = first

    def feed(self, chunk: bytes) -> bool:
        self._watchdog.last = self._clock()
        more = self._write(chunk)
        self._meter.add(chunk)
        if self._tap is not None:
            self._tap.feed(chunk)
        self.prev = self.last
        self.last = chunk
        return more


async def relay_planned_whole(
    ctx: RequestContext, resp: UpstreamResponse, watchdog: Watchdog, plan: Plan
) -> None:
    """A whole answer passed or translated by the plan (which also reads its usage)."""
    data = await resp.read()
    try:
        body = plan.whole(data)
    except (CorralError, msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise Retry(UpstreamError(f"backend sent an answer Corral cannot read: {exc}")) from None
    _account_usage(ctx, plan.usage or plan.estimate())
    text = plan.answer_text
    _count_later(ctx, plan, lambda: text)
    watchdog.touch()
    ctx.ttfb = watchdog.last - watchdog.started
    if ctx.schema is not None:
        judge_whole(ctx, body)
    await answer_whole(ctx, 200, _JSON, body)


async def relay_handled_stream(
    ctx: RequestContext,
    resp: UpstreamResponse,
    watchdog: Watchdog,
    plan: Plan,
    handler: StreamHandler,
) -> None:
    """A stream passed event by event or translated chunk by chunk by ``handler``."""
    gw = ctx.gw
    chunks = resp.chunks()
    send = ctx.send
    out = b""
    meter = _Meter(ctx, 2 if "event-stream" in resp.content_type else 1)
    async for chunk in chunks:  # hold the headers until there is something to send
        meter.add(chunk)
        out = handler.feed(chunk)
        if out:
            break
    if not out:
        out = handler.close()
        if not out:
            raise Retry(UpstreamError("backend closed the stream before the first chunk"))
    watchdog.touch()
    watchdog.set_idle(gw.settings.timeouts.stream_idle_s)
    ctx.ttfb = watchdog.last - watchdog.started
    ctx.status = 200
    tap = SchemaTap(ctx) if ctx.schema is not None else None

    def closing() -> None:
        meter.close()
        if ctx.usage_source is None:  # cut short: the client left, the backend died or stalled
            _account_usage(ctx, handler.usage or plan.estimate(handler))
        _count_later(ctx, plan, handler.answer_text)

    ctx.closing = closing
    gw.open_streams += 1
    try:
        if tap is not None:
            out = tap.feed(out)
        with corked(send):  # the head and the first piece leave in one write
            await start_response(ctx, 200, handler.content_type)
            await send({"type": "http.response.body", "body": out, "more_body": True})
        sink = _Out(send)  # after the cork: its direct writes go to the real transport
        handled = _Handled(watchdog, sink.write, handler, tap, meter)
        await sink.pump(resp, chunks, handled.feed, handled.stopped)
        out = handler.close()
        if tap is not None:
            out = tap.feed(out)
        if out:
            await send({"type": "http.response.body", "body": out, "more_body": True})
        _account_usage(ctx, handler.usage or plan.estimate(handler))
        if handler.error is not None:
            ctx.error = handler.error
        if not handler.finished:
            await end_stream_with_error(ctx, "backend ended the stream before it was done")
            return
        if tap is not None:
            if (problem := tap.problem()) is not None:
                await end_stream_with_error(ctx, problem)
                return
            if tap.held_done:
                await send({"type": "http.response.body", "body": DONE, "more_body": True})
        await ctx.finish()
    finally:
        gw.open_streams -= 1


class _Handled:
    """The work on each chunk of a stream the plan's handler passes or translates."""

    __slots__ = ("_clock", "_handler", "_meter", "_tap", "_watchdog", "_write")

    def __init__(
        self,
        watchdog: Watchdog,
        write: Callable[[bytes], bool],
        handler: StreamHandler,
        tap: SchemaTap | None,
        meter: _Meter,
    ) -> None:
        self._clock = asyncio.get_running_loop().time
        self._watchdog = watchdog
        self._write = write
        self._handler = handler
        self._tap = tap
        self._meter = meter

    def feed(self, chunk: bytes) -> bool:
        self._watchdog.last = self._clock()
        self._meter.add(chunk)
        out = self._handler.feed(chunk)
        if self._tap is not None:
            out = self._tap.feed(out)
        more = self._write(out) if out else True
        # An error ends the client's stream: stop reading.
        return more and self._handler.error is None

    def stopped(self) -> bool:
        return self._handler.error is not None


def _account_usage(ctx: RequestContext, usage: Usage) -> None:
    ctx.prompt_tokens = usage.prompt_tokens
    ctx.completion_tokens = usage.completion_tokens
    ctx.usage_estimated = usage.estimated
    ctx.usage_source = "estimated" if usage.estimated else "reported"


def _estimate(ctx: RequestContext, answer_tokens: int) -> Usage:
    """Counts guessed for an Ollama answer that came without them."""
    return Usage(max(1, prompt_chars(ctx.parsed) // 4), answer_tokens, estimated=True)


def _count_later(ctx: RequestContext, plan: Plan, answer: Callable[[], str | None]) -> None:
    """Leave a job for the backend's tokenizer when the counts are an estimate it may
    replace (the pipeline hands it to the gateway's counter once the record is written)."""
    if ctx.usage_estimated and plan.keep and ctx.decision is not None:
        ctx.count_job = CountJob(ctx.decision.backend, plan.model, plan.path, plan.body, answer)


def _account(ctx: RequestContext, final: Final) -> None:
    ctx.prompt_tokens = final.prompt_eval_count
    ctx.completion_tokens = final.eval_count
    if final.prompt_eval_count is not None or final.eval_count is not None:
        ctx.usage_source = "reported"
    if final.load_duration is not None:
        ctx.load_duration_s = final.load_duration / 1e9
    if final.error:
        ctx.error = final.error


async def end_stream_with_error(ctx: RequestContext, message: str) -> None:
    """End a stream that already began with an error the client's dialect can read."""
    ctx.error = message
    if ctx.dialect == "openai":
        error = {"message": message, "type": "server_error", "param": None, "code": None}
        line = b"data: " + msgspec.json.encode({"error": error}) + b"\n\ndata: [DONE]\n\n"
    else:
        line = msgspec.json.encode({"error": message}) + b"\n"
    await ctx.finish(line)
