"""Every request is metered: counts from the backend, or an estimate marked as such."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import ollama
import pytest
from aiohttp import web
from starlette.routing import Route

from corral.app.factory import create_app
from corral.app.pipeline import Pipeline
from corral.sim.launch import NodeSpec
from tests.helpers import SimFleet, free_port, run_gateway, sim_fleet


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


async def _last_message(
    fleet: SimFleet, pipeline: Pipeline, path: str, body: dict[str, Any], rid: str
) -> list[tuple[int, bool]]:
    """Call ``pipeline`` as uvicorn would; for each last body message sent, the status and
    whether the request's usage record was already made."""
    sent: list[tuple[int, bool]] = []
    started: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            started.append(message["status"])
        elif not message.get("more_body", False):
            sent.append((started[-1], rid in {r.request_id for r in fleet.gw.usage}))

    messages = [{"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # the client stays until the answer ends
        raise AssertionError("unreachable")

    headers = [(b"content-type", b"application/json"), (b"x-request-id", rid.encode())]
    scope = {"type": "http", "method": "POST", "path": path, "http_version": "1.1"}
    await pipeline({**scope, "headers": headers, "client": ("127.0.0.1", 1)}, receive, send)
    return sent


async def test_the_usage_record_is_journaled_before_the_last_byte_goes_out() -> None:
    """A client that has read a whole answer has its row even if the gateway dies the
    next instant: each request settles just before its last body message, whether the
    answer is whole, streamed, translated or an error."""
    async with sim_fleet(NodeSpec()) as fleet:
        app = create_app(fleet.gw.settings, gateway=fleet.gw)
        pipelines = {
            r.path: r.endpoint
            for r in app.routes
            if isinstance(r, Route) and isinstance(r.endpoint, Pipeline)
        }
        chat = {"model": "llama3.2:1b", "messages": MSGS, "options": {"num_predict": 4}}
        cases = [
            ("/api/chat", {**chat, "stream": False}, 200),
            ("/api/chat", {**chat, "stream": True}, 200),
            ("/v1/chat/completions", {**chat, "stream": False}, 200),
            ("/v1/chat/completions", {**chat, "stream": True}, 200),
            ("/api/chat", {**chat, "model": "no-such-model"}, 404),
            ("/v1/chat/completions", {"model": "llama3.2:1b", "messages": "nope"}, 400),
        ]
        for n, (path, body, status) in enumerate(cases):
            rid = f"last-byte-{n}"
            sent = await _last_message(fleet, pipelines[path], path, body, rid)
            assert sent == [(status, True)], (path, body)
            assert fleet.gw.usage[-1].request_id == rid
            assert fleet.gw.usage[-1].status == status
