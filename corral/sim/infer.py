"""Ollama's text endpoints, ``/api/generate`` and ``/api/chat``, for a simulated node.

Like Ollama, a stream's headers go out with its first chunk,
so an error found before that (404, 503) is a real HTTP status, and one after it is an
NDJSON ``{"error": ...}`` line under the 200 already sent.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web

from corral.sim import text
from corral.sim.faults import RUNNER_CRASH
from corral.sim.model import Admission, Event, EventKind, Kind, Request
from corral.sim.node import RUNTIME, NodeRuntime
from corral.sim.runtime import Inbox
from corral.sim.streaming import FaultyStream, Framing
from corral.sim.wire import (
    BUSY_MESSAGE,
    BadRequest,
    decode_body,
    encode,
    error_response,
    json_response,
    not_found_message,
    parse_keep_alive,
    typed,
    utc_now,
)

__all__ = ["chat", "generate"]


@dataclass
class _Call:
    """One parsed inference request and the answer prepared for it."""

    endpoint: str  # "generate" | "chat"
    model: str  # as the client wrote it (Ollama echoes it back)
    stream: bool
    req: Request
    pieces: list[str] = field(default_factory=list)
    n_think: int = 0  # the first n_think pieces are thinking
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    context_len: int = 0


def _options(body: dict[str, Any], where: str) -> tuple[dict[str, Any], int | None, int | None]:
    opts = typed(body, "options", dict, where) or {}
    num_ctx = opts.get("num_ctx")
    num_predict = opts.get("num_predict")
    for key, value in (("num_ctx", num_ctx), ("num_predict", num_predict)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise BadRequest(f"option {key!r} must be of type integer")
        if value is not None and not -(2**63) <= value < 2**63:
            # Go's int64 cannot hold it; the simulator must not crash on it either.
            raise BadRequest(f"option {key!r} is out of range for an integer")
    return opts, num_ctx, num_predict


@dataclass
class _Prompt:
    """What the request asks, as far as the simulator cares."""

    empty: bool  # no prompt / no messages: a load (or unload) request
    text: str  # what the answer is seeded from
    tokens: int
    messages: list[Any] = field(default_factory=list)
    tools: list[Any] = field(default_factory=list)


def _images(items: Any) -> int:
    return len(items) if isinstance(items, list) else 0


def _prompt(body: dict[str, Any], endpoint: str, where: str) -> _Prompt:
    if endpoint == "generate":
        prompt = typed(body, "prompt", str, where) or ""
        system = typed(body, "system", str, where) or ""
        prior = typed(body, "context", list, where) or []
        tokens = text.prompt_tokens(system) + text.prompt_tokens(prompt) + len(prior)
        tokens += 0 if body.get("raw") else 4  # template around the prompt
        tokens += 256 * _images(body.get("images"))
        return _Prompt(not prompt, system + "\n" + prompt, tokens)
    messages = typed(body, "messages", list, where) or []
    if not all(isinstance(m, dict) for m in messages):
        raise BadRequest("json: cannot unmarshal into Go struct field ChatRequest.messages")
    seed_text, tokens = text.chat_prompt(messages)
    tokens += 256 * sum(_images(m.get("images")) for m in messages)
    tools = typed(body, "tools", list, where) or []
    return _Prompt(not messages, seed_text, tokens, messages, tools)


def _plan(
    call: _Call,
    p: _Prompt,
    body: dict[str, Any],
    thinking: bool,
    seed: Any,
    num_predict: int | None,
) -> tuple[int, str]:
    """Fill the answer's pieces (or tool call); returns (output tokens, done_reason)."""
    name = call.req.model
    tool = text.tool_call(p.tools, p.messages, seed) if p.tools else None
    if tool is not None:
        tool["function"]["index"] = 0
        call.tool_calls = [tool]
        return text.prompt_tokens(encode(tool).decode()) + 1, "stop"
    if thinking:
        call.pieces, _ = text.output_tokens(name, "think\n" + p.text, seed, 12)
        call.n_think = len(call.pieces)
    limit = num_predict if num_predict is not None and num_predict >= 0 else None
    fmt = body.get("format")
    if fmt:
        # A JSON answer is as long as its document, unless num_predict cuts it.
        n = limit if limit is not None else 1 << 30
    else:
        n = text.output_length(name, p.text, seed, limit)
    answer, cut = text.output_tokens(name, p.text, seed, n, fmt)
    call.pieces += answer
    reason = "length" if cut or (limit is not None and not fmt) else "stop"
    return len(call.pieces), reason


async def _infer(request: web.Request, endpoint: str) -> web.StreamResponse:
    rt = request.app[RUNTIME]
    rt.counters.requests += 1
    where = "GenerateRequest" if endpoint == "generate" else "ChatRequest"
    body = decode_body(await request.read())
    model = typed(body, "model", str, where) or ""
    if not model:
        raise BadRequest("model is required")
    stream = typed(body, "stream", bool, where)
    keep_alive = parse_keep_alive(body.get("keep_alive"))
    opts, num_ctx, num_predict = _options(body, where)
    spec = rt.spec(model)
    if spec is None:
        rt.counters.errors["not_found"] += 1
        return error_response(404, not_found_message(model))
    if spec.embedding:
        raise BadRequest(f'"{model}" does not support {endpoint}')
    think = body.get("think")
    if think not in (None, False) and "thinking" not in spec.capabilities:
        raise BadRequest(f'"{model}" does not support thinking')
    # Like Ollama, a thinking model thinks unless told not to.
    thinking = "thinking" in spec.capabilities and think is not False
    prompt = _prompt(body, endpoint, where)
    refusal = rt.refusal()
    if refusal is not None:
        return error_response(*refusal)
    if prompt.empty:
        return await _load_or_unload(rt, endpoint, model, keep_alive, num_ctx)
    call = _Call(endpoint, model, stream is not False, Request(rt.next_id(), spec.name))
    n_out, reason = _plan(call, prompt, body, thinking, opts.get("seed"), num_predict)
    call.context_len = prompt.tokens + n_out
    call.req = replace(
        call.req,
        kind=Kind.GENERATE if endpoint == "generate" else Kind.CHAT,
        prompt_tokens=prompt.tokens,
        output_tokens=n_out,
        keep_alive=keep_alive,
        num_ctx=num_ctx,
        done_reason=reason,
    )
    return await _serve(request, rt, call)


async def _load_or_unload(
    rt: NodeRuntime, endpoint: str, model: str, keep_alive: float | None, num_ctx: int | None
) -> web.Response:
    """Empty prompt: load the model (or, with keep_alive 0, unload it). Never streamed."""
    kind = Kind.UNLOAD if keep_alive == 0 else Kind.LOAD
    req = Request(rt.next_id(), model, kind, 0, 0, keep_alive, num_ctx)
    adm, inbox = rt.submit(req)
    if adm is Admission.BUSY:
        rt.counters.errors["busy"] += 1
        return error_response(503, BUSY_MESSAGE)
    if adm is Admission.NOT_FOUND or inbox is None:
        return error_response(404, not_found_message(model))
    try:
        await inbox.done()
    except asyncio.CancelledError:
        rt.cancel(req.req_id)
        rt.counters.cancelled += 1
        raise
    rt.counters.completed += 1
    out: dict[str, Any] = {"model": model, "created_at": utc_now()}
    if endpoint == "chat":
        out["message"] = {"role": "assistant", "content": ""}
    else:
        out["response"] = ""
    out.update(done=True, done_reason=kind.value)
    return json_response(out)


def _piece_chunk(call: _Call, i: int, ts: str) -> dict[str, Any]:
    piece = call.pieces[i]
    thinking = i < call.n_think
    if call.endpoint == "chat":
        msg: dict[str, Any] = {"role": "assistant", "content": "" if thinking else piece}
        if thinking:
            msg["thinking"] = piece
        return {"model": call.model, "created_at": ts, "message": msg, "done": False}
    out: dict[str, Any] = {
        "model": call.model,
        "created_at": ts,
        "response": "" if thinking else piece,
    }
    if thinking:
        out["thinking"] = piece
    out["done"] = False
    return out


def _final(call: _Call, ev: Event, ts: str, whole: bool, counts: bool = True) -> dict[str, Any]:
    """The done chunk (or, when ``whole``, the single non-streamed answer); without
    ``counts`` (the ``no_usage`` fault) it has no prompt_eval_count or eval_count."""
    thinking = "".join(call.pieces[: call.n_think]) if whole else ""
    content = "".join(call.pieces[call.n_think :]) if whole else ""
    out: dict[str, Any] = {"model": call.model, "created_at": ts}
    if call.endpoint == "chat":
        msg: dict[str, Any] = {"role": "assistant", "content": content}
        if thinking:
            msg["thinking"] = thinking
        if whole and call.tool_calls:
            msg["tool_calls"] = call.tool_calls
        out["message"] = msg
    else:
        out["response"] = content
        if thinking:
            out["thinking"] = thinking
    out["done"] = True
    out["done_reason"] = ev.done_reason
    if call.endpoint == "generate":
        base = len(call.pieces) * 7919 + call.context_len
        out["context"] = [(base + i * 2654435761) % 128000 for i in range(call.context_len)]
    m = ev.metrics
    if m is not None:
        out["total_duration"] = int(m.total_duration * 1e9)
        out["load_duration"] = int(m.load_duration * 1e9)
        if counts:
            out["prompt_eval_count"] = m.prompt_eval_count
        out["prompt_eval_duration"] = int(m.prompt_eval_duration * 1e9)
        if counts:
            out["eval_count"] = m.eval_count
        out["eval_duration"] = int(m.eval_duration * 1e9)
    return out


_NDJSON = Framing("application/x-ndjson", b"\n", encode({"error": RUNNER_CRASH}) + b"\n")


async def _serve(request: web.Request, rt: NodeRuntime, call: _Call) -> web.StreamResponse:
    adm, inbox = rt.submit(call.req)
    if adm is Admission.BUSY:
        rt.counters.errors["busy"] += 1
        return error_response(503, BUSY_MESSAGE)
    if adm is Admission.NOT_FOUND or inbox is None:
        rt.counters.errors["not_found"] += 1
        return error_response(404, not_found_message(call.model))
    writer = FaultyStream(request, rt, _NDJSON)
    return await writer.guard(call.req.req_id, _answer(rt, call, inbox, writer))


async def _answer(
    rt: NodeRuntime, call: _Call, inbox: Inbox, writer: FaultyStream
) -> web.StreamResponse:
    if not call.stream:
        done = await inbox.done()
        writer.finished = True
        counts = not rt.faults.no_usage
        body = writer.whole(encode(_final(call, done, utc_now(), True, counts)))
        if body is None:
            return error_response(500, RUNNER_CRASH)
        rt.counters.completed += 1
        return json_response(body)
    sent = 0
    while True:
        events = await inbox.get()
        ts = utc_now()
        done_ev = next((e for e in events if e.kind is EventKind.DONE), None)
        upto = len(call.pieces) if done_ev else max(e.tokens for e in events)
        upto = min(upto, len(call.pieces))
        lines = [encode(_piece_chunk(call, i, ts)) + b"\n" for i in range(sent, upto)]
        sent = upto
        if done_ev is None:
            await writer.put(lines)
            continue
        if call.tool_calls:
            msg = {"role": "assistant", "content": "", "tool_calls": call.tool_calls}
            tool_chunk = {"model": call.model, "created_at": ts, "message": msg, "done": False}
            lines.append(encode(tool_chunk) + b"\n")
        final = _final(call, done_ev, ts, False, not rt.faults.no_usage)
        lines.append(encode(final) + b"\n")
        return await writer.finish(lines)


async def generate(request: web.Request) -> web.StreamResponse:
    return await _infer(request, "generate")


async def chat(request: web.Request) -> web.StreamResponse:
    return await _infer(request, "chat")
