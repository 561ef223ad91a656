"""Streams in both dialects: decoders fed byte by byte and in random splits, tool-call
fragments, usage, errors, and what the encoders write."""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from typing import Any

import pytest

from corral.adapters.dialects import ollama, openai
from corral.core.canonical import Delta, Timings, ToolCall, Usage


def sse(*events: dict[str, Any] | str) -> bytes:
    return b"".join(
        b"data: " + (e.encode() if isinstance(e, str) else json.dumps(e).encode()) + b"\n\n"
        for e in events
    )


def chunk(
    delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "Qwen/Qwen3-8B",
        "choices": [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}],
        **extra,
    }


USAGE = {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}

# vLLM streaming a reasoning model that calls two tools, fragments interleaved.
VLLM_TOOL_STREAM = sse(
    chunk({"role": "assistant", "content": ""}),
    chunk({"reasoning": "Two cities"}),
    chunk({"reasoning_content": ", two calls."}),
    chunk(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "call_p",
                    "type": "function",
                    "function": {"name": "weather", "arguments": ""},
                }
            ]
        }
    ),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
    chunk(
        {
            "tool_calls": [
                {
                    "index": 1,
                    "id": "call_r",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"ci'},
                }
            ]
        }
    ),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
    chunk({"tool_calls": [{"index": 1, "function": {"arguments": 'ty": "Rome"}'}}]}),
    chunk({}, "tool_calls"),
    {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [],
        "usage": USAGE,
    },
    "[DONE]",
)

EXPECTED_TOOL_DELTAS = [
    Delta(thinking="Two cities"),
    Delta(thinking=", two calls."),
    Delta(
        tool_calls=[
            ToolCall("weather", '{"city": "Paris"}', "call_p", 0),
            ToolCall("weather", '{"city": "Rome"}', "call_r", 1),
        ],
        finish_reason="tool_calls",
        usage=Usage(12, 7),
    ),
]


def feed_in(decoder: Any, data: bytes, cuts: Iterable[int]) -> list[Delta]:
    out: list[Delta] = []
    start = 0
    for cut in [*cuts, len(data)]:
        out += decoder.feed(data[start:cut])
        start = cut
    return out + decoder.close()


def byte_by_byte(data: bytes) -> list[int]:
    return list(range(1, len(data)))


def random_cuts(data: bytes, seed: int) -> list[int]:
    rng = random.Random(seed)
    return sorted(rng.sample(range(1, len(data)), k=min(len(data) - 1, rng.randint(1, 40))))


def merged(deltas: list[Delta]) -> tuple[str, str, list[ToolCall], str | None, Usage | None]:
    text = "".join(d.content for d in deltas)
    thinking = "".join(d.thinking for d in deltas)
    calls = [c for d in deltas for c in d.tool_calls]
    finish = next((d.finish_reason for d in deltas if d.finish_reason), None)
    usage = next((d.usage for d in deltas if d.usage), None)
    return text, thinking, calls, finish, usage


def test_openai_decoder_accumulates_tool_call_fragments_whole() -> None:
    assert feed_in(openai.StreamDecoder(), VLLM_TOOL_STREAM, []) == EXPECTED_TOOL_DELTAS


@pytest.mark.parametrize("split", ["bytes", *range(8)])
def test_openai_decoder_survives_any_split(split: str | int) -> None:
    data = VLLM_TOOL_STREAM.replace(b"\n", b"\r\n") if split == 3 else VLLM_TOOL_STREAM
    cuts = byte_by_byte(data) if split == "bytes" else random_cuts(data, int(split))
    assert merged(feed_in(openai.StreamDecoder(), data, cuts)) == merged(EXPECTED_TOOL_DELTAS)


def test_openai_decoder_reads_llamacpp_completion_usage_in_the_finish_chunk() -> None:
    def text_chunk(text: str, finish: str | None = None, **extra: Any) -> dict[str, Any]:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        return {"object": "text_completion", "model": "m", "choices": [choice], **extra}

    data = sse(
        text_chunk("Once"),
        text_chunk(" upon", "length", usage=USAGE),
        {"object": "text_completion", "model": "m", "choices": [], "usage": USAGE},
        "[DONE]",
    )
    assert feed_in(openai.StreamDecoder(), data, []) == [
        Delta(content="Once"),
        Delta(content=" upon"),
        Delta(finish_reason="length", usage=Usage(12, 7)),
    ]


def test_openai_decoder_usage_without_finish_and_finish_without_usage() -> None:
    usage_only = sse({"choices": [], "usage": USAGE}, "[DONE]")
    assert feed_in(openai.StreamDecoder(), usage_only, []) == [Delta(usage=Usage(12, 7))]
    no_usage = sse(chunk({"content": "hi"}), chunk({}, "stop"), "[DONE]")
    assert feed_in(openai.StreamDecoder(), no_usage, []) == [
        Delta(content="hi"),
        Delta(finish_reason="stop"),
    ]


def test_openai_decoder_close_flushes_an_unterminated_stream() -> None:
    data = sse(
        chunk(
            {"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f", "arguments": "{}"}}]}
        )
    )
    decoder = openai.StreamDecoder()
    assert decoder.feed(data[:-2]) == []  # the event is not complete yet
    assert decoder.close() == [
        Delta(tool_calls=[ToolCall("f", "{}", "c", 0)], finish_reason="tool_calls")
    ]


def test_openai_decoder_ignores_comments_events_and_what_follows_done() -> None:
    data = b": keep-alive\n\nevent: message\nid: 1\n" + sse(
        chunk({"content": "a"}), "[DONE]", chunk({"content": "b"})
    )
    assert feed_in(openai.StreamDecoder(), data, []) == [Delta(content="a")]


def test_openai_decoder_ignores_other_choices_and_running_usage() -> None:
    other = chunk({"content": "x"})
    other["choices"][0]["index"] = 1
    running = chunk({"content": "a"}, usage=USAGE)
    assert feed_in(openai.StreamDecoder(), sse(other, running), []) == [Delta(content="a")]


@pytest.mark.parametrize(
    "event",
    [
        {"error": {"message": "boom", "type": "BadRequestError", "code": 400}},
        {"object": "error", "message": "boom"},
        {"error": "boom"},
    ],
)
def test_openai_decoder_error_events(event: dict[str, Any]) -> None:
    assert feed_in(openai.StreamDecoder(), sse(event), []) == [Delta(error="boom")]


def test_openai_decoder_malformed_event_is_an_error_delta() -> None:
    (delta,) = feed_in(openai.StreamDecoder(), b"data: {oops\n\n", [])
    assert delta.error is not None and "malformed" in delta.error


# What Ollama streams for /api/chat with a tool call in a done:false line.
OLLAMA_CHAT_STREAM = b"".join(
    json.dumps(line).encode() + b"\n"
    for line in [
        {
            "model": "llama3.2",
            "created_at": "t",
            "message": {"role": "assistant", "content": "", "thinking": "Let me"},
            "done": False,
        },
        {
            "model": "llama3.2",
            "created_at": "t",
            "message": {"role": "assistant", "content": "Checking"},
            "done": False,
        },
        {
            "model": "llama3.2",
            "created_at": "t",
            "message": {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "call_9",
                        "function": {"index": 0, "name": "weather", "arguments": {"city": "Paris"}},
                    }
                ],
            },
            "done": False,
        },
        {
            "model": "llama3.2",
            "created_at": "t",
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "stop",
            "total_duration": 10,
            "load_duration": 1,
            "prompt_eval_count": 20,
            "prompt_eval_duration": 2,
            "eval_count": 5,
            "eval_duration": 3,
        },
    ]
)

EXPECTED_OLLAMA_DELTAS = [
    Delta(thinking="Let me"),
    Delta(content="Checking"),
    Delta(tool_calls=[ToolCall("weather", '{"city":"Paris"}', "call_9", 0)]),
    Delta(finish_reason="tool_calls", usage=Usage(20, 5), timings=Timings(10, 1, 2, 3)),
]


@pytest.mark.parametrize("split", ["none", "bytes", *range(6)])
def test_ollama_decoder_survives_any_split(split: str | int) -> None:
    if split == "none":
        cuts: list[int] = []
    elif split == "bytes":
        cuts = byte_by_byte(OLLAMA_CHAT_STREAM)
    else:
        cuts = random_cuts(OLLAMA_CHAT_STREAM, int(split))
    assert feed_in(ollama.StreamDecoder("chat"), OLLAMA_CHAT_STREAM, cuts) == EXPECTED_OLLAMA_DELTAS


def test_ollama_decoder_generate_and_unterminated_last_line() -> None:
    data = (
        b'{"model":"m","response":"Hi","done":false}\n'
        b'{"model":"m","response":"","done":true,"done_reason":"length","eval_count":1}'
    )
    assert feed_in(ollama.StreamDecoder("completion"), data, []) == [
        Delta(content="Hi"),
        Delta(finish_reason="length", usage=Usage(0, 1)),
    ]


def test_ollama_decoder_error_line() -> None:
    data = b'{"model":"m","response":"a","done":false}\n{"error":"out of memory"}\n'
    assert feed_in(ollama.StreamDecoder("completion"), data, []) == [
        Delta(content="a"),
        Delta(error="out of memory"),
    ]


# --- encoders ---


def events(data: bytes) -> list[Any]:
    assert data.endswith(b"\n\n")
    return [
        e if e == "[DONE]" else json.loads(e)
        for e in (x.removeprefix(b"data: ").decode() for x in data.split(b"\n\n")[:-1])
    ]


def test_openai_encoder_chat_golden() -> None:
    enc = openai.StreamEncoder(
        "chat", id="chatcmpl-5", created=9, model="llama3.2", include_usage=True
    )
    out = b"".join(
        [
            enc.encode(Delta(thinking="hm")),
            enc.encode(Delta(content="Hi")),
            enc.encode(Delta(tool_calls=[ToolCall("f", '{"a":1}')])),
            enc.encode(Delta(finish_reason="stop", usage=Usage(3, 4))),
            enc.end(),
        ]
    )
    evs = events(out)
    head = {
        "id": "chatcmpl-5",
        "object": "chat.completion.chunk",
        "created": 9,
        "model": "llama3.2",
    }
    call_id = evs[2]["choices"][0]["delta"]["tool_calls"][0]["id"]
    assert evs == [
        {
            **head,
            "choices": [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": "", "reasoning_content": "hm"},
                    "logprobs": None,
                    "finish_reason": None,
                }
            ],
        },
        {
            **head,
            "choices": [
                {"index": 0, "delta": {"content": "Hi"}, "logprobs": None, "finish_reason": None}
            ],
        },
        {
            **head,
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": call_id,
                                "type": "function",
                                "function": {"name": "f", "arguments": '{"a":1}'},
                            }
                        ]
                    },
                    "logprobs": None,
                    "finish_reason": None,
                }
            ],
        },
        {
            **head,
            "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "tool_calls"}],
        },
        {
            **head,
            "choices": [],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
        },
        "[DONE]",
    ]


def test_openai_encoder_usage_only_when_asked() -> None:
    enc = openai.StreamEncoder("chat", id="x", created=0, model="m", include_usage=False)
    evs = events(enc.encode(Delta(content="a", finish_reason="length", usage=Usage(1, 1))))
    assert len(evs) == 1 and evs[0]["choices"][0]["finish_reason"] == "length"
    assert evs[0]["choices"][0]["delta"] == {"role": "assistant", "content": "a"}


def test_openai_encoder_completion_chunks() -> None:
    enc = openai.StreamEncoder("completion", id="cmpl-1", created=0, model="m", include_usage=True)
    evs = events(
        enc.encode(Delta(content="Once"))
        + enc.encode(Delta(finish_reason="length"))
        + enc.encode(Delta(usage=Usage(2, 2)))
    )
    assert [e["object"] for e in evs] == ["text_completion"] * 3
    assert evs[0]["choices"] == [
        {"index": 0, "text": "Once", "logprobs": None, "finish_reason": None}
    ]
    assert evs[1]["choices"][0]["finish_reason"] == "length"
    assert evs[2]["choices"] == [] and evs[2]["usage"]["total_tokens"] == 4


def test_openai_encoder_skips_empty_deltas_and_writes_errors() -> None:
    enc = openai.StreamEncoder("chat", id="x", created=0, model="m", include_usage=True)
    assert enc.encode(Delta()) == b""
    assert events(enc.encode(Delta(error="backend died"))) == [
        {"error": {"message": "backend died", "type": "server_error", "param": None, "code": None}}
    ]


def lines(data: bytes) -> list[dict[str, Any]]:
    assert data.endswith(b"\n")
    return [json.loads(x) for x in data.splitlines()]


def test_ollama_encoder_chat_golden_with_usage_arriving_after_finish() -> None:
    enc = ollama.StreamEncoder("chat", model="qwen3", created_at="2025-01-01T00:00:00Z")
    out = b"".join(
        [
            enc.encode(Delta(thinking="hm")),
            enc.encode(Delta(content="Hi")),
            enc.encode(
                Delta(finish_reason="tool_calls", tool_calls=[ToolCall("f", '{"a": 1}', "c1")])
            ),
            enc.encode(Delta(usage=Usage(3, 4))),
            enc.end(),
        ]
    )
    head = {"model": "qwen3", "created_at": "2025-01-01T00:00:00Z"}
    assert lines(out) == [
        {**head, "message": {"role": "assistant", "content": "", "thinking": "hm"}, "done": False},
        {**head, "message": {"role": "assistant", "content": "Hi"}, "done": False},
        {
            **head,
            "message": {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {"id": "c1", "function": {"index": 0, "name": "f", "arguments": {"a": 1}}}
                ],
            },
            "done": False,
        },
        {
            **head,
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": "stop",
            "prompt_eval_count": 3,
            "eval_count": 4,
        },
    ]


def test_ollama_encoder_generate_end_writes_the_owed_final_line() -> None:
    enc = ollama.StreamEncoder("completion", model="m", created_at="t0")
    first = lines(enc.encode(Delta(content="a")))
    enc.created_at = "t1"
    final = lines(enc.encode(Delta(finish_reason="length")) + enc.end())
    assert first == [{"model": "m", "created_at": "t0", "response": "a", "done": False}]
    assert final == [
        {"model": "m", "created_at": "t1", "response": "", "done": True, "done_reason": "length"}
    ]
    assert enc.end() == b""


def test_ollama_encoder_error_line_and_bad_backend_arguments() -> None:
    enc = ollama.StreamEncoder("chat", model="m", created_at="t")
    assert lines(enc.encode(Delta(error="boom"))) == [{"error": "boom"}]
    (line,) = lines(enc.encode(Delta(tool_calls=[ToolCall("f", "not json")])))
    assert "not a JSON object" in line["error"]


def test_translated_stream_ollama_backend_to_openai_client() -> None:
    decoder = ollama.StreamDecoder("chat")
    enc = openai.StreamEncoder(
        "chat", id="chatcmpl-2", created=0, model="llama3.2", include_usage=True
    )
    out = b"".join(enc.encode(d) for d in feed_in(decoder, OLLAMA_CHAT_STREAM, [])) + enc.end()
    back = feed_in(openai.StreamDecoder(), out, [])
    text, thinking, calls, finish, usage = merged(back)
    assert (text, thinking, finish, usage) == ("Checking", "Let me", "tool_calls", Usage(20, 5))
    assert [(c.name, json.loads(c.arguments), c.id) for c in calls] == [
        ("weather", {"city": "Paris"}, "call_9")
    ]


def test_openai_decoder_whole_calls_reusing_an_index_stay_apart() -> None:
    def whole(call_id: str, name: str) -> dict[str, Any]:
        fn = {"name": name, "arguments": "{}"}
        return chunk(
            {"tool_calls": [{"index": 0, "id": call_id, "type": "function", "function": fn}]}
        )

    data = sse(whole("call_a", "f"), whole("call_b", "g"), chunk({}, "tool_calls"), "[DONE]")
    (delta,) = feed_in(openai.StreamDecoder(), data, [])
    assert delta.tool_calls == [ToolCall("f", "{}", "call_a", 0), ToolCall("g", "{}", "call_b", 1)]
