"""Answers to structured-output requests are checked against the schema, on any backend."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from aiohttp import web

from corral.sim.launch import NodeSpec
from tests.helpers import free_port, run_gateway, sim_fleet

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}
ASK = [{"role": "user", "content": "a person, as JSON"}]
OPENAI_FORMAT = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA}}


@dataclass
class Liar:
    """An OpenAI-compatible backend whose answers never match the schema."""

    url: str
    calls: int = 0


@pytest.fixture
async def liar() -> AsyncIterator[Liar]:
    state = Liar("")
    text = '{"name": 5}'

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "liar"}]})

    async def chat(request: web.Request) -> web.StreamResponse:
        state.calls += 1
        body = await request.json()
        usage = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
        head = {"id": "x", "created": 1, "model": "liar"}
        if not body.get("stream"):
            message = {"role": "assistant", "content": text}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            return web.json_response(
                {**head, "object": "chat.completion", "choices": [choice], "usage": usage}
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for piece, finish in ((text[:5], None), (text[5:], "stop")):
            choice = {"index": 0, "delta": {"content": piece}, "finish_reason": finish}
            chunk = {**head, "object": "chat.completion.chunk", "choices": [choice]}
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        tail = {**head, "object": "chat.completion.chunk", "choices": [], "usage": usage}
        await resp.write(b"data: " + json.dumps(tail).encode() + b"\n\ndata: [DONE]\n\n")
        return resp

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    state.url = f"openai+http://127.0.0.1:{port}"
    yield state
    await runner.cleanup()


async def test_valid_answers_are_marked_valid_on_both_dialects() -> None:
    async with sim_fleet(NodeSpec()) as fleet, httpx.AsyncClient(base_url=fleet.url) as client:
        body = {"model": "llama3.2:1b", "messages": ASK, "format": SCHEMA, "stream": False}
        native = await client.post("/api/chat", json=body)
        assert native.headers["x-corral-schema"] == "valid"
        body = {"model": "llama3.2:1b", "messages": ASK, "response_format": OPENAI_FORMAT}
        translated = await client.post("/v1/chat/completions", json=body)
        assert translated.headers["x-corral-schema"] == "valid"
        json_only = {"model": "llama3.2:1b", "prompt": "x", "format": "json", "stream": False}
        assert (await client.post("/api/generate", json=json_only)).headers[
            "x-corral-schema"
        ] == "valid"


async def test_an_invalid_answer_is_marked(liar: Liar) -> None:
    async with run_gateway([liar.url]) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        body = {"model": "liar", "messages": ASK, "response_format": OPENAI_FORMAT}
        resp = await client.post("/v1/chat/completions", json=body)
        assert resp.status_code == 200
        assert resp.headers["x-corral-schema"].startswith("invalid: ")
        assert "is a required property" in resp.headers["x-corral-schema"]
        assert liar.calls == 1
        assert "does not match" in (gw.gw.usage[-1].error or "")


async def test_retry_once_asks_again_then_marks(liar: Liar) -> None:
    async with (
        run_gateway([liar.url], structured={"on_invalid": "retry"}) as gw,
        httpx.AsyncClient(base_url=gw.url) as client,
    ):
        body = {"model": "liar", "messages": ASK, "format": SCHEMA, "stream": False}
        resp = await client.post("/api/chat", json=body)  # an Ollama client, translated
        assert resp.status_code == 200 and resp.headers["x-corral-schema"].startswith("invalid")
        assert liar.calls == 2


async def test_an_invalid_stream_ends_with_an_error_event(liar: Liar) -> None:
    async with run_gateway([liar.url]) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        body = {"model": "liar", "messages": ASK, "response_format": OPENAI_FORMAT, "stream": True}
        sse = await client.post("/v1/chat/completions", json=body)
        events = [e for e in sse.text.split("\n\n") if e]
        assert events[-1] == "data: [DONE]" and sse.text.count("[DONE]") == 1
        error = json.loads(events[-2].removeprefix("data: "))["error"]["message"]
        assert "does not match the requested format" in error
        body = {"model": "liar", "messages": ASK, "format": SCHEMA}  # Ollama streams by default
        lines = (await client.post("/api/chat", json=body)).text.splitlines()
        assert "does not match" in json.loads(lines[-1])["error"]


async def test_checking_can_be_switched_off(liar: Liar) -> None:
    async with (
        run_gateway([liar.url], structured={"check": False}) as gw,
        httpx.AsyncClient(base_url=gw.url) as client,
    ):
        body = {"model": "liar", "messages": ASK, "response_format": OPENAI_FORMAT}
        resp = await client.post("/v1/chat/completions", json=body)
        assert "x-corral-schema" not in resp.headers


async def test_a_schema_that_is_not_one_is_a_400_naming_the_field() -> None:
    async with sim_fleet(NodeSpec()) as fleet, httpx.AsyncClient(base_url=fleet.url) as client:
        bad = {"type": "object", "properties": {"x": {"type": "no-such-type"}}}
        body = {"model": "llama3.2:1b", "messages": ASK, "format": bad, "stream": False}
        resp = await client.post("/api/chat", json=body)
        assert (
            resp.status_code == 400 and "format is not a valid JSON schema" in resp.json()["error"]
        )
        body = {
            "model": "llama3.2:1b",
            "messages": ASK,
            "response_format": {"type": "json_schema", "json_schema": {"name": "b", "schema": bad}},
        }
        resp = await client.post("/v1/chat/completions", json=body)
        assert resp.status_code == 400 and resp.json()["error"]["param"] == "response_format"
