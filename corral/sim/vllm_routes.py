"""vLLM's smaller endpoints: health, version, models, metrics, tokenizer, embeddings."""

from __future__ import annotations

import asyncio
import base64
import struct
from typing import Any

from aiohttp import web

from corral.sim import text
from corral.sim.model_types import Kind, Request
from corral.sim.runtime import Inbox
from corral.sim.vllm_node import VLLM_RUNTIME, VllmRuntime
from corral.sim.vllm_tokens import VOCAB_SIZE, render_chat
from corral.sim.vllm_wire import (
    ApiError,
    Fields,
    decode_json,
    embedding_too_long,
    json_response,
    validation_error,
)

__all__ = ["routes"]


async def health(request: web.Request) -> web.Response:
    return web.Response(status=200)


async def version(request: web.Request) -> web.Response:
    return json_response({"version": request.app[VLLM_RUNTIME].version})


async def models(request: web.Request) -> web.Response:
    rt = request.app[VLLM_RUNTIME]
    name = rt.spec.name
    permission = {
        "id": rt.new_id("modelperm"),
        "object": "model_permission",
        "created": rt.created,
        "allow_create_engine": False,
        "allow_sampling": True,
        "allow_logprobs": True,
        "allow_search_indices": False,
        "allow_view": True,
        "allow_fine_tuning": False,
        "organization": "*",
        "group": None,
        "is_blocking": False,
    }
    card = {
        "id": name,
        "object": "model",
        "created": rt.created,
        "owned_by": "vllm",
        "root": name,
        "parent": None,
        "max_model_len": rt.model.max_model_len,
        "permission": [permission],
    }
    return json_response({"object": "list", "data": [card]})


async def metrics(request: web.Request) -> web.Response:
    body = request.app[VLLM_RUNTIME].exposition()
    return web.Response(
        text=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"}
    )


async def tokenize(request: web.Request) -> web.Response:
    rt = request.app[VLLM_RUNTIME]
    body = decode_json(await request.read())
    f = Fields(body)
    rt.served.check(body.get("model"))
    if "messages" in body:
        messages = f.get("messages", list)
        tools = f.get("tools", list) or ()
        prompt = render_chat(messages, tools, bool(f.get("add_generation_prompt", bool, True)))
    else:
        prompt = f.get("prompt", str, required=True)
    ids = rt.vocab.encode(prompt)
    out: dict[str, Any] = {
        "count": len(ids),
        "max_model_len": rt.model.max_model_len,
        "tokens": ids,
        "token_strs": rt.vocab.pieces(ids) if f.get("return_token_strs", bool) else None,
    }
    return json_response(out)


async def detokenize(request: web.Request) -> web.Response:
    rt = request.app[VLLM_RUNTIME]
    body = decode_json(await request.read())
    rt.served.check(body.get("model"))
    tokens = Fields(body).get("tokens", list, required=True)
    for t in tokens:
        if isinstance(t, bool) or not isinstance(t, int):
            raise validation_error("int_type", "tokens", "Input should be a valid integer", t)
        if not 0 <= t < VOCAB_SIZE:
            raise ApiError(400, f"Token id {t} is out of vocabulary", param="tokens")
    return json_response({"prompt": rt.vocab.decode(tokens)})


def _inputs(raw: Any, rt: VllmRuntime) -> list[tuple[str, list[int]]]:
    """Each input's text and ids: a string, strings, token ids or lists of them."""
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise validation_error("string_type", "input", "Input should be a valid string", raw)
    if all(isinstance(i, int) and not isinstance(i, bool) for i in raw):
        raw = [raw]
    out = []
    for item in raw:
        if isinstance(item, str):
            out.append((item, rt.vocab.encode(item)))
        elif isinstance(item, list) and all(isinstance(i, int) for i in item):
            out.append((rt.vocab.decode(item), list(item)))
        else:
            raise validation_error("string_type", "input", "Input should be a valid string", item)
    return out


async def embeddings(request: web.Request) -> web.StreamResponse:
    rt = request.app[VLLM_RUNTIME]
    rt.counters.requests += 1
    body = decode_json(await request.read())
    f = Fields(body)
    model = rt.served.check(body.get("model"))
    if not rt.spec.embedding:
        raise ApiError(400, "The model does not support Embeddings API")
    if "input" not in body:
        raise validation_error("missing", "input", "Field required", body)
    inputs = _inputs(body["input"], rt)
    fmt = f.get("encoding_format", str, "float")
    if fmt not in ("float", "base64"):
        raise validation_error(
            "literal_error", "encoding_format", "Input should be 'float' or 'base64'", fmt
        )
    dims = f.get("dimensions", int)
    limit = rt.model.max_model_len
    for _, ids in inputs:
        if len(ids) > limit:
            raise embedding_too_long(limit, len(ids))
    refusal = rt.refusal()
    if refusal is not None:
        raise refusal
    reqs = [Request(rt.next_id(), rt.spec.name, Kind.EMBED, len(ids)) for _, ids in inputs]
    inboxes: list[Inbox] = []
    try:
        for req in reqs:
            inboxes.append(rt.submit(req))
        for inbox in inboxes:
            await inbox.done()
    except asyncio.CancelledError:
        for req in reqs:
            rt.cancel(req.req_id)
        rt.counters.cancelled += 1
        raise
    data = []
    for i, (item, _) in enumerate(inputs):
        vec = text.embedding(rt.spec.name, item, rt.spec.embedding_length, dims)
        value: Any = vec
        if fmt == "base64":
            value = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()
        data.append({"index": i, "object": "embedding", "embedding": value})
    tokens = sum(len(ids) for _, ids in inputs)
    rt.counters.completed += 1
    return json_response(
        {
            "id": rt.new_id("embd"),
            "object": "list",
            "created": int(rt.created + rt.now()),
            "model": model,
            "data": data,
            "usage": {
                "prompt_tokens": tokens,
                "total_tokens": tokens,
                "completion_tokens": 0,
                "prompt_tokens_details": None,
            },
        }
    )


def routes() -> list[web.RouteDef]:
    return [
        web.get("/health", health),
        web.get("/version", version),
        web.get("/v1/models", models),
        web.get("/metrics", metrics),
        web.post("/tokenize", tokenize),
        web.post("/detokenize", detokenize),
        web.post("/v1/embeddings", embeddings),
    ]
