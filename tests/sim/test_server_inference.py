"""Inference endpoints over real sockets, through the official ``ollama`` client."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
from dataclasses import replace

import httpx
import ollama
import pytest

from corral.sim.launch import SimNode
from tests.sim.conftest import StartNode
from tests.sim.support import FAST, until

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}


async def test_generate_answers_text_with_ollama_metrics_in_nanoseconds(sim: SimNode) -> None:
    async with ollama.AsyncClient(host=sim.url) as client:
        r = await client.generate(model="llama3.2:1b", prompt="Tell me about llamas.")
    assert r.done and r.done_reason == "stop"
    assert r.model == "llama3.2:1b" and r.created_at
    assert len(r.response.split()) == r.eval_count
    assert r.prompt_eval_count == math.ceil(len("Tell me about llamas.") / 4) + 4
    # Cold start: the load dominates and durations are integer nanoseconds.
    assert r.load_duration and r.total_duration and r.eval_duration and r.prompt_eval_duration
    assert r.load_duration > r.eval_duration
    assert r.total_duration >= r.load_duration + r.prompt_eval_duration + r.eval_duration - 10**6
    assert r.context and len(r.context) == r.prompt_eval_count + r.eval_count


async def test_generate_streams_ndjson_one_token_per_chunk(sim: SimNode) -> None:
    async with httpx.AsyncClient(base_url=sim.url) as http:
        body = {"model": "llama3.2:1b", "prompt": "hi", "options": {"num_predict": 12}}
        async with http.stream("POST", "/api/generate", json=body) as resp:
            assert resp.status_code == 200
            assert resp.headers["content-type"] == "application/x-ndjson"
            chunks = [json.loads(line) async for line in resp.aiter_lines() if line]
    assert [c["done"] for c in chunks] == [False] * 12 + [True]
    assert all(c["response"] for c in chunks[:-1]) and chunks[-1]["response"] == ""
    assert chunks[-1]["eval_count"] == 12 and chunks[-1]["done_reason"] == "length"


async def test_stream_and_non_stream_give_the_same_text_for_the_same_seed(sim: SimNode) -> None:
    args = {"model": "llama3.2:1b", "prompt": "Same question", "options": {"seed": 3}}
    async with ollama.AsyncClient(host=sim.url) as client:
        whole = (await client.generate(**args)).response
        parts = [p.response async for p in await client.generate(**args, stream=True)]
        other = (await client.generate(**{**args, "options": {"seed": 4}})).response
    assert "".join(parts) == whole
    assert other != whole


async def test_num_predict_sets_the_length_and_done_reason(sim: SimNode) -> None:
    async with ollama.AsyncClient(host=sim.url) as client:
        r = await client.generate(model="llama3.2:1b", prompt="x", options={"num_predict": 7})
        free = await client.generate(model="llama3.2:1b", prompt="x")
    assert r.eval_count == 7 and r.done_reason == "length"
    assert free.eval_count is not None and 20 <= free.eval_count <= 120
    assert free.done_reason == "stop"


async def test_format_json_answers_a_json_document(sim: SimNode) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    }
    async with ollama.AsyncClient(host=sim.url) as client:
        r = await client.generate(model="llama3.2:1b", prompt="who?", format=schema)
        plain = await client.generate(model="llama3.2:1b", prompt="who?", format="json")
    doc = json.loads(r.response)
    assert isinstance(doc["name"], str) and isinstance(doc["age"], int)
    assert isinstance(json.loads(plain.response), dict)


async def test_chat_streams_assistant_message_chunks(sim: SimNode) -> None:
    messages = [{"role": "user", "content": "Hello there"}]
    async with ollama.AsyncClient(host=sim.url) as client:
        parts = [
            p async for p in await client.chat(model="llama3.2:1b", messages=messages, stream=True)
        ]
        whole = await client.chat(model="llama3.2:1b", messages=messages)
    assert all(p.message.role == "assistant" for p in parts)
    assert parts[-1].done and not any(p.done for p in parts[:-1])
    assert "".join(p.message.content or "" for p in parts) == whole.message.content
    assert whole.eval_count == len(parts) - 1 and whole.prompt_eval_count


async def test_chat_with_tools_calls_one_with_object_arguments_when_asked(sim: SimNode) -> None:
    ask = [{"role": "user", "content": "What is the weather in Paris? Use get_weather."}]
    chat = [{"role": "user", "content": "Tell me a story."}]
    async with ollama.AsyncClient(host=sim.url) as client:
        r = await client.chat(model="llama3.2:1b", messages=ask, tools=[WEATHER_TOOL])
        streamed = [
            p
            async for p in await client.chat(
                model="llama3.2:1b", messages=ask, tools=[WEATHER_TOOL], stream=True
            )
        ]
        story = await client.chat(model="llama3.2:1b", messages=chat, tools=[WEATHER_TOOL])
    (call,) = r.message.tool_calls or []
    assert call.function.name == "get_weather"
    assert isinstance(call.function.arguments, dict) and "city" in call.function.arguments
    assert r.message.content == ""
    with_calls = [p for p in streamed if p.message.tool_calls]
    assert len(with_calls) == 1 and not with_calls[0].done
    assert story.message.content and not story.message.tool_calls


async def test_thinking_models_think_and_others_refuse_think(sim: SimNode) -> None:
    msgs = [{"role": "user", "content": "why?"}]
    async with ollama.AsyncClient(host=sim.url) as client:
        r = await client.chat(model="qwen3:4b", messages=msgs)
        off = await client.chat(model="qwen3:4b", messages=msgs, think=False)
        with pytest.raises(ollama.ResponseError) as exc:
            await client.chat(model="llama3.2:1b", messages=msgs, think=True)
    assert r.message.thinking and r.message.content
    assert not off.message.thinking
    assert exc.value.status_code == 400 and "does not support thinking" in exc.value.error


async def test_empty_prompt_loads_and_keep_alive_zero_unloads(sim: SimNode) -> None:
    async with ollama.AsyncClient(host=sim.url) as client:
        loaded = await client.generate(model="llama3.2:1b", prompt="")
        assert loaded.done_reason == "load" and loaded.response == ""
        assert [m.model for m in (await client.ps()).models] == ["llama3.2:1b"]
        chat = await client.chat(model="llama3.2:1b", messages=[], keep_alive=0)
        assert chat.done_reason == "unload"
        await until(lambda: not sim.model.runners(sim.runtime.now()))
        assert (await client.ps()).models == []


async def test_keep_alive_formats_and_bad_ones(sim: SimNode) -> None:
    async with ollama.AsyncClient(host=sim.url) as client:
        await client.generate(model="llama3.2:1b", prompt="x", keep_alive="10m")
        (info,) = sim.model.runners(sim.runtime.now())
        assert info.keep_alive == 600
        await client.generate(model="llama3.2:1b", prompt="x", keep_alive=-1)
        assert math.isinf(sim.model.runners(sim.runtime.now())[0].keep_alive)
        with pytest.raises(ollama.ResponseError) as exc:
            await client.generate(model="llama3.2:1b", prompt="x", keep_alive="soon")
    assert exc.value.status_code == 400 and "invalid duration" in exc.value.error


async def test_a_new_num_ctx_reloads_the_model(sim: SimNode) -> None:
    async with ollama.AsyncClient(host=sim.url) as client:
        await client.generate(model="llama3.2:1b", prompt="x")
        first = (await client.ps()).models[0].context_length
        r = await client.generate(model="llama3.2:1b", prompt="x", options={"num_ctx": 8192})
        second = (await client.ps()).models[0].context_length
    assert (first, second) == (4096, 8192)
    assert r.load_duration and r.load_duration > 10**6
    assert sim.model.stats.loads == 2


async def test_unknown_model_is_404_with_ollamas_message(sim: SimNode) -> None:
    async with ollama.AsyncClient(host=sim.url) as client:
        for call in (
            client.generate(model="nope:1b", prompt="x"),
            client.chat(model="nope:1b", messages=[{"role": "user", "content": "x"}]),
            client.embed(model="nope:1b", input="x"),
        ):
            with pytest.raises(ollama.ResponseError) as exc:
                await call
            assert exc.value.status_code == 404
            assert exc.value.error == 'model "nope:1b" not found, try pulling it first'


async def test_bad_requests_get_400_with_an_error_body(sim: SimNode) -> None:
    async with httpx.AsyncClient(base_url=sim.url) as http:
        cases = [
            ("/api/generate", b"{not json"),
            ("/api/generate", b""),
            ("/api/generate", b'{"prompt": "no model"}'),
            ("/api/generate", b'{"model": "llama3.2:1b", "prompt": 5}'),
            ("/api/chat", b'{"model": "llama3.2:1b", "messages": "hi"}'),
            ("/api/generate", b'{"model": "nomic-embed-text", "prompt": "x"}'),
            ("/api/embed", b'{"model": "nomic-embed-text", "input": [1, 2]}'),
            ("/api/embed", b'{"model": "nomic-embed-text", "options": {"num_ctx": "big"}}'),
            ("/api/generate", b'{"model": "llama3.2:1b", "options": {"num_predict": 1.5}}'),
        ]
        for path, body in cases:
            resp = await http.post(path, content=body)
            assert resp.status_code == 400, (path, body, resp.text)
            assert set(resp.json()) == {"error"} and resp.json()["error"]
        missing = await http.post("/api/generate", content=b"")
    assert missing.json() == {"error": "missing request body"}


@pytest.mark.parametrize("option", ["num_predict", "num_ctx"])
async def test_an_option_past_64_bits_is_a_400_not_a_crash(sim: SimNode, option: str) -> None:
    huge = {"model": "llama3.2:1b", "prompt": "x", "stream": False, "options": {option: 2**64}}
    body = json.dumps(huge)  # Python writes the integer whole, as a client could
    async with httpx.AsyncClient(base_url=sim.url) as http:
        resp = await http.post("/api/generate", content=body.encode())
    assert resp.status_code == 400, resp.text
    assert resp.json() == {"error": f"option {option!r} is out of range for an integer"}


async def test_embed_single_batch_dimensions_and_truncate(sim: SimNode) -> None:
    long_text = "word " * 10_000
    async with ollama.AsyncClient(host=sim.url) as client:
        one = await client.embed(model="nomic-embed-text", input="hello")
        batch = await client.embed(model="nomic-embed-text", input=["hello", "world"])
        short = await client.embed(model="nomic-embed-text", input="hello", dimensions=64)
        cut = await client.embed(model="nomic-embed-text", input=long_text)
        with pytest.raises(ollama.ResponseError) as exc:
            await client.embed(model="nomic-embed-text", input=long_text, truncate=False)
    assert len(one.embeddings) == 1 and len(one.embeddings[0]) == 768
    assert batch.embeddings[0] == one.embeddings[0] and batch.embeddings[1] != one.embeddings[0]
    assert math.isclose(sum(v * v for v in batch.embeddings[1]), 1.0, rel_tol=1e-9)
    assert len(short.embeddings[0]) == 64
    assert math.isclose(sum(v * v for v in short.embeddings[0]), 1.0, rel_tol=1e-9)
    assert one.prompt_eval_count == 2 and batch.prompt_eval_count == 4
    assert cut.prompt_eval_count == 2048  # nomic-embed-text's context
    assert exc.value.status_code == 400


async def test_legacy_embeddings_endpoint(sim: SimNode) -> None:
    async with ollama.AsyncClient(host=sim.url) as client:
        r = await client.embeddings(model="nomic-embed-text", prompt="hello")
        empty = await client.embeddings(model="nomic-embed-text", prompt="")
    assert len(r.embedding) == 768 and list(empty.embedding) == []


async def test_requests_for_a_busy_model_queue_on_its_slots_in_order(start: StartNode) -> None:
    node = await start(loaded=("llama3.2:1b",), config=replace(FAST, speed=20.0))
    async with ollama.AsyncClient(host=node.url) as client:
        calls = [
            client.generate(model="llama3.2:1b", prompt=f"q{i}", options={"num_predict": 20})
            for i in range(4)
        ]
        results = await asyncio.gather(*calls)
    totals = sorted(r.total_duration or 0 for r in results)
    # One slot: each waits for the ones before it.
    assert all(b > a for a, b in itertools.pairwise(totals))
    assert node.state()["counters"]["completed"] == 4


async def test_zero_delay_node_answers_at_once(start: StartNode) -> None:
    node = await start(config=replace(FAST, zero_delay=True, token_chunk=0))
    async with ollama.AsyncClient(host=node.url) as client:
        r = await client.generate(model="llama3.2:1b", prompt="x", options={"num_predict": 30})
        parts = [
            p async for p in await client.generate(model="llama3.2:1b", prompt="x", stream=True)
        ]
    assert r.eval_count == 30 and r.total_duration == 0
    assert parts[-1].done and len(parts) == (parts[-1].eval_count or 0) + 1
