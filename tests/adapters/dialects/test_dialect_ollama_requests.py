"""Ollama-dialect requests: what a client sends, and what an Ollama backend gets."""

from __future__ import annotations

import json
from typing import Any

import pytest

from corral.adapters.dialects import ollama
from corral.core.canonical import (
    ChatRequest,
    CompletionRequest,
    EmbedRequest,
    Message,
    Sampling,
    ToolCall,
)
from corral.core.errors import InvalidField


def body(**fields: Any) -> bytes:
    fields.setdefault("model", "llama3.2")
    return json.dumps(fields).encode()


# What the ollama python client sends for a tool round trip.
TOOL_CHAT = {
    "model": "llama3.2",
    "messages": [
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "Describe it", "images": ["iVBORw0KGgo="]},
        {
            "role": "assistant",
            "content": "",
            "thinking": "I should call get_weather",
            "tool_calls": [
                {"function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}}
            ],
        },
        {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
    ],
    "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}],
    "format": "json",
    "think": "high",
    "options": {
        "num_predict": 128,
        "num_ctx": 4096,
        "top_k": 20,
        "repeat_penalty": 1.05,
        "temperature": 0.7,
        "stop": ["</s>"],
        "mirostat": 1,
    },
    "keep_alive": "5m",
}


def test_parse_chat_golden_tool_conversation() -> None:
    req = ollama.parse_chat(json.dumps(TOOL_CHAT).encode())
    assert req.stream  # Ollama streams by default
    system, user, assistant, tool = req.messages
    assert system == Message("system", "Use tools.")
    assert user.images == ["iVBORw0KGgo="]
    assert assistant.thinking == "I should call get_weather"
    assert assistant.tool_calls == [ToolCall("get_weather", '{"city":"Paris","days":2}', None, 0)]
    assert tool.tool_name == "get_weather"
    s = req.sampling
    assert (s.max_tokens, s.num_ctx, s.top_k, s.repeat_penalty) == (128, 4096, 20, 1.05)
    assert s.temperature == 0.7 and s.stop == ["</s>"] and s.extra == {"mirostat": 1}
    assert req.format == "json" and req.think == "high" and req.keep_alive == "5m"


def test_stream_false_is_kept_and_name_stands_in_for_model() -> None:
    req = ollama.parse_chat(json.dumps({"name": "old", "messages": [], "stream": False}).encode())
    assert req.model == "old" and not req.stream


def test_negative_num_predict_means_no_cap() -> None:
    req = ollama.parse_chat(body(messages=[], options={"num_predict": -1}))
    assert req.sampling.max_tokens is None


def test_whole_float_options_are_integers() -> None:
    assert ollama.parse_chat(body(options={"seed": 42.0})).sampling.seed == 42


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": "x", "images": "abc"}]}, "messages[0].images"),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}],
                    }
                ]
            },
            "messages[0].tool_calls[0].function.arguments",
        ),
        ({"options": {"num_predict": "many"}}, "options.num_predict"),
        ({"options": {"temperature": True}}, "options.temperature"),
        ({"options": {"stop": "x"}}, "options.stop"),
        ({"think": "extreme"}, "think"),
        ({"format": "xml"}, "format"),
        ({"model": ""}, "model"),
        ({"stream": "yes"}, "stream"),
    ],
)
def test_bad_chat_fields_are_400s_naming_the_field(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidField) as info:
        ollama.parse_chat(body(**fields))
    assert info.value.param == param
    assert param in json.loads(info.value.ollama_body())["error"]


def test_parse_generate_golden() -> None:
    raw = body(
        prompt="Why is the sky blue?",
        system="Be short.",
        images=["/9j/4AAQ"],
        format={"type": "object"},
        think=False,
        options={"num_predict": 32},
        template="{{ .Prompt }}",
        context=[1, 2, 3],
        keep_alive=0,
    )
    req = ollama.parse_generate(raw)
    assert req.prompt == "Why is the sky blue?" and req.system == "Be short."
    assert req.images == ["/9j/4AAQ"] and req.format == {"type": "object"}
    assert req.think is False and req.sampling.max_tokens == 32
    assert req.template == "{{ .Prompt }}" and req.context == [1, 2, 3]
    assert req.keep_alive == 0 and req.stream and not req.raw


def test_parse_generate_raw_and_suffix() -> None:
    req = ollama.parse_generate(body(prompt="def f(", suffix="    return 1", raw=True))
    assert req.raw and req.suffix == "    return 1"


def test_parse_embed_current_and_legacy() -> None:
    one = ollama.parse_embed(body(input="hello", truncate=False, dimensions=8), legacy=False)
    assert one.inputs == ["hello"] and one.single and one.truncate is False and one.dimensions == 8
    many = ollama.parse_embed(body(input=["a", "b"]), legacy=False)
    assert many.inputs == ["a", "b"] and not many.single
    old = ollama.parse_embed(body(prompt="legacy"), legacy=True)
    assert old.inputs == ["legacy"] and old.single


@pytest.mark.parametrize(
    ("fields", "legacy", "param"),
    [
        ({}, False, "input"),
        ({"input": [1]}, False, "input[0]"),
        ({"input": "x", "dimensions": 0}, False, "dimensions"),
        ({}, True, "prompt"),
    ],
)
def test_bad_embed_fields_are_400s(fields: dict[str, Any], legacy: bool, param: str) -> None:
    with pytest.raises(InvalidField) as info:
        ollama.parse_embed(body(**fields), legacy=legacy)
    assert info.value.param == param


# --- bodies for an Ollama backend ---


def sent(out: ollama.Outgoing) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(out.body)
    return result


def test_chat_body_golden_from_openai_shapes() -> None:
    messages = [
        Message("user", "weather?", images=["iVBORw0KGgo="], image_urls=["https://x/y.png"]),
        Message("assistant", tool_calls=[ToolCall("get_weather", '{"city": "Paris"}', "call_1")]),
        Message("tool", "sunny", tool_call_id="call_1"),
    ]
    req = ChatRequest(
        model="m",
        messages=messages,
        stream=False,
        tool_choice="required",
        n=2,
        sampling=Sampling(max_tokens=64, temperature=0.1, stop=["x"]),
        format={"type": "object"},
        think="low",
    )
    out = ollama.chat_body(req, "llama3.2:latest")
    b = sent(out)
    assert b["model"] == "llama3.2:latest" and b["stream"] is False
    user, assistant, tool = b["messages"]
    assert user == {"role": "user", "content": "weather?", "images": ["iVBORw0KGgo="]}
    assert assistant["tool_calls"] == [
        {
            "id": "call_1",
            "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}},
        }
    ]
    assert tool == {
        "role": "tool",
        "content": "sunny",
        "tool_name": "get_weather",
        "tool_call_id": "call_1",
    }
    assert b["options"] == {"temperature": 0.1, "stop": ["x"], "num_predict": 64}
    assert b["format"] == {"type": "object"} and b["think"] == "low"
    assert sorted(out.dropped) == ["messages[0].image_urls", "n", "tool_choice"]


def test_chat_body_always_says_whether_to_stream() -> None:
    assert sent(ollama.chat_body(ChatRequest(model="m", messages=[]), "m"))["stream"] is False


@pytest.mark.parametrize("arguments", ["{not json", "[1, 2]", '"text"'])
def test_chat_body_tool_arguments_must_be_a_json_object(arguments: str) -> None:
    req = ChatRequest(
        model="m",
        messages=[
            Message("user", "x"),
            Message("assistant", tool_calls=[ToolCall("f", arguments)]),
        ],
    )
    with pytest.raises(InvalidField) as info:
        ollama.chat_body(req, "m")
    assert info.value.param == "messages[1].tool_calls[0].function.arguments"
    assert info.value.status == 400


def test_generate_body_golden() -> None:
    req = CompletionRequest(
        model="m",
        prompt="def f(",
        suffix="return 1",
        system="s",
        images=["abc"],
        sampling=Sampling(max_tokens=10, num_ctx=2048, extra={"num_gpu": 1}),
        keep_alive=-1,
        think=True,
    )
    out = ollama.generate_body(req, "codellama:7b")
    assert sent(out) == {
        "model": "codellama:7b",
        "prompt": "def f(",
        "suffix": "return 1",
        "system": "s",
        "images": ["abc"],
        "stream": False,
        "options": {"num_predict": 10, "num_ctx": 2048, "num_gpu": 1},
        "think": True,
        "keep_alive": -1,
    }
    assert out.dropped == []


def test_generate_body_raw_for_openai_completions() -> None:
    out = ollama.generate_body(CompletionRequest(model="m", prompt="abc", raw=True), "m")
    assert sent(out)["raw"] is True


def test_embed_body_sends_a_list() -> None:
    req = EmbedRequest(model="m", inputs=["x"], single=True, truncate=False, dimensions=3)
    out = ollama.embed_body(req, "m")
    assert sent(out) == {"model": "m", "input": ["x"], "truncate": False, "dimensions": 3}


def test_templated_generate_goes_to_openai_as_a_one_turn_chat() -> None:
    from corral.adapters.dialects import openai
    from corral.adapters.dialects.convert import completion_as_chat

    req = ollama.parse_generate(
        body(prompt="Why?", system="Be short.", images=["abc"], options={"num_predict": 5})
    )
    as_chat = completion_as_chat(req)
    assert [(m.role, m.content, m.images) for m in as_chat.messages] == [
        ("system", "Be short.", []),
        ("user", "Why?", ["abc"]),
    ]
    sent_body = json.loads(openai.chat_body(as_chat, "m").body)
    assert sent_body["max_tokens"] == 5 and sent_body["stream"] is True
    assert sent_body["messages"][1]["content"][1]["image_url"]["url"].endswith(",abc")


def test_outgoing_unpacks_as_body_and_dropped() -> None:
    data, dropped = ollama.chat_body(ChatRequest(model="m", messages=[], tool_choice="none"), "m")
    assert json.loads(data)["model"] == "m" and dropped == ["tool_choice"]


def test_null_message_content_reads_as_empty() -> None:
    req = ollama.parse_chat(body(messages=[{"role": "assistant", "content": None}]))
    assert req.messages[0].content == ""
