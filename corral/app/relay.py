"""Route a request to a backend and relay its answer: failover, timeouts, streaming.

Failover happens only before the client has seen a byte: a connect error, a 5xx
(including Ollama's busy 503), a stall before the first chunk, or a backend that
turns out not to hold the model moves the request to the next candidate, with a
short backoff. Once streaming began, a failure ends the stream with an error in the
client's dialect, never a silent truncation. How the answer itself travels back
(whole or streamed, passed or translated, and its token counts) is
corral/app/answer.py.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import msgspec

from corral.adapters.dialects import openai as openai_dialect
from corral.adapters.ollama import decode_request
from corral.adapters.upstream import UpstreamConnectError, UpstreamRequest, UpstreamResponse
from corral.app.answer import (
    Retry,
    answer_whole,
    end_stream_with_error,
    relay_handled_stream,
    relay_planned_whole,
    relay_stream,
    relay_whole,
)
from corral.app.asgi import Watchdog
from corral.app.pipeline import RequestContext
from corral.app.plans import Plan, make_plan
from corral.app.routing import request_info
from corral.app.structured import SchemaRetry, schema_for
from corral.core.canonical import ChatRequest, CompletionRequest, EmbedRequest
from corral.core.errors import (
    BadRequest,
    CorralError,
    ModelNotFound,
    NoHealthyBackend,
    TooManyStreams,
    UpstreamError,
    UpstreamTimeout,
)
from corral.core.retry import (
    NO_RESPONSE,
    Verdict,
    classify,
    is_model_missing,
    retry_after_s,
)
from corral.core.scheduler import Ticket
from corral.core.types import Outcome, RequestInfo, RouteDecision

__all__ = ["parse_ollama", "parse_openai", "relay"]

log = logging.getLogger("corral.relay")

_FORWARD_HEADERS = {"content-type": "application/json"}
_JSON = b"application/json"


async def parse_openai(ctx: RequestContext) -> None:
    req: ChatRequest | CompletionRequest | EmbedRequest
    if ctx.endpoint == "/v1/chat/completions":
        req = openai_dialect.parse_chat(ctx.body)
    elif ctx.endpoint == "/v1/completions":
        req = openai_dialect.parse_completion(ctx.body)
    else:
        req = openai_dialect.parse_embed(ctx.body)
    ctx.parsed = req
    ctx.requested_model = req.model
    ctx.model = ctx.gw.fleet.models.resolve(req.model)
    ctx.stream = not isinstance(req, EmbedRequest) and req.stream


async def parse_ollama(ctx: RequestContext) -> None:
    req = decode_request(ctx.endpoint, ctx.body)
    ctx.parsed = req
    ctx.requested_model = req.model
    ctx.model = ctx.gw.fleet.models.resolve(req.model)
    if ctx.endpoint in ("/api/generate", "/api/chat"):
        ctx.stream = req.stream is not False  # Ollama streams unless told not to
    elif ctx.endpoint == "/api/show":
        ctx.uses_slot = False


async def relay(ctx: RequestContext) -> None:
    gw = ctx.gw
    fleet = gw.fleet
    retry = gw.settings.retry
    info = request_info(ctx)
    ctx.tenant = info.tenant
    tried: frozenset[str] = frozenset()
    last_error: CorralError | None = None
    refreshed = False
    woke = False  # a worker was started (or joined) for a model nothing held
    attempt = 0
    if ctx.stream and gw.open_streams >= gw.settings.limits.max_streams:
        raise TooManyStreams(
            f"{gw.open_streams} streams open, the limit is {gw.settings.limits.max_streams}",
            retry_after=1.0,
        )
    ctx.schema = schema_for(ctx)
    loop = asyncio.get_running_loop()
    retries = gw.retry_policy
    retries.on_request(loop.time())
    gone = False
    while attempt < retry.attempts:
        try:
            ticket, decision = await _bind(ctx, info, tried, attempt + 1)
        except ModelNotFound:
            if tried:
                raise last_error or ModelNotFound(ctx.requested_model) from None
            if not refreshed:
                # Maybe it was pulled since the last probe: look again, once.
                refreshed = True
                await fleet.refresh_models()
                continue
            if not woke and gw.workers is not None:
                # Nothing holds it: a worker may serve it (scale from zero).
                woke = True
                worker = await gw.workers.scaling.start_for(ctx.model)
                if worker is not None:
                    if worker.state != "ready":
                        raise NoHealthyBackend(
                            f"no backend holds model {ctx.requested_model!r}, and the worker "
                            f"started for it failed: {worker.error or worker.state}",
                            retry_after=gw.settings.queue.retry_after_s,
                        ) from None
                    continue
            raise ModelNotFound(ctx.requested_model) from None
        except NoHealthyBackend as exc:
            if last_error is not None:
                raise last_error from None
            if exc.retry_after is None:
                exc.retry_after = gw.settings.queue.retry_after_s
            raise
        attempt += 1
        ctx.attempts = attempt
        ctx.decision = decision
        ctx.ticket = ticket
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "request %s %s %s -> %s (attempt %d, %s)",
                ctx.request_id,
                ctx.endpoint,
                ctx.model,
                decision.backend,
                attempt,
                decision.reason,
            )
        outcome = _FAILED
        dispatched = loop.time()
        try:
            await _attempt(ctx, decision)
            outcome = _outcome(ctx, loop.time() - dispatched)
            return
        except SchemaRetry as exc:
            # One more try for an answer that missed its schema; not a backend failure.
            outcome = _outcome(ctx, loop.time() - dispatched)
            ctx.schema_retried = True
            log.info("request %s: answer missed its schema (%s); retrying", ctx.request_id, exc)
            continue
        except Retry as exc:
            last_error = exc.error
            gone = exc.gone or exc.forget_model
            tried = tried | {decision.backend}
            outcome = Outcome(
                ok=False,
                transient=not exc.forget_model,
                status=exc.status,
                duration_s=loop.time() - dispatched,
            )
            if exc.forget_model:
                fleet.forget_model(decision.backend, ctx.model)
            log.info(
                "request %s: backend %s failed (%s), attempt %d of %d",
                ctx.request_id,
                decision.backend,
                exc.error.message,
                attempt,
                retry.attempts,
            )
        except CorralError as exc:
            if exc.status < 500:
                # The client's mistake (a field the translation or the backend refused):
                # permanent, not the backend failing, so no breaker counts it.
                outcome = Outcome(
                    ok=False,
                    transient=False,
                    status=exc.status,
                    duration_s=loop.time() - dispatched,
                )
            raise
        except BaseException:
            if ctx.client_gone:
                # The client left: not the backend's fault.
                outcome = _outcome(ctx, loop.time() - dispatched)
            raise
        finally:
            if ticket is not None:
                fleet.release(ticket, outcome)
        if attempt < retry.attempts:
            again = retries.decide(
                Verdict(True, last_error.message if last_error else "failed"),
                attempt,
                loop.time(),
                backend_gone=gone,
            )
            if not again.retry:
                log.warning("request %s: %s", ctx.request_id, again.reason)
                break
            await asyncio.sleep(again.delay_s)
    assert last_error is not None
    raise last_error


async def _bind(
    ctx: RequestContext, info: RequestInfo, tried: frozenset[str], attempt: int
) -> tuple[Ticket | None, RouteDecision]:
    fleet = ctx.gw.fleet
    if ctx.uses_slot:
        ticket = await fleet.acquire(info, tried, attempt)
        assert ticket.decision is not None
        return ticket, ticket.decision
    # Metadata calls (show) take no slot: any healthy holder answers.
    holders = fleet.scheduler.holders(info.model)
    if not holders:
        raise ModelNotFound(info.model)
    for b in holders:
        if b.routable and b.name not in tried:
            return None, RouteDecision(
                b.name, "any", "metadata call, first healthy holder", attempt
            )
    raise NoHealthyBackend(f"no healthy backend for model {info.model!r}")


_FAILED = Outcome(ok=False, status=NO_RESPONSE)  # failed mid-stream: the backend's fault


def _outcome(ctx: RequestContext, duration_s: float) -> Outcome:
    """What the scheduler learns from an attempt that got an answer."""
    return Outcome(
        ok=True,
        ttft_s=ctx.ttfb,
        duration_s=duration_s,
        load_s=ctx.load_duration_s,
        prompt_tokens=ctx.prompt_tokens or 0,
        output_tokens=ctx.completion_tokens or 0,
        status=ctx.status or 200,
    )


async def _attempt(ctx: RequestContext, decision: RouteDecision) -> None:
    gw = ctx.gw
    timeouts = gw.settings.timeouts
    transport = gw.fleet.transports[decision.backend]
    state = gw.fleet.backends[decision.backend]
    parsed = ctx.parsed
    if (
        state.kind == "ollama"
        and isinstance(parsed, ChatRequest)
        and any(m.image_urls for m in parsed.messages)
    ):
        # Ollama takes image bytes only: fetch the URLs (once, SSRF-guarded).
        await gw.images.fetch_all(parsed.messages)
    upstream_model = gw.fleet.upstream_name(decision.backend, ctx.model)
    ctx.usage_source = None  # counts (and a job to count them) are this attempt's alone
    ctx.count_job = None
    usage = gw.settings.usage
    keep = (
        usage.tokenize_max_bytes
        if usage.tokenize and state.kind == "openai" and gw.counter.may_count(decision.backend)
        else 0
    )
    plan = make_plan(
        ctx,
        state.kind,
        upstream_model,
        # .get: the backend may have been removed while the images were fetched.
        gw.fleet.tag_entries.get(decision.backend, {}).get(ctx.model),
        keep=keep,
    )
    if plan.mode == "local":
        await answer_whole(ctx, 200, _JSON, plan.body)
        return
    if plan.dropped and log.isEnabledFor(logging.INFO):
        log.info(
            "request %s: %s cannot carry %s; dropped",
            ctx.request_id,
            decision.backend,
            ", ".join(plan.dropped),
        )
    request = UpstreamRequest(
        "POST",
        plan.path,
        plan.body,
        {**_FORWARD_HEADERS, "X-Request-Id": ctx.request_id},
    )
    first_byte = timeouts.first_byte_s
    if state.is_loaded(ctx.model, asyncio.get_running_loop().time()):
        # Nothing to load: a backend this slow to answer is hung; try another.
        first_byte = min(first_byte, timeouts.first_byte_loaded_s)
    watchdog = Watchdog(first_byte, timeouts.request_s)
    resp: UpstreamResponse | None = None
    try:
        try:
            resp = await transport.send(request)
        except UpstreamConnectError as exc:
            if exc.backend_down:
                gw.fleet.report_unreachable(decision.backend, str(exc))
            raise Retry(
                UpstreamError(f"backend {decision.backend} unreachable: {exc}"), gone=True
            ) from None
        if resp.status != 200:
            await _upstream_failed(ctx, decision, resp, plan)
        elif plan.mode == "ollama-pass":
            if ctx.stream:
                await relay_stream(ctx, resp, watchdog)
            else:
                await relay_whole(ctx, resp, watchdog)
        elif ctx.stream and plan.streams:
            await relay_handled_stream(ctx, resp, watchdog, plan, plan.stream())
        else:
            await relay_planned_whole(ctx, resp, watchdog, plan)
    except asyncio.CancelledError:
        if watchdog.fired is None or ctx.client_gone:
            raise
        asyncio.current_task().uncancel()  # type: ignore[union-attr]
        if ctx.response_started:
            await end_stream_with_error(
                ctx, f"backend {decision.backend} stalled ({watchdog.fired} timeout)"
            )
            return
        raise Retry(UpstreamTimeout(f"backend {decision.backend} did not answer in time")) from None
    except (aiohttp.ClientError, OSError) as exc:
        if ctx.response_started:
            await end_stream_with_error(ctx, f"backend {decision.backend} failed mid-stream: {exc}")
            return
        dropped = isinstance(exc, aiohttp.ServerDisconnectedError | ConnectionResetError)
        raise Retry(
            UpstreamError(f"backend {decision.backend} failed: {exc}"), gone=dropped
        ) from None
    finally:
        watchdog.stop()
        if resp is not None:
            resp.close()


async def _upstream_failed(
    ctx: RequestContext, decision: RouteDecision, resp: UpstreamResponse, plan: Plan
) -> None:
    """A non-200 answer: retry elsewhere when another backend may do better, else relay it."""
    body = await resp.read()
    message = _error_text(body) or f"HTTP {resp.status}"
    if is_model_missing(resp.status, message):
        # Its model list was stale; another holder may still serve it.
        raise Retry(ModelNotFound(ctx.requested_model), forget_model=True, status=resp.status)
    verdict = classify(resp.status, "http")
    if verdict.transient:
        retry_after = retry_after_s(resp.header("Retry-After"))
        if resp.status == 503:
            # Busy (Ollama's full queue, an overloaded engine): keep traffic away for a
            # moment instead of rewarding a fast 503 with more requests.
            ctx.gw.fleet.cool_down(
                decision.backend, ctx.model, retry_after or 1.0, f"busy: {message}"
            )
        raise Retry(
            UpstreamError(
                f"backend {decision.backend}: {message}",
                status=resp.status,
                retry_after=retry_after or (1.0 if resp.status == 503 else None),
            ),
            status=resp.status,
        )
    if plan.translating:
        # The client's own mistake, said again in the client's dialect (as a request
        # error: OpenAI's clients tell those from server errors by the type).
        raise BadRequest(message, status=resp.status)
    # Any other 4xx is the client's problem: relay it as the backend said it.
    ctx.error = message
    await answer_whole(ctx, resp.status, resp.content_type.encode(), body)


def _error_text(body: bytes) -> str | None:
    try:
        data = msgspec.json.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return body[:200].decode("utf-8", "replace").strip() or None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            err = err.get("message")
        if isinstance(err, str):
            return err
    return None
