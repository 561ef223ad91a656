"""Ollama's embedding endpoints: ``/api/embed`` and the legacy ``/api/embeddings``."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from corral.sim import text
from corral.sim.catalogue import ModelSpec
from corral.sim.model import Admission, Event, Kind, Request
from corral.sim.node import RUNTIME, NodeRuntime
from corral.sim.wire import (
    BUSY_MESSAGE,
    BadRequest,
    decode_body,
    error_response,
    json_response,
    not_found_message,
    parse_keep_alive,
    typed,
)

__all__ = ["embed", "embeddings"]


class _Refused(Exception):
    def __init__(self, response: web.Response) -> None:
        self.response = response


async def _run(
    rt: NodeRuntime,
    body: dict[str, Any],
    model: str,
    spec: ModelSpec,
    opts: dict[str, Any],
    tokens: int,
    has_input: bool,
) -> Event:
    """Submit the request (a load when there is no input) and wait for DONE; a refusal
    is raised as a ready response."""
    kind = Kind.EMBED if has_input else Kind.LOAD
    keep_alive = parse_keep_alive(body.get("keep_alive"))
    req = Request(rt.next_id(), spec.name, kind, tokens, 0, keep_alive, _num_ctx(opts))
    adm, inbox = rt.submit(req)
    if adm is Admission.BUSY:
        rt.counters.errors["busy"] += 1
        raise _Refused(error_response(503, BUSY_MESSAGE))
    if adm is Admission.NOT_FOUND or inbox is None:
        rt.counters.errors["not_found"] += 1
        raise _Refused(error_response(404, not_found_message(model)))
    try:
        return await inbox.done()
    except asyncio.CancelledError:
        rt.cancel(req.req_id)
        rt.counters.cancelled += 1
        raise


def _num_ctx(opts: dict[str, Any]) -> int | None:
    value = opts.get("num_ctx")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest("option 'num_ctx' must be of type integer")
    return value


def _prelude(rt: NodeRuntime, body: dict[str, Any], where: str) -> tuple[str, ModelSpec, Any]:
    model = typed(body, "model", str, where) or ""
    if not model:
        raise BadRequest("model is required")
    spec = rt.spec(model)
    if spec is None:
        rt.counters.errors["not_found"] += 1
        raise _Refused(error_response(404, not_found_message(model)))
    return model, spec, typed(body, "options", dict, where) or {}


def _limit(rt: NodeRuntime, spec: ModelSpec, opts: dict[str, Any]) -> int:
    num_ctx = _num_ctx(opts)
    want = num_ctx if num_ctx and num_ctx > 0 else rt.model.config.default_num_ctx
    return min(want, spec.context_length)


async def embed(request: web.Request) -> web.StreamResponse:
    rt = request.app[RUNTIME]
    rt.counters.requests += 1
    body = decode_body(await request.read())
    try:
        model, spec, opts = _prelude(rt, body, "EmbedRequest")
        raw = body.get("input")
        if isinstance(raw, str):
            inputs = [raw] if raw else []
        elif isinstance(raw, list) and all(isinstance(x, str) for x in raw):
            inputs = list(raw)
        elif raw is None:
            inputs = []
        else:
            raise BadRequest("invalid input type")
        truncate = body.get("truncate", True) is not False
        dims = body.get("dimensions") or 0
        if isinstance(dims, bool) or not isinstance(dims, int) or dims < 0:
            raise BadRequest("dimensions must be a non-negative integer")
        limit = _limit(rt, spec, opts)
        counts = []
        for item in inputs:
            n = text.prompt_tokens(item)
            if n > limit and not truncate:
                raise BadRequest("the input length exceeds the context length")
            counts.append(min(n, limit))
        refusal = rt.refusal()
        if refusal is not None:
            return error_response(*refusal)
        done = await _run(rt, body, model, spec, opts, sum(counts), bool(inputs))
    except _Refused as refused:
        return refused.response
    vectors = []
    for item in inputs:
        vectors.append(text.embedding(spec.name, item, spec.embedding_length, dims))
    out: dict[str, Any] = {"model": model, "embeddings": vectors}
    if inputs and done.metrics is not None:
        out["total_duration"] = int(done.metrics.total_duration * 1e9)
        out["load_duration"] = int(done.metrics.load_duration * 1e9)
        out["prompt_eval_count"] = sum(counts)
    rt.counters.completed += 1
    return json_response(out)


async def embeddings(request: web.Request) -> web.StreamResponse:
    """The legacy endpoint: one prompt in, ``{"embedding": [...]}`` out."""
    rt = request.app[RUNTIME]
    rt.counters.requests += 1
    body = decode_body(await request.read())
    try:
        model, spec, opts = _prelude(rt, body, "EmbeddingRequest")
        prompt = typed(body, "prompt", str, "EmbeddingRequest") or ""
        refusal = rt.refusal()
        if refusal is not None:
            return error_response(*refusal)
        count = min(text.prompt_tokens(prompt), _limit(rt, spec, opts))
        await _run(rt, body, model, spec, opts, count, bool(prompt))
    except _Refused as refused:
        return refused.response
    rt.counters.completed += 1
    vec = text.embedding(spec.name, prompt, spec.embedding_length) if prompt else []
    return json_response({"embedding": vec})
