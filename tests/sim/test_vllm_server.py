"""The simulated vLLM server over real sockets, through the official ``openai`` client."""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from corral.sim.launch import VllmNode
from tests.sim.conftest import StartVllm
from tests.sim.support import VLLM_MODEL

WEATHER = {
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
HELLO = [{"role": "user", "content": "Tell me about llamas."}]


def client(node: VllmNode) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=node.url + "/v1", api_key="x", max_retries=0)


async def sse_chunks(node: VllmNode, path: str, body: dict[str, Any]) -> list[Any]:
    """The decoded ``data:`` events of a stream, ``[DONE]`` kept as a string."""
    async with (
        httpx.AsyncClient(base_url=node.url) as http,
        http.stream("POST", path, json=body) as resp,
    ):
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        raw = (await resp.aread()).decode()
    events = [e for e in raw.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    return [e[6:] if e == "data: [DONE]" else json.loads(e[6:]) for e in events]


async def test_chat_completion_answers_in_vllm_shape(vllm: VllmNode) -> None:
    async with client(vllm) as c:
        r = await c.chat.completions.create(model=VLLM_MODEL, messages=HELLO, seed=1)
    assert r.id.startswith("chatcmpl-") and r.object == "chat.completion"
    assert r.model == VLLM_MODEL and r.created > 0
    choice = r.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason == "stop" and choice.logprobs is None
    assert r.usage is not None
    assert r.usage.completion_tokens == len(choice.message.content.split())
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


async def test_completion_defaults_to_sixteen_tokens_like_vllm(vllm: VllmNode) -> None:
    async with client(vllm) as c:
        r = await c.completions.create(model=VLLM_MODEL, prompt="Once upon a time")
        longer = await c.completions.create(model=VLLM_MODEL, prompt="Once", max_tokens=500)
    assert r.id.startswith("cmpl-") and r.object == "text_completion"
    assert r.choices[0].finish_reason == "length" and r.usage is not None
    assert r.usage.completion_tokens == 16 and len(r.choices[0].text.split()) == 16
    assert longer.choices[0].finish_reason == "stop"


async def test_chat_stream_sends_role_first_then_deltas_and_no_usage_by_default(
    vllm: VllmNode,
) -> None:
    body = {"model": VLLM_MODEL, "messages": HELLO, "seed": 4, "stream": True}
    chunks = await sse_chunks(vllm, "/v1/chat/completions", body)
    assert chunks[-1] == "[DONE]"
    data = chunks[:-1]
    assert data[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["object"] == "chat.completion.chunk" and "usage" not in c for c in data)
    assert len({c["id"] for c in data}) == 1
    assert [c["choices"][0]["finish_reason"] for c in data[1:]][-1] == "stop"
    assert all(c["choices"][0]["finish_reason"] is None for c in data[:-1])
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in data)
    async with client(vllm) as c:
        whole = await c.chat.completions.create(model=VLLM_MODEL, messages=HELLO, seed=4)
    assert streamed == whole.choices[0].message.content


async def test_include_usage_adds_a_last_chunk_with_no_choices(vllm: VllmNode) -> None:
    async with client(vllm) as c:
        stream = await c.chat.completions.create(
            model=VLLM_MODEL,
            messages=HELLO,
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    assert [ch.usage is not None for ch in chunks] == [False] * (len(chunks) - 1) + [True]
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.completion_tokens == 5
    assert chunks[-2].choices[0].finish_reason == "length"


async def test_completion_stream_is_text_completion_chunks(vllm: VllmNode) -> None:
    body = {
        "model": VLLM_MODEL,
        "prompt": "Say something",
        "max_tokens": 7,
        "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
    }
    chunks = await sse_chunks(vllm, "/v1/completions", body)
    data = chunks[:-1]
    assert all(c["object"] == "text_completion" for c in data)
    assert len([c for c in data if c["choices"]]) == 7
    assert data[-1]["choices"] == [] and data[-1]["usage"]["completion_tokens"] == 7
    # continuous_usage_stats: every chunk counts the tokens so far.
    assert [c["usage"]["completion_tokens"] for c in data[:-1]] == list(range(1, 8))


async def test_tool_call_has_an_id_and_json_string_arguments(vllm: VllmNode) -> None:
    ask = [{"role": "user", "content": "What is the weather in Paris? Use get_weather."}]
    async with client(vllm) as c:
        r = await c.chat.completions.create(model=VLLM_MODEL, messages=ask, tools=[WEATHER])
        stream = await c.chat.completions.create(
            model=VLLM_MODEL, messages=ask, tools=[WEATHER], stream=True
        )
        chunks = [ch async for ch in stream]
        plain = await c.chat.completions.create(model=VLLM_MODEL, messages=HELLO, tools=[WEATHER])
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    call = calls[0]
    assert call.id.startswith("chatcmpl-tool-") and call.type == "function"
    assert call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    assert isinstance(args["city"], str) and isinstance(args["days"], int)
    # Streamed: the id and name first, then the arguments in pieces.
    deltas = [ch.choices[0].delta.tool_calls for ch in chunks if ch.choices[0].delta.tool_calls]
    assert deltas[0][0].id == call.id and deltas[0][0].function.name == "get_weather"
    pieces = "".join(d[0].function.arguments or "" for d in deltas)
    assert pieces == call.function.arguments
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert plain.choices[0].message.tool_calls is None  # nothing asked for a tool


async def test_named_tool_choice_forces_that_tool(vllm: VllmNode) -> None:
    async with client(vllm) as c:
        r = await c.chat.completions.create(
            model=VLLM_MODEL,
            messages=HELLO,
            tools=[WEATHER],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
        )
    calls = r.choices[0].message.tool_calls
    assert calls is not None and calls[0].function.name == "get_weather"


async def test_response_format_returns_valid_json(vllm: VllmNode) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    }
    async with client(vllm) as c:
        obj = await c.chat.completions.create(
            model=VLLM_MODEL, messages=HELLO, response_format={"type": "json_object"}
        )
        typed = await c.chat.completions.create(
            model=VLLM_MODEL,
            messages=HELLO,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "person", "schema": schema},
            },
        )
    assert isinstance(json.loads(obj.choices[0].message.content or ""), dict)
    person = json.loads(typed.choices[0].message.content or "")
    assert set(person) == {"name", "age"} and isinstance(person["age"], int)


async def test_stop_string_ends_the_answer_before_it(vllm: VllmNode) -> None:
    async with client(vllm) as c:
        full = await c.completions.create(model=VLLM_MODEL, prompt="Go on", max_tokens=60)
        text = full.choices[0].text
        stop = text.split()[5]
        cut = await c.completions.create(
            model=VLLM_MODEL, prompt="Go on", max_tokens=60, stop=[stop]
        )
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].text == text[: text.index(stop)]
    assert cut.choices[0].model_extra == {"stop_reason": stop}


async def test_reasoning_model_answers_with_reasoning(start_vllm: StartVllm) -> None:
    node = await start_vllm(model="Qwen/Qwen3-0.6B")
    async with client(node) as c:
        r = await c.chat.completions.create(model="Qwen/Qwen3-0.6B", messages=HELLO)
        off = await c.chat.completions.create(
            model="Qwen/Qwen3-0.6B",
            messages=HELLO,
            extra_body={"chat_template_kwargs": {"enable_thinking": False}},
        )
    message = r.choices[0].message
    assert message.content and (message.model_extra or {}).get("reasoning")
    assert (off.choices[0].message.model_extra or {}).get("reasoning") is None


async def test_embeddings_need_an_embedding_model(start_vllm: StartVllm, vllm: VllmNode) -> None:
    node = await start_vllm(model="BAAI/bge-m3")
    async with client(node) as c:
        r = await c.embeddings.create(model="BAAI/bge-m3", input=["a llama", "an alpaca"])
        floats = await c.embeddings.create(
            model="BAAI/bge-m3", input="a llama", encoding_format="float"
        )
    assert [d.index for d in r.data] == [0, 1] and r.usage.prompt_tokens > 0
    assert len(r.data[0].embedding) == node.model.spec.embedding_length
    assert floats.data[0].embedding == pytest.approx(r.data[0].embedding, abs=1e-6)
    async with client(vllm) as c:
        with pytest.raises(openai.BadRequestError) as exc:
            await c.embeddings.create(model=VLLM_MODEL, input="x")
    assert exc.value.body == {
        "message": "The model does not support Embeddings API",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    }


async def test_tokenize_counts_what_usage_reports_and_detokenize_reverses_it(
    vllm: VllmNode,
) -> None:
    async with client(vllm) as c:
        r = await c.chat.completions.create(model=VLLM_MODEL, messages=HELLO, max_tokens=1)
    async with httpx.AsyncClient(base_url=vllm.url) as http:
        chat = (await http.post("/tokenize", json={"model": VLLM_MODEL, "messages": HELLO})).json()
        text = (await http.post("/tokenize", json={"prompt": "Hello, llamas!"})).json()
        back = await http.post("/detokenize", json={"tokens": text["tokens"]})
    assert r.usage is not None and chat["count"] == r.usage.prompt_tokens
    assert chat["max_model_len"] == vllm.model.max_model_len
    assert text["count"] == len(text["tokens"]) == 4
    assert back.json() == {"prompt": "Hello, llamas!"}


async def test_models_health_and_version(vllm: VllmNode) -> None:
    async with httpx.AsyncClient(base_url=vllm.url) as http:
        health = await http.get("/health")
        version = (await http.get("/version")).json()
        models = (await http.get("/v1/models")).json()
    assert health.status_code == 200 and health.content == b""
    assert isinstance(version["version"], str)
    (card,) = models["data"]
    assert models["object"] == "list"
    assert card["id"] == card["root"] == VLLM_MODEL and card["object"] == "model"
    assert card["owned_by"] == "vllm" and card["parent"] is None
    assert card["max_model_len"] == vllm.model.max_model_len
    assert card["permission"][0]["object"] == "model_permission"
    async with client(vllm) as c:
        assert [m.id async for m in c.models.list()] == [VLLM_MODEL]


async def test_model_may_be_omitted_and_then_means_the_served_one(vllm: VllmNode) -> None:
    async with httpx.AsyncClient(base_url=vllm.url) as http:
        r = await http.post("/v1/chat/completions", json={"messages": HELLO, "max_tokens": 2})
    assert r.status_code == 200 and r.json()["model"] == VLLM_MODEL
