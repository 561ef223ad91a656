"""Every request is metered: counts from the backend, or an estimate marked as such."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import ollama
import pytest
from aiohttp import web

from corral.sim.launch import NodeSpec
from tests.helpers import free_port, run_gateway, sim_fleet


async def _models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [{"id": "bare", "object": "model"}]})


async def _chat(request: web.Request) -> web.StreamResponse:
    """An OpenAI-compatible server that reports no usage at all (some engines don't)."""
    body = await request.json()
    words = ["one", " two", " three", " four"]
    if not body.get("stream"):
        message = {"role": "assistant", "content": "".join(words)}
        return web.json_response(
            {
                "id": "x",
                "object": "chat.completion",
                "created": 1,
                "model": "bare",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            }
        )
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for i, word in enumerate(["", *words]):
        delta = {"role": "assistant", "content": ""} if i == 0 else {"content": word}
        chunk = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "bare"}
        chunk["choices"] = [{"index": 0, "delta": delta, "finish_reason": None}]
        await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    last = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "bare"}
    last["choices"] = [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    await resp.write(b"data: " + json.dumps(last).encode() + b"\n\ndata: [DONE]\n\n")
    return resp


@pytest.fixture
async def countless() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/v1/models", _models)
    app.router.add_post("/v1/chat/completions", _chat)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"openai+http://127.0.0.1:{port}"
    await runner.cleanup()


MSGS = [{"role": "user", "content": "count these forty characters, please!!!"}]


async def test_a_backend_without_counts_gets_an_estimate_marked_as_such(countless: str) -> None:
    async with run_gateway([countless]) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        for stream in (False, True):
            resp = await client.post(
                "/v1/chat/completions", json={"model": "bare", "messages": MSGS, "stream": stream}
            )
            assert resp.status_code == 200
            rec = gw.gw.usage[-1]
            assert rec.usage_estimated
            assert rec.prompt_tokens == len(MSGS[0]["content"]) // 4
            assert rec.completion_tokens is not None and abs(rec.completion_tokens - 4) <= 1
        # Translated for an Ollama client, the estimate is the same kind of record.
        async with ollama.AsyncClient(host=gw.url) as oc:
            reply = await oc.chat(model="bare", messages=MSGS)
        assert reply.message.content == "one two three four"
        assert gw.gw.usage[-1].usage_estimated


async def test_reported_counts_are_not_marked_estimated() -> None:
    async with sim_fleet(NodeSpec()) as fleet, httpx.AsyncClient(base_url=fleet.url) as client:
        for path, body in (
            ("/api/generate", {"model": "llama3.2:1b", "prompt": "hi", "stream": False}),
            ("/v1/chat/completions", {"model": "llama3.2:1b", "messages": MSGS}),
            ("/v1/chat/completions", {"model": "llama3.2:1b", "messages": MSGS, "stream": True}),
        ):
            assert (await client.post(path, json=body)).status_code == 200
            rec = fleet.gw.usage[-1]
            assert rec.prompt_tokens and rec.completion_tokens and not rec.usage_estimated
