"""What the request audit keeps of a request and its answer, byte for byte: the
parameters without text, the clipped prompt, and the answer's text read from what
was sent to the client in either dialect (the live gateway is in
tests/store/test_audit_gateway.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from corral.app.content_audit import ContentAudit, Transcript
from corral.app.gateway import Gateway
from corral.app.pipeline import RequestContext
from corral.config import load_settings

Sent = list[dict[str, Any]]


def audit(tmp_path: Path, level: str = "full", **more: Any) -> tuple[Gateway, ContentAudit]:
    settings = load_settings(
        None, environ={}, overrides={"data_dir": str(tmp_path), "audit": {"content": level, **more}}
    )
    gw = Gateway(settings)
    assert gw.content is not None
    return gw, gw.content


def request(
    gw: Gateway, endpoint: str, body: dict[str, Any], *, dialect: str = "ollama"
) -> tuple[RequestContext, Sent]:
    sent: Sent = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    ctx = RequestContext(gw, {}, send, send, endpoint, dialect, "rid", time.time())  # type: ignore[arg-type]
    ctx.body = json.dumps(body).encode()
    ctx.stream = bool(body.get("stream", dialect == "ollama"))
    return ctx, sent


async def answer(send: Any, status: int, *chunks: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": []})
    for chunk in chunks:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


def ndjson(*texts: str, key: str = "message") -> bytes:
    lines = []
    for text in texts:
        line = {"message": {"role": "assistant", "content": text}} if key == "message" else {}
        if key == "response":
            line = {"response": text}
        lines.append(msgspec.json.encode({"model": "m", **line, "done": False}))
    lines.append(msgspec.json.encode({"model": "m", "done": True, "eval_count": len(texts)}))
    return b"\n".join(lines) + b"\n"


def test_metadata_keeps_parameters_and_names_the_text_fields_it_left_out(tmp_path: Path) -> None:
    gw, content = audit(tmp_path, "metadata")
    body = {
        "model": "llama3.2:1b",
        "prompt": "private",
        "system": "also private",
        "images": ["aGVsbG8="],
        "context": [1, 2, 3],
        "options": {"temperature": 0.1},
        "format": "json",
    }
    ctx, _ = request(gw, "/api/generate", body)
    line = content.line(ctx)
    assert line.level == "metadata"
    assert line.params == {
        "model": "llama3.2:1b",
        "options": {"temperature": 0.1},
        "format": "json",
        "omitted": ["context", "images", "prompt", "system"],
    }
    assert line.prompt is None and line.response is None
    ctx.body = b"{not json"
    assert content.line(ctx).params == {"unreadable": True}
    ctx.body = b""
    assert content.line(ctx).params == {}


def test_full_keeps_the_text_fields_with_images_replaced_and_cuts_at_the_limit(
    tmp_path: Path,
) -> None:
    gw, content = audit(tmp_path, max_text_chars=12)
    image = "data:image/png;base64," + "A" * 400
    body = {
        "model": "gpt",
        "messages": [
            {"role": "system", "content": "0123456789"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "abcdef"},
                    {"type": "image_url", "image_url": {"url": image}},
                ],
            },
        ],
        "context": list(range(50)),
    }
    ctx, _ = request(gw, "/v1/chat/completions", body, dialect="openai")
    line = content.line(ctx)
    assert line.truncated
    assert json.loads(line.prompt or "") == {
        "messages": [
            {"role": "system", "content": "0123456789"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "ab"},  # 10 + 2: the limit is spent
                    {
                        "type": "image_url",
                        "image_url": {"url": f"<image, {len(image)} characters>"},
                    },
                ],
            },
        ],
        "context": "<50 context tokens>",
    }


async def test_a_long_ollama_stream_is_read_in_batches_across_split_lines(tmp_path: Path) -> None:
    gw, content = audit(tmp_path)
    ctx, sent = request(gw, "/api/chat", {"model": "m", "messages": []})
    send = content.transcribe(ctx)
    words = [f"w{i} " for i in range(3000)]  # well over 64 KiB of NDJSON
    data = ndjson(*words)
    pieces = [data[i : i + 997] for i in range(0, len(data), 997)]  # lines split anywhere
    await answer(send, 200, *pieces)
    transcript = ctx.transcript
    assert isinstance(transcript, Transcript)
    assert b"".join(m.get("body", b"") for m in sent[1:]) == data  # the client got it all
    line = content.line(ctx)
    assert line.response == "".join(words) and not line.truncated


async def test_openai_streams_keep_the_first_choice_and_skip_done(tmp_path: Path) -> None:
    gw, content = audit(tmp_path)
    ctx, _ = request(
        gw, "/v1/completions", {"model": "m", "prompt": "p", "stream": True}, dialect="openai"
    )
    send = content.transcribe(ctx)
    events = [
        {"choices": [{"index": 0, "text": "Hel"}, {"index": 1, "text": "xx"}]},
        {"choices": [{"index": 0, "text": "lo"}]},
        {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}},
    ]
    body = b"".join(b"data: " + msgspec.json.encode(e) + b"\n\n" for e in events)
    await answer(send, 200, body[:30], body[30:], b"data: [DONE]\n\n")
    assert content.line(ctx).response == "Hello"


async def test_a_chat_stream_cut_at_the_limit_is_marked_truncated(tmp_path: Path) -> None:
    gw, content = audit(tmp_path, max_text_chars=7)
    ctx, _ = request(
        gw, "/v1/chat/completions", {"model": "m", "messages": [], "stream": True}, dialect="openai"
    )
    send = content.transcribe(ctx)
    events = [{"choices": [{"index": 0, "delta": {"content": t}}]} for t in ("abcd", "efgh", "ij")]
    await answer(send, 200, *(b"data: " + msgspec.json.encode(e) + b"\n\n" for e in events))
    line = content.line(ctx)
    assert (line.response, line.truncated) == ("abcdefg", True)


@pytest.mark.parametrize(
    ("endpoint", "dialect", "reply", "text"),
    [
        (
            "/api/generate",
            "ollama",
            {"model": "m", "response": "whole answer", "done": True},
            "whole answer",
        ),
        (
            "/v1/chat/completions",
            "openai",
            {"choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}]},
            "hi",
        ),
        ("/api/embed", "ollama", {"model": "m", "embeddings": [[0.1, 0.2]]}, None),
    ],
)
async def test_whole_answers_are_read_once_at_the_end(
    tmp_path: Path, endpoint: str, dialect: str, reply: dict[str, Any], text: str | None
) -> None:
    gw, content = audit(tmp_path)
    ctx, _ = request(gw, endpoint, {"model": "m", "stream": False}, dialect=dialect)
    send = content.transcribe(ctx)
    await answer(send, 200, msgspec.json.encode(reply))
    assert content.line(ctx).response == text


async def test_an_error_answer_keeps_no_response(tmp_path: Path) -> None:
    gw, content = audit(tmp_path)
    ctx, _ = request(gw, "/api/chat", {"model": "m", "messages": []})
    send = content.transcribe(ctx)
    await answer(send, 404, b'{"error": "model \\"m\\" not found"}')
    assert content.line(ctx).response is None
    ctx2, _ = request(gw, "/api/chat", {"model": "m", "messages": []})
    send2 = content.transcribe(ctx2)
    # A stream that breaks off with an error line keeps the text before it.
    await answer(send2, 200, ndjson("partial ")[:-1].split(b"\n")[0] + b"\n", b'{"error":"boom"}\n')
    assert content.line(ctx2).response == "partial "
