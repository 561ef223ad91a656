"""Properties: translating through the canonical types and back keeps what both
dialects can say — content, images, tool calls (name and parsed arguments), usage —
for requests, whole answers and streams split anywhere."""

from __future__ import annotations

import base64
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from corral.adapters.dialects import ollama, openai
from corral.core.canonical import ChatRequest, Delta, Message, Reply, ToolCall, Usage

# Deterministic and quick: the same examples on every run, no deadline flakiness.
FAST = settings(max_examples=60, derandomize=True, deadline=None, database=None)

text = st.text(max_size=24)
names = st.from_regex(r"[a-z][a-z_]{0,9}", fullmatch=True)
images = st.lists(
    st.binary(min_size=1, max_size=12).map(lambda b: base64.b64encode(b).decode()), max_size=2
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**9), 10**9) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
arguments = st.dictionaries(st.text(max_size=6), json_values, max_size=3)
usages = st.builds(Usage, st.integers(0, 10**6), st.integers(0, 10**6))


def calls_of(m: Message) -> list[tuple[str, Any]]:
    return [(c.name, json.loads(c.arguments)) for c in m.tool_calls]


def essence(messages: list[Message]) -> list[tuple[Any, ...]]:
    return [(m.role, m.content, m.images, calls_of(m), m.tool_name) for m in messages]


@st.composite
def conversations(draw: st.DrawFn) -> list[Message]:
    """Turns of user text and images, assistant tool calls, and their results by name."""
    messages = [Message("system", draw(text))] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(1, 3))):
        messages.append(Message("user", draw(text), images=draw(images)))
        called = draw(st.lists(st.tuples(names, arguments), max_size=2))
        if not called:
            messages.append(Message("assistant", draw(text)))
            continue
        calls = [ToolCall(n, json.dumps(a), None, j) for j, (n, a) in enumerate(called)]
        messages.append(Message("assistant", draw(text), tool_calls=calls))
        for n, _ in draw(st.permutations(called)):
            messages.append(Message("tool", draw(text), tool_name=n))
    return messages


def openai_client_body(messages: list[Message]) -> bytes:
    """The conversation as an OpenAI client writes it: parts for images, ids on calls."""
    out: list[dict[str, Any]] = []
    n = 0
    answers: dict[str, list[str]] = {}
    for m in messages:
        msg: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.images:
            parts: list[dict[str, Any]] = [{"type": "text", "text": m.content}] if m.content else []
            for b64 in m.images:
                parts.append(
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64}"}}
                )
            msg["content"] = parts
        if m.tool_calls:
            msg["tool_calls"] = []
            for c in m.tool_calls:
                n += 1
                answers.setdefault(c.name, []).append(f"call_{n}")
                fn = {"name": c.name, "arguments": c.arguments}
                msg["tool_calls"].append({"id": f"call_{n}", "type": "function", "function": fn})
        if m.role == "tool":
            msg["tool_call_id"] = answers[m.tool_name or ""].pop(0)
        out.append(msg)
    return json.dumps({"model": "m", "messages": out}).encode()


def ollama_client_body(messages: list[Message]) -> bytes:
    """The conversation as an Ollama client writes it: object arguments, no ids."""
    out: list[dict[str, Any]] = []
    for m in messages:
        msg: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.images:
            msg["images"] = m.images
        if m.tool_calls:
            msg["tool_calls"] = [
                {"function": {"name": c.name, "arguments": json.loads(c.arguments)}}
                for c in m.tool_calls
            ]
        if m.tool_name:
            msg["tool_name"] = m.tool_name
        out.append(msg)
    return json.dumps({"model": "m", "messages": out, "stream": False}).encode()


@FAST
@given(conversations())
def test_openai_to_ollama_to_openai_keeps_the_conversation(messages: list[Message]) -> None:
    first = openai.parse_chat(openai_client_body(messages))
    middle = ollama.parse_chat(ollama.chat_body(first, "m").body)
    last = openai.parse_chat(openai.chat_body(middle, "m").body)
    # OpenAI results are linked by id; on the Ollama leg they also gain the call's name.
    assert essence(middle.messages) == essence(messages)
    assert [m.tool_call_id for m in last.messages] == [m.tool_call_id for m in first.messages]
    assert [c.id for m in last.messages for c in m.tool_calls] == [
        c.id for m in first.messages for c in m.tool_calls
    ]
    assert [e[:4] for e in essence(last.messages)] == [e[:4] for e in essence(messages)]


@FAST
@given(conversations())
def test_ollama_to_openai_to_ollama_keeps_the_conversation(messages: list[Message]) -> None:
    first = ollama.parse_chat(ollama_client_body(messages))
    middle = openai.parse_chat(openai.chat_body(first, "m").body)
    last = ollama.parse_chat(ollama.chat_body(middle, "m").body)
    assert essence(first.messages) == essence(messages)
    # Results named only by tool_name come back named, via the ids made on the way.
    assert essence(last.messages) == essence(messages)
    assert [e[:4] for e in essence(middle.messages)] == [e[:4] for e in essence(messages)]


replies = st.builds(
    Reply,
    model=st.just("m"),
    content=text,
    thinking=st.one_of(st.none(), text.filter(bool)),
    tool_calls=st.lists(
        st.builds(lambda n, a: ToolCall(n, json.dumps(a)), names, arguments), max_size=2
    ),
    finish_reason=st.sampled_from(["stop", "length"]),
    usage=usages,
)


def reply_essence(r: Reply) -> tuple[Any, ...]:
    calls = [(c.name, json.loads(c.arguments)) for c in r.tool_calls]
    return r.content, r.thinking, calls, r.usage


def expected_finish(r: Reply) -> str | None:
    return "tool_calls" if r.tool_calls and r.finish_reason == "stop" else r.finish_reason


@FAST
@given(replies)
def test_answers_openai_to_ollama_to_openai(reply: Reply) -> None:
    first = openai.parse_reply(openai.render_reply(reply, kind="chat", id="chatcmpl-1", created=1))
    middle = ollama.parse_reply(
        ollama.render_reply(first, kind="chat", created_at="t"), kind="chat"
    )
    last = openai.parse_reply(openai.render_reply(middle, kind="chat", id="chatcmpl-2", created=1))
    assert reply_essence(last) == reply_essence(middle) == reply_essence(reply)
    assert last.finish_reason == middle.finish_reason == expected_finish(reply)


@FAST
@given(replies)
def test_answers_ollama_to_openai_to_ollama(reply: Reply) -> None:
    first = ollama.parse_reply(ollama.render_reply(reply, kind="chat", created_at="t"), kind="chat")
    middle = openai.parse_reply(openai.render_reply(first, kind="chat", id="chatcmpl-1", created=1))
    last = ollama.parse_reply(ollama.render_reply(middle, kind="chat", created_at="t"), kind="chat")
    assert reply_essence(last) == reply_essence(middle) == reply_essence(reply)
    assert last.finish_reason == expected_finish(reply)


pieces = st.one_of(
    st.builds(lambda t: Delta(content=t), text.filter(bool)),
    st.builds(lambda t: Delta(thinking=t), text.filter(bool)),
    st.builds(lambda n, a: Delta(tool_calls=[ToolCall(n, json.dumps(a))]), names, arguments),
)


@st.composite
def streams(draw: st.DrawFn) -> list[Delta]:
    deltas = draw(st.lists(pieces, max_size=8))
    deltas.append(
        Delta(finish_reason=draw(st.sampled_from(["stop", "length"])), usage=draw(usages))
    )
    return deltas


def stream_essence(deltas: list[Delta]) -> tuple[Any, ...]:
    calls = [(c.name, json.loads(c.arguments)) for d in deltas for c in d.tool_calls]
    usage = [d.usage for d in deltas if d.usage is not None]
    return "".join(d.content for d in deltas), "".join(d.thinking for d in deltas), calls, usage


def split_feed(decoder: Any, data: bytes, cuts: list[int]) -> list[Delta]:
    out: list[Delta] = []
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        out += decoder.feed(data[start:cut])
        start = cut
    return out + decoder.close()


@FAST
@given(streams(), st.data())
def test_openai_stream_encode_decode_keeps_text_and_tool_calls(
    deltas: list[Delta], data: st.DataObject
) -> None:
    enc = openai.StreamEncoder("chat", id="chatcmpl-1", created=0, model="m", include_usage=True)
    wire = b"".join(enc.encode(d) for d in deltas) + enc.end()
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=12))
    back = split_feed(openai.StreamDecoder(), wire, cuts)
    assert stream_essence(back) == stream_essence(deltas)
    # Every call got an id, and the decoder holds calls until the finish.
    assert all(c.id for d in back for c in d.tool_calls)
    assert all(d.finish_reason is not None for d in back if d.tool_calls)


@FAST
@given(streams(), st.data())
def test_ollama_stream_encode_decode_keeps_text_and_tool_calls(
    deltas: list[Delta], data: st.DataObject
) -> None:
    enc = ollama.StreamEncoder("chat", model="m", created_at="2025-01-01T00:00:00Z")
    wire = b"".join(enc.encode(d) for d in deltas) + enc.end()
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=12))
    back = split_feed(ollama.StreamDecoder("chat"), wire, cuts)
    assert stream_essence(back) == stream_essence(deltas)
    has_calls = any(d.tool_calls for d in deltas)
    finish = deltas[-1].finish_reason
    assert back[-1].finish_reason == ("tool_calls" if has_calls and finish == "stop" else finish)


@FAST
@given(streams(), st.data())
def test_streams_through_both_dialects_keep_text_and_tool_calls(
    deltas: list[Delta], data: st.DataObject
) -> None:
    # An OpenAI backend's stream relayed to an Ollama client, whose bytes are read back.
    enc = openai.StreamEncoder("chat", id="chatcmpl-1", created=0, model="m", include_usage=True)
    upstream = b"".join(enc.encode(d) for d in deltas) + enc.end()
    cuts = data.draw(st.lists(st.integers(0, len(upstream)), max_size=8))
    relay = ollama.StreamEncoder("chat", model="m", created_at="t")
    decoded = split_feed(openai.StreamDecoder(), upstream, cuts)
    downstream = b"".join(relay.encode(d) for d in decoded) + relay.end()
    back = split_feed(ollama.StreamDecoder("chat"), downstream, [])
    assert stream_essence(back) == stream_essence(deltas)


def test_a_chat_request_survives_with_sampling_and_format() -> None:
    # The non-message fields both dialects share, on one example.
    req = openai.parse_chat(
        json.dumps(
            {
                "model": "m",
                "messages": [{"role": "user", "content": "x"}],
                "temperature": 0.3,
                "top_p": 0.8,
                "seed": 1,
                "stop": ["a", "b"],
                "max_tokens": 9,
                "presence_penalty": 0.1,
                "frequency_penalty": 0.2,
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "n", "schema": {"type": "object"}},
                },
                "reasoning_effort": "medium",
                "stream": True,
            }
        ).encode()
    )
    back: ChatRequest = openai.parse_chat(
        openai.chat_body(ollama.parse_chat(ollama.chat_body(req, "m").body), "m").body
    )
    assert back.sampling == req.sampling
    assert (back.format, back.think, back.stream) == (req.format, req.think, req.stream)
