"""OpenAI pass-through streams, event by event: what the relay forwards, holds back and
reads, with backends that batch events differently (vLLM's key order, llama.cpp's,
per-chunk usage, events split across reads)."""

from __future__ import annotations

import json

from corral.app.plans import _SSEPass


def event(payload: object) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def vllm_chunk(text: str | None, finish: str | None = None, usage: dict | None = None) -> bytes:
    delta = {} if text is None else {"content": text}
    body: dict[str, object] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "delta": delta,
                "logprobs": None,
                "finish_reason": finish,
                "stop_reason": None,
            }
        ],
    }
    if usage is not None:
        body["usage"] = usage
    return event(body)


USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}
USAGE_ONLY = event({"id": "chatcmpl-1", "choices": [], "usage": USAGE})
DONE = b"data: [DONE]\n\n"


def test_content_passes_untouched_and_the_unasked_usage_event_is_held_back() -> None:
    sse = _SSEPass(forward_usage=False)
    chunks = [vllm_chunk("a"), vllm_chunk("b"), vllm_chunk(None, "stop")]
    assert [sse.feed(c) for c in chunks] == chunks
    assert not sse.finished
    assert sse.feed(USAGE_ONLY + DONE) == DONE
    assert sse.usage is not None
    assert (sse.usage.prompt_tokens, sse.usage.completion_tokens) == (7, 3)
    assert sse.finished and sse.error is None


def test_a_client_that_asked_for_usage_gets_the_event() -> None:
    sse = _SSEPass(forward_usage=True)
    tail = vllm_chunk("a") + vllm_chunk(None, "stop") + USAGE_ONLY + DONE
    assert sse.feed(tail) == tail
    assert sse.usage is not None and sse.usage.completion_tokens == 3
    assert sse.finished


def test_usage_on_every_chunk_is_read_even_mid_stream() -> None:
    sse = _SSEPass(forward_usage=False)
    first = vllm_chunk("a", usage={"prompt_tokens": 7, "completion_tokens": 1})
    assert sse.feed(first) == first  # carries content: forwarded
    assert sse.usage is not None and sse.usage.completion_tokens == 1
    last = vllm_chunk("b", usage={"prompt_tokens": 7, "completion_tokens": 2})
    assert sse.feed(last) == last
    assert sse.usage.completion_tokens == 2


def test_llama_cpp_key_order_with_usage_on_the_final_chunk() -> None:
    # llama.cpp writes "choices" first and its usage and timings after everything else.
    mid = event({"choices": [{"index": 0, "delta": {"content": "a"}, "finish_reason": None}]})
    final = event(
        {
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "object": "chat.completion.chunk",
            "usage": USAGE,
            "timings": {"predicted_n": 3},
        }
    )
    sse = _SSEPass(forward_usage=False)
    assert sse.feed(mid) == mid
    assert sse.feed(final + DONE) == final + DONE  # not usage-only: forwarded
    assert sse.usage is not None and sse.usage.prompt_tokens == 7
    assert sse.finished


def test_an_error_event_ends_the_stream() -> None:
    sse = _SSEPass(forward_usage=False)
    assert sse.feed(vllm_chunk("a")) == vllm_chunk("a")
    err = event({"error": {"message": "KV cache exhausted", "code": 500}})
    assert sse.feed(err) == err
    assert sse.error is not None and sse.finished


def test_events_split_across_reads_are_forwarded_whole() -> None:
    sse = _SSEPass(forward_usage=False)
    whole = vllm_chunk("hello") + vllm_chunk(None, "stop") + USAGE_ONLY + DONE
    out = b""
    for i in range(0, len(whole), 37):
        piece = sse.feed(whole[i : i + 37])
        assert piece == b"" or piece.endswith(b"\n\n")  # never half an event
        out += piece
    out += sse.close()
    assert out == vllm_chunk("hello") + vllm_chunk(None, "stop") + DONE
    assert sse.usage is not None and sse.finished
