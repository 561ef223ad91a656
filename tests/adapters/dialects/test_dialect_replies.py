"""Whole answers in both dialects, embeddings, and the finish/done reason table."""

from __future__ import annotations

import json
from typing import Any

import pytest

from corral.adapters.dialects import ollama, openai, reasons
from corral.adapters.dialects.common import base64_to_floats, floats_to_base64
from corral.core.canonical import EmbedReply, Reply, Timings, ToolCall, Usage
from corral.core.errors import UpstreamError

# What vLLM answers for a reasoning model that called a tool.
VLLM_CHAT = {
    "id": "chatcmpl-9f2",
    "object": "chat.completion",
    "created": 1_720_000_000,
    "model": "Qwen/Qwen3-8B",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "reasoning": "The user wants weather.",
                "tool_calls": [
                    {
                        "id": "chatcmpl-tool-1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
            "stop_reason": None,
        }
    ],
    "usage": {"prompt_tokens": 57, "total_tokens": 80, "completion_tokens": 23},
}

# What Ollama answers on /api/chat with stream false.
OLLAMA_CHAT = {
    "model": "llama3.2",
    "created_at": "2025-01-01T00:00:00.000Z",
    "message": {
        "role": "assistant",
        "content": "",
        "thinking": "Weather needs a tool.",
        "tool_calls": [
            {
                "id": "call_x1",
                "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}},
            }
        ],
    },
    "done_reason": "stop",
    "done": True,
    "total_duration": 5_000_000,
    "load_duration": 1_000,
    "prompt_eval_count": 26,
    "prompt_eval_duration": 2_000,
    "eval_count": 12,
    "eval_duration": 3_000,
}


def js(value: Any) -> bytes:
    return json.dumps(value).encode()


def test_openai_parse_reply_reads_reasoning_tool_calls_and_usage() -> None:
    reply = openai.parse_reply(js(VLLM_CHAT))
    assert reply.model == "Qwen/Qwen3-8B" and reply.created == 1_720_000_000
    assert reply.content == "" and reply.thinking == "The user wants weather."
    assert reply.tool_calls == [ToolCall("get_weather", '{"city": "Paris"}', "chatcmpl-tool-1", 0)]
    assert reply.finish_reason == "tool_calls"
    assert reply.usage == Usage(57, 23)


def test_openai_parse_reply_reads_reasoning_content_and_missing_usage() -> None:
    answer = {
        "model": "m",
        "choices": [
            {"message": {"content": "4", "reasoning_content": "2+2"}, "finish_reason": "length"}
        ],
    }
    reply = openai.parse_reply(js(answer))
    assert reply.thinking == "2+2" and reply.finish_reason == "length" and reply.usage is None


def test_openai_parse_reply_reads_completions() -> None:
    answer = {
        "object": "text_completion",
        "model": "m",
        "choices": [{"index": 0, "text": " world", "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": None},
    }
    reply = openai.parse_reply(js(answer))
    assert reply.content == " world" and reply.usage == Usage(1, 0)


@pytest.mark.parametrize(
    "answer",
    [
        {"error": {"message": "boom", "type": "server_error"}},
        {"object": "error", "message": "boom", "code": 400},
        {"error": "boom"},
    ],
)
def test_openai_error_answers_raise_upstream_errors(answer: dict[str, Any]) -> None:
    with pytest.raises(UpstreamError, match="boom"):
        openai.parse_reply(js(answer))


def test_malformed_backend_json_is_an_upstream_error() -> None:
    with pytest.raises(UpstreamError):
        openai.parse_reply(b"<html>")
    with pytest.raises(UpstreamError):
        ollama.parse_reply(b"{", kind="chat")


def test_ollama_parse_reply_chat() -> None:
    reply = ollama.parse_reply(js(OLLAMA_CHAT), kind="chat")
    assert reply.thinking == "Weather needs a tool."
    assert reply.tool_calls == [ToolCall("get_weather", '{"city":"Paris"}', "call_x1", 0)]
    assert reply.finish_reason == "tool_calls"  # Ollama says stop; the calls say more
    assert reply.usage == Usage(26, 12)
    assert reply.timings == Timings(5_000_000, 1_000, 2_000, 3_000)


def test_ollama_parse_reply_generate() -> None:
    answer = {
        "model": "m",
        "response": "Blue.",
        "done": True,
        "done_reason": "length",
        "eval_count": 2,
    }
    reply = ollama.parse_reply(js(answer), kind="completion")
    assert reply.content == "Blue." and reply.finish_reason == "length"
    assert reply.usage == Usage(0, 2)


def test_ollama_error_answer_raises() -> None:
    with pytest.raises(UpstreamError, match="not found"):
        ollama.parse_reply(js({"error": 'model "x" not found'}), kind="chat")


def test_openai_render_chat_golden() -> None:
    reply = Reply(
        model="llama3.2",
        thinking="hmm",
        tool_calls=[ToolCall("get_weather", '{"city":"Paris"}')],
        finish_reason="stop",
        usage=Usage(26, 12),
    )
    out = json.loads(
        openai.render_reply(reply, kind="chat", id="chatcmpl-7", created=1_700_000_000)
    )
    call = out["choices"][0]["message"]["tool_calls"][0]
    assert call["id"].startswith("call_")
    assert out == {
        "id": "chatcmpl-7",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "llama3.2",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "reasoning_content": "hmm",
                    "tool_calls": [
                        {
                            "id": call["id"],
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        }
                    ],
                },
                "logprobs": None,
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 26, "completion_tokens": 12, "total_tokens": 38},
    }


def test_openai_render_ids_are_stable_per_answer() -> None:
    reply = Reply(model="m", tool_calls=[ToolCall("f"), ToolCall("g")])
    a = json.loads(openai.render_reply(reply, kind="chat", id="chatcmpl-1", created=0))
    b = json.loads(openai.render_reply(reply, kind="chat", id="chatcmpl-1", created=0))
    ids = [c["id"] for c in a["choices"][0]["message"]["tool_calls"]]
    assert ids == [c["id"] for c in b["choices"][0]["message"]["tool_calls"]]
    assert len(set(ids)) == 2


def test_openai_render_completion_golden() -> None:
    reply = Reply(model="m", content=" world", finish_reason="length", usage=Usage(3, 16))
    out = json.loads(openai.render_reply(reply, kind="completion", id="cmpl-1", created=5))
    assert out["object"] == "text_completion"
    assert out["choices"] == [
        {"index": 0, "text": " world", "logprobs": None, "finish_reason": "length"}
    ]
    assert out["usage"]["total_tokens"] == 19


def test_ollama_render_chat_golden() -> None:
    reply = Reply(
        model="qwen3:8b",
        content="Sunny.",
        thinking="easy",
        finish_reason="length",
        usage=Usage(10, 3),
        timings=Timings(total_duration=99),
    )
    out = json.loads(ollama.render_reply(reply, kind="chat", created_at="2025-01-01T00:00:00Z"))
    assert out == {
        "model": "qwen3:8b",
        "created_at": "2025-01-01T00:00:00Z",
        "message": {"role": "assistant", "content": "Sunny.", "thinking": "easy"},
        "done": True,
        "done_reason": "length",
        "total_duration": 99,
        "prompt_eval_count": 10,
        "eval_count": 3,
    }


def test_ollama_render_tool_calls_are_objects_and_done_reason_stop() -> None:
    reply = Reply(
        model="m", tool_calls=[ToolCall("f", '{"a": [1]}', "call_1")], finish_reason="tool_calls"
    )
    out = json.loads(ollama.render_reply(reply, kind="chat", created_at="t"))
    assert out["message"]["tool_calls"] == [
        {"id": "call_1", "function": {"index": 0, "name": "f", "arguments": {"a": [1]}}}
    ]
    assert out["done_reason"] == "stop"


def test_ollama_render_refuses_backend_arguments_that_are_not_objects() -> None:
    reply = Reply(model="m", tool_calls=[ToolCall("f", "[1]")])
    with pytest.raises(UpstreamError):
        ollama.render_reply(reply, kind="chat", created_at="t")


def test_ollama_render_generate() -> None:
    out = json.loads(
        ollama.render_reply(Reply(model="m", content="Hi"), kind="completion", created_at="t")
    )
    assert out == {
        "model": "m",
        "created_at": "t",
        "response": "Hi",
        "done": True,
        "done_reason": "stop",
    }


# --- embeddings ---


def test_float32_base64_is_little_endian() -> None:
    # 1.0 as little-endian float32 is 00 00 80 3f.
    assert floats_to_base64([1.0]) == "AACAPw=="
    assert base64_to_floats("AACAPw==") == [1.0]


def test_openai_embed_reply_round_trip_both_encodings() -> None:
    r = EmbedReply(model="nomic", embeddings=[[0.5, -1.0], [2.0, 0.25]], prompt_tokens=4)
    for fmt in ("float", "base64"):
        rendered = openai.render_embed_reply(r, encoding_format=fmt)
        assert openai.parse_embed_reply(rendered) == r
    doc = json.loads(openai.render_embed_reply(r, encoding_format="base64"))
    assert doc["data"][1] == {
        "object": "embedding",
        "embedding": floats_to_base64([2.0, 0.25]),
        "index": 1,
    }
    assert doc["usage"] == {"prompt_tokens": 4, "total_tokens": 4}


def test_openai_embed_reply_orders_by_index() -> None:
    answer = {
        "model": "m",
        "data": [{"embedding": [2.0], "index": 1}, {"embedding": [1.0], "index": 0}],
    }
    assert openai.parse_embed_reply(js(answer)).embeddings == [[1.0], [2.0]]


def test_ollama_embed_replies_current_and_legacy() -> None:
    r = ollama.parse_embed_reply(
        js({"model": "m", "embeddings": [[0.1, 0.2]], "prompt_eval_count": 2})
    )
    assert r == EmbedReply("m", [[0.1, 0.2]], 2)
    assert ollama.parse_embed_reply(js({"embedding": [0.3]})).embeddings == [[0.3]]
    assert json.loads(ollama.render_embed_reply(r, legacy=False)) == {
        "model": "m",
        "embeddings": [[0.1, 0.2]],
        "prompt_eval_count": 2,
    }
    assert json.loads(ollama.render_embed_reply(r, legacy=True)) == {"embedding": [0.1, 0.2]}


# --- one table for finish and done reasons ---


@pytest.mark.parametrize(
    ("openai_reason", "canonical"),
    [
        ("stop", "stop"),
        ("length", "length"),
        ("tool_calls", "tool_calls"),
        ("content_filter", "content_filter"),
        ("function_call", "tool_calls"),
        ("abort", "stop"),
        (None, None),
    ],
)
def test_openai_reasons_in(openai_reason: str | None, canonical: str | None) -> None:
    assert reasons.from_openai(openai_reason) == canonical


@pytest.mark.parametrize(
    ("canonical", "ollama_reason", "openai_reason"),
    [
        ("stop", "stop", "stop"),
        ("length", "length", "length"),
        ("tool_calls", "stop", "tool_calls"),
        ("content_filter", "stop", "content_filter"),
        ("load", "load", "stop"),
        ("unload", "unload", "stop"),
    ],
)
def test_reasons_out(canonical: str, ollama_reason: str, openai_reason: str) -> None:
    assert reasons.to_ollama(canonical) == ollama_reason
    assert reasons.to_openai(canonical) == openai_reason


def test_ollama_stop_with_tool_calls_is_tool_calls() -> None:
    assert reasons.from_ollama("stop", tool_calls=True) == "tool_calls"
    assert reasons.from_ollama("length", tool_calls=True) == "length"
    assert reasons.from_ollama(None) == "stop"
    assert reasons.from_ollama("load") == "load"
    assert reasons.to_openai("stop", tool_calls=True) == "tool_calls"
