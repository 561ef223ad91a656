"""OpenAI-dialect requests: what a client sends, and what an OpenAI-kind backend gets."""

from __future__ import annotations

import json
from typing import Any

import pytest

from corral.adapters.dialects import openai
from corral.core.canonical import ChatRequest, CompletionRequest, EmbedRequest, Message, ToolCall
from corral.core.errors import BadRequest, InvalidField, InvalidJSON


def body(**fields: Any) -> bytes:
    return json.dumps(fields).encode()


def chat(**fields: Any) -> bytes:
    fields.setdefault("model", "qwen3:8b")
    fields.setdefault("messages", [{"role": "user", "content": "hi"}])
    return body(**fields)


# A realistic tool-using conversation, as the openai client sends it.
TOOL_CHAT = {
    "model": "qwen3:8b",
    "messages": [
        {"role": "developer", "content": "You answer with tools."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in this picture,"},
                {"type": "text", "text": "and the weather there?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_abc",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_abc", "content": "sunny, 21C"},
    ],
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ],
    "tool_choice": "auto",
    "stream": True,
    "stream_options": {"include_usage": True},
    "max_completion_tokens": 256,
    "temperature": 0.2,
    "stop": "END",
    "seed": 7,
    "reasoning_effort": "low",
    "response_format": {"type": "json_object"},
    "logprobs": False,
    "user": "someone",
}


def test_parse_chat_golden_tool_conversation() -> None:
    req = openai.parse_chat(json.dumps(TOOL_CHAT).encode())
    assert req.model == "qwen3:8b"
    assert req.stream and req.include_usage
    system, user, assistant, tool = req.messages
    assert system == Message(role="system", content="You answer with tools.")
    assert user.content == "What is in this picture,\nand the weather there?"
    assert user.images == ["iVBORw0KGgo="]
    assert user.image_urls == ["https://example.com/a.jpg"]
    assert assistant.content == ""
    assert assistant.tool_calls == [ToolCall("get_weather", '{"city": "Paris"}', "call_abc", 0)]
    assert tool.tool_call_id == "call_abc" and tool.content == "sunny, 21C"
    assert req.sampling.max_tokens == 256
    assert req.sampling.stop == ["END"]
    assert req.sampling.temperature == 0.2 and req.sampling.seed == 7
    assert req.think == "low"
    assert req.format == "json"
    assert req.tool_choice == "auto" and req.tools is not None


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    req = openai.parse_chat(chat(max_tokens=10, max_completion_tokens=20))
    assert req.sampling.max_tokens == 20
    assert openai.parse_chat(chat(max_tokens=10)).sampling.max_tokens == 10


def test_include_usage_counts_only_when_streaming() -> None:
    req = openai.parse_chat(chat(stream=False, stream_options={"include_usage": True}))
    assert not req.include_usage


def test_json_schema_response_format_becomes_the_schema() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    rf = {"type": "json_schema", "json_schema": {"name": "thing", "schema": schema}}
    assert openai.parse_chat(chat(response_format=rf)).format == schema
    assert openai.parse_chat(chat(response_format={"type": "text"})).format is None


@pytest.mark.parametrize(
    ("fields", "think"),
    [
        ({"reasoning_effort": "none"}, False),
        ({"reasoning_effort": "minimal"}, "low"),
        ({"reasoning_effort": "high"}, "high"),
        ({"reasoning_effort": "xhigh"}, "max"),
        ({"reasoning": {"effort": "medium"}, "reasoning_effort": "low"}, "medium"),
        ({}, None),
    ],
)
def test_reasoning_effort_maps_to_think(fields: dict[str, Any], think: object) -> None:
    assert openai.parse_chat(chat(**fields)).think == think


def test_tool_message_name_and_object_arguments_are_kept() -> None:
    messages = [
        {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": {"x": 1}}}]},
        {"role": "tool", "name": "f", "content": "42"},
    ]
    req = openai.parse_chat(chat(messages=messages))
    assert req.messages[0].tool_calls[0].arguments == '{"x":1}'
    assert req.messages[1].tool_name == "f"


def test_assistant_reasoning_in_history_becomes_thinking() -> None:
    messages = [{"role": "assistant", "content": "4", "reasoning_content": "2+2"}]
    assert openai.parse_chat(chat(messages=messages)).messages[0].thinking == "2+2"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"messages": [{"role": "user"}]}, "messages[0].content"),
        ({"messages": [{"role": "function", "content": "x"}]}, "messages[0].role"),
        (
            {
                "messages": [
                    {"role": "user", "content": "a"},
                    {"role": "user", "content": [{"type": "input_audio"}]},
                ]
            },
            "messages[1].content[0].type",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}],
                    }
                ]
            },
            "messages[0].content[0].image_url",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": "data:image/png,raw"}],
                    }
                ]
            },
            "messages[0].content[0].image_url",
        ),
        ({"n": 0}, "n"),
        ({"n": "two"}, "n"),
        ({"max_tokens": -1}, "max_tokens"),
        ({"stop": 3}, "stop"),
        ({"temperature": "hot"}, "temperature"),
        ({"messages": []}, "messages"),
        ({"model": ""}, "model"),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema.schema"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
        ({"reasoning": {"effort": "extreme"}}, "reasoning.effort"),
        ({"stream_options": {"include_usage": "yes"}}, "stream_options.include_usage"),
    ],
)
def test_bad_chat_fields_are_400s_naming_the_field(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidField) as info:
        openai.parse_chat(chat(**fields))
    assert info.value.status == 400
    assert info.value.param == param
    assert json.loads(info.value.openai_body())["error"]["param"] == param


def test_missing_model_names_model() -> None:
    with pytest.raises(InvalidField) as info:
        openai.parse_chat(body(messages=[{"role": "user", "content": "hi"}]))
    assert info.value.param == "model"


def test_empty_and_broken_bodies_are_400s() -> None:
    with pytest.raises(BadRequest):
        openai.parse_chat(b"  ")
    with pytest.raises(InvalidJSON):
        openai.parse_chat(b'{"model": ')


def test_unknown_fields_are_ignored() -> None:
    assert openai.parse_chat(chat(frobnicate=True, logit_bias={"1": 2})).model == "qwen3:8b"


def test_parse_completion_golden() -> None:
    raw = body(
        model="codellama",
        prompt=["def add(a, b):"],
        max_tokens=64,
        stop=["\n\n"],
        stream=True,
        stream_options={"include_usage": True},
        top_p=0.9,
        echo=False,
    )
    req = openai.parse_completion(raw)
    assert req.prompt == "def add(a, b):"
    assert req.raw  # OpenAI completions continue the text as written
    assert req.sampling.max_tokens == 64 and req.sampling.stop == ["\n\n"]
    assert req.stream and req.include_usage and req.sampling.top_p == 0.9


def test_completion_with_suffix_is_not_raw() -> None:
    req = openai.parse_completion(body(model="m", prompt="def f(", suffix="return x"))
    assert req.suffix == "return x" and not req.raw


@pytest.mark.parametrize("prompt", [[1, 2, 3], [[1, 2]], ["a", "b"], [], 5, None])
def test_completion_prompt_must_be_one_string(prompt: object) -> None:
    with pytest.raises(InvalidField) as info:
        openai.parse_completion(body(model="m", prompt=prompt))
    assert info.value.param == "prompt"


def test_parse_embed_string_and_list() -> None:
    one = openai.parse_embed(body(model="nomic", input="hello", dimensions=256))
    assert one.inputs == ["hello"] and one.single and one.dimensions == 256
    many = openai.parse_embed(body(model="nomic", input=["a", "b"], encoding_format="base64"))
    assert many.inputs == ["a", "b"] and not many.single and many.encoding_format == "base64"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"input": [1, 2]}, "input"),
        ({"input": [[1, 2]]}, "input"),
        ({"input": []}, "input"),
        ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"input": "x", "dimensions": 0}, "dimensions"),
    ],
)
def test_bad_embed_fields_are_400s(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidField) as info:
        openai.parse_embed(body(model="m", **fields))
    assert info.value.param == param


# --- bodies for an OpenAI-kind backend ---


def sent(out: openai.Outgoing) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(out.body)
    return result


def test_chat_body_streams_always_ask_for_usage() -> None:
    req = ChatRequest(model="m", messages=[Message("user", "hi")], stream=True)
    b = sent(openai.chat_body(req, "served-name"))
    assert b["model"] == "served-name"
    assert b["stream"] is True and b["stream_options"] == {"include_usage": True}
    plain = sent(openai.chat_body(ChatRequest(model="m", messages=[]), "m"))
    assert plain["stream"] is False and "stream_options" not in plain


def test_chat_body_images_become_data_uri_parts() -> None:
    msg = Message("user", "what is this?", images=["/9j/4AAQ"], image_urls=["https://x/y.png"])
    b = sent(openai.chat_body(ChatRequest(model="m", messages=[msg]), "m"))
    assert b["messages"][0]["content"] == [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}},
        {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
    ]


def test_chat_body_gives_ollama_tool_calls_ids_and_links_results_by_name() -> None:
    messages = [
        Message("user", "weather in Paris and Rome?"),
        Message(
            "assistant",
            tool_calls=[ToolCall("weather", '{"city":"Paris"}'), ToolCall("time", "{}")],
        ),
        Message("tool", "12:00", tool_name="time"),
        Message("tool", "sunny", tool_name="weather"),
    ]
    b = sent(openai.chat_body(ChatRequest(model="m", messages=messages), "m"))
    calls = b["messages"][1]["tool_calls"]
    assert b["messages"][1]["content"] is None
    assert [c["function"]["name"] for c in calls] == ["weather", "time"]
    assert all(c["id"].startswith("call_") and c["type"] == "function" for c in calls)
    assert calls[0]["function"]["arguments"] == '{"city":"Paris"}'
    assert b["messages"][2]["tool_call_id"] == calls[1]["id"]
    assert b["messages"][3]["tool_call_id"] == calls[0]["id"]


def test_chat_body_maps_ollama_options_and_reports_what_it_drops() -> None:
    from corral.core.canonical import Sampling

    sampling = Sampling(
        temperature=0.5,
        top_k=40,
        max_tokens=100,
        repeat_penalty=1.1,
        num_ctx=8192,
        stop=["x"],
        extra={"min_p": 0.05, "mirostat": 2},
    )
    req = ChatRequest(
        model="m",
        messages=[Message("assistant", "ok", thinking="hmm")],
        sampling=sampling,
        keep_alive="10m",
        think=True,
        format={"type": "object"},
    )
    out = openai.chat_body(req, "m")
    b = sent(out)
    assert b["max_tokens"] == 100 and b["temperature"] == 0.5 and b["top_k"] == 40
    assert b["repetition_penalty"] == 1.1 and b["repeat_penalty"] == 1.1
    assert b["min_p"] == 0.05 and b["stop"] == ["x"]
    assert b["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": {"type": "object"}},
    }
    assert "reasoning_effort" not in b
    assert sorted(out.dropped) == sorted(
        ["options.num_ctx", "options.mirostat", "keep_alive", "think", "messages[0].thinking"]
    )


@pytest.mark.parametrize(("think", "effort"), [("low", "low"), ("high", "high"), ("max", "high")])
def test_chat_body_think_levels_become_reasoning_effort(think: str, effort: str) -> None:
    out = openai.chat_body(ChatRequest(model="m", messages=[], think=think), "m")
    assert sent(out)["reasoning_effort"] == effort and out.dropped == []


def test_completion_body_lifts_vllms_16_token_default() -> None:
    req = CompletionRequest(model="m", prompt="Once", stream=True)
    b = sent(openai.completion_body(req, "m"))
    assert b["prompt"] == "Once" and b["max_tokens"] is None
    assert b["stream_options"] == {"include_usage": True}


def test_completion_body_reports_ollama_only_fields() -> None:
    req = CompletionRequest(
        model="m",
        prompt="p",
        system="s",
        images=["abc"],
        template="{{ .Prompt }}",
        context=[1, 2],
        keep_alive=0,
        think=True,
        format="json",
    )
    out = openai.completion_body(req, "m")
    assert sent(out)["response_format"] == {"type": "json_object"}
    assert sorted(out.dropped) == sorted(
        ["system", "images", "template", "context", "keep_alive", "think"]
    )


def test_embed_body_asks_floats_and_drops_truncate() -> None:
    req = EmbedRequest(
        model="m", inputs=["a"], dimensions=64, truncate=True, encoding_format="base64"
    )
    out = openai.embed_body(req, "m")
    assert sent(out) == {"model": "m", "input": ["a"], "encoding_format": "float", "dimensions": 64}
    assert out.dropped == ["truncate"]
