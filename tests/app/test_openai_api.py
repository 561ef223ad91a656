"""The OpenAI API and both-way translation, over a mixed fleet: a simulated Ollama node,
a simulated vLLM server and a real llama.cpp engine, with the official clients."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from corral.engines.llamacpp import LlamaCppServer, start_llamacpp_async
from corral.engines.tinymodel import cached_tiny_model
from corral.sim.launch import NodeSpec, SimNode, start_node
from corral.sim.model_types import VllmConfig
from corral.sim.vllm_launch import VllmSpec
from tests.helpers import FAST_SIM, RunningGateway, run_gateway

QWEN = "Qwen/Qwen2.5-7B-Instruct"
HI = [{"role": "user", "content": "hello there"}]


@dataclass
class Mixed:
    gateway: RunningGateway
    oa: openai.AsyncOpenAI
    ol: ollama.AsyncClient
    ollama_node: SimNode


@pytest.fixture
async def mixed(tmp_path: Path) -> AsyncIterator[Mixed]:
    node = await start_node(
        NodeSpec(models=("llama3.2:1b", "nomic-embed-text"), config=FAST_SIM, name="sim0")
    )
    vllm = await start_node(VllmSpec(model=QWEN, config=VllmConfig(speed=200, jitter=0)))
    engine: LlamaCppServer = await start_llamacpp_async(
        cached_tiny_model(tmp_path), parallel=2, embedding=True, alias="tiny-llama"
    )
    backends = [
        {"name": "sim0", "url": node.url},
        {"name": "vllm0", "url": "openai+" + vllm.url},
        {"name": "llama", "url": "openai+" + engine.url},
    ]
    try:
        async with run_gateway(backends) as gw:
            oa = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
            ol = ollama.AsyncClient(host=gw.url)
            try:
                yield Mixed(gw, oa, ol, node)
            finally:
                await oa.close()
                await ol.close()
    finally:
        await engine.astop()
        await vllm.stop()
        await node.stop()


def last_usage(m: Mixed) -> tuple[int | None, int | None, str | None]:
    rec = m.gateway.gw.usage[-1]
    return rec.prompt_tokens, rec.completion_tokens, rec.backend


async def test_models_lists_every_backend_kind(mixed: Mixed) -> None:
    ids = {m.id for m in (await mixed.oa.models.list()).data}
    assert {"llama3.2:1b", "nomic-embed-text:latest", QWEN, "tiny-llama"} <= ids
    tags = {m.model for m in (await mixed.ol.list()).models}
    assert {"llama3.2:1b", QWEN, "tiny-llama"} <= tags


@pytest.mark.parametrize("model", ["llama3.2:1b", QWEN, "tiny-llama"])
async def test_openai_chat_on_every_backend_kind(mixed: Mixed, model: str) -> None:
    reply = await mixed.oa.chat.completions.create(model=model, messages=HI, max_tokens=8)
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in {"stop", "length"}
    assert reply.model == model
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    prompt, completion, _ = last_usage(mixed)
    assert prompt == reply.usage.prompt_tokens and completion == reply.usage.completion_tokens


@pytest.mark.parametrize("model", ["llama3.2:1b", QWEN, "tiny-llama"])
async def test_openai_streams_with_and_without_usage(mixed: Mixed, model: str) -> None:
    stream = await mixed.oa.chat.completions.create(
        model=model, messages=HI, max_tokens=8, stream=True
    )
    chunks = [c async for c in stream]
    assert all(c.usage is None for c in chunks), "usage the client did not ask for"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert last_usage(mixed)[1], "the gateway still metered the stream"
    stream = await mixed.oa.chat.completions.create(
        model=model,
        messages=HI,
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in stream]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert chunks[-1].choices == []


async def test_openai_completions_translated_and_passed(mixed: Mixed) -> None:
    for model in ("llama3.2:1b", "tiny-llama"):
        reply = await mixed.oa.completions.create(model=model, prompt="Once upon", max_tokens=6)
        assert reply.choices[0].text and reply.usage is not None


async def test_openai_embeddings_over_ollama_and_llamacpp(mixed: Mixed) -> None:
    for model in ("nomic-embed-text", "tiny-llama"):
        out = await mixed.oa.embeddings.create(model=model, input=["a", "b"])
        assert len(out.data) == 2 and len(out.data[0].embedding) > 8
    async with httpx.AsyncClient(base_url=mixed.gateway.url) as raw:
        resp = await raw.post(
            "/v1/embeddings",
            json={"model": "nomic-embed-text", "input": "a", "encoding_format": "base64"},
        )
    vector = base64.b64decode(resp.json()["data"][0]["embedding"])
    assert len(vector) % 4 == 0 and struct.unpack("<f", vector[:4])[0] != 0


async def test_ollama_client_on_openai_kind_backends(mixed: Mixed) -> None:
    for model in (QWEN, "tiny-llama"):
        reply = await mixed.ol.chat(model=model, messages=HI, options={"num_predict": 6})
        assert reply.message.content and reply.done and reply.eval_count
        parts = [
            p
            async for p in await mixed.ol.chat(
                model=model, messages=HI, stream=True, options={"num_predict": 6}
            )
        ]
        assert parts[-1].done and "".join(p.message.content or "" for p in parts)
        gen = await mixed.ol.generate(model=model, prompt="hi", options={"num_predict": 4})
        assert gen.response and gen.done
    embedded = await mixed.ol.embed(model="tiny-llama", input=["x", "y"])
    assert len(embedded.embeddings) == 2
    shown = await mixed.ol.show(QWEN)
    assert shown.capabilities == ["completion"]
    resident = {(m.model, m.context_length) for m in (await mixed.ol.ps()).models}
    assert (QWEN, 32768) in resident  # the vLLM server's max_model_len
    assert "tiny-llama" in {n for n, _ in resident}


async def test_tool_calls_translate_both_ways(mixed: Mixed) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    ask = [{"role": "user", "content": "What is the weather in Paris? Use the tool."}]
    for model in ("llama3.2:1b", QWEN):
        reply = await mixed.oa.chat.completions.create(model=model, messages=ask, tools=tools)
        calls = reply.choices[0].message.tool_calls
        assert calls and calls[0].function.name == "get_weather" and calls[0].id
        assert isinstance(json.loads(calls[0].function.arguments), dict)
        assert reply.choices[0].finish_reason == "tool_calls"
    via_ollama = await mixed.ol.chat(model=QWEN, messages=ask, tools=tools)
    calls_o = via_ollama.message.tool_calls
    assert calls_o and calls_o[0].function.name == "get_weather"
    assert isinstance(calls_o[0].function.arguments, dict)


async def test_errors_come_back_in_the_openai_shape(mixed: Mixed) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        await mixed.oa.chat.completions.create(model="nope:7b", messages=HI)
    assert 'model "nope:7b" not found' in str(missing.value)
    with pytest.raises(openai.BadRequestError) as bad:
        await mixed.oa.chat.completions.create(model="llama3.2:1b", messages=HI, n=2)
    assert bad.value.body["param"] == "n"  # type: ignore[index]
    async with httpx.AsyncClient(base_url=mixed.gateway.url) as raw:
        resp = await raw.post("/v1/chat/completions", content=b"{broken")
        assert resp.status_code == 400 and resp.json()["error"]["type"] == "invalid_request_error"
        resp = await raw.post("/v1/chat/completions", json={"model": "llama3.2:1b"})
        assert resp.status_code == 400 and "messages" in resp.json()["error"]["message"]
        resp = await raw.get("/v1/nothing")
        assert resp.status_code == 404 and "message" in resp.json()["error"]


async def test_a_stream_cut_mid_way_ends_with_an_openai_error_event(mixed: Mixed) -> None:
    mixed.ollama_node.set_faults(drop_mid_stream=1.0, after_chunks=2)
    async with httpx.AsyncClient(base_url=mixed.gateway.url, timeout=10) as raw:
        resp = await raw.post(
            "/v1/chat/completions",
            json={"model": "llama3.2:1b", "messages": HI, "stream": True},
        )
    events = [e for e in resp.text.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    assert "failed mid-stream" in json.loads(events[-2].removeprefix("data: "))["error"]["message"]


async def test_an_image_url_is_fetched_for_an_ollama_backend(tmp_path: Path) -> None:
    from aiohttp import web

    png = bytes.fromhex("89504e470d0a1a0a") + b"\0" * 64

    async def image(request: web.Request) -> web.Response:
        return web.Response(body=png, content_type="image/png")

    app = web.Application()
    app.router.add_get("/cat.png", image)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    node = await start_node(NodeSpec(models=("llava:7b",), config=FAST_SIM))
    url = f"http://127.0.0.1:{port}/cat.png"
    content = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": url}},
    ]
    try:
        # The image server is on loopback, which the fetcher refuses unless allowed.
        async with run_gateway([node.url]) as gw, httpx.AsyncClient(base_url=gw.url) as raw:
            body = {"model": "llava:7b", "messages": [{"role": "user", "content": content}]}
            refused = await raw.post("/v1/chat/completions", json=body)
            assert refused.status_code == 400 and "loopback" in refused.json()["error"]["message"]
        async with (
            run_gateway([node.url], images={"allow_private": True}) as gw,
            httpx.AsyncClient(base_url=gw.url) as raw,
        ):
            ok = await raw.post("/v1/chat/completions", json=body)
            assert ok.status_code == 200, ok.text
            # The simulator counts each image as 256 prompt tokens: it arrived as bytes.
            assert ok.json()["usage"]["prompt_tokens"] > 256
    finally:
        await node.stop()
        await runner.cleanup()


@pytest.mark.parametrize("stream", [True, False])
async def test_a_malformed_backend_chunk_is_an_error_not_a_crash(
    mixed: Mixed, stream: bool
) -> None:
    mixed.ollama_node.set_faults(malformed_json=1.0, after_chunks=2)
    async with httpx.AsyncClient(base_url=mixed.gateway.url, timeout=10) as raw:
        resp = await raw.post(
            "/v1/chat/completions",
            json={"model": "llama3.2:1b", "messages": HI, "stream": stream},
        )
    if stream:
        assert resp.status_code == 200
        events = [e for e in resp.text.split("\n\n") if e]
        assert events[-1] == "data: [DONE]"
        assert "error" in json.loads(events[-2].removeprefix("data: "))
    else:
        # Nothing was sent yet, so the request failed over; with one holder it is a 502.
        assert resp.status_code == 502 and resp.json()["error"]["message"]
