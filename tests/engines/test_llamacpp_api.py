"""llama.cpp's OpenAI-style API as the gateway will meet it, asserted against the real engine.

These pin down what llama.cpp actually does (usage in streams, /tokenize, errors), so
a change in a new xllamacpp release shows up here, not in the gateway.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.engines.support import ALIAS, is_printable, sse_events

CHAT = {"model": ALIAS, "messages": [{"role": "user", "content": "hello world"}]}
# <|im_start|> user \n hello Ġworld <|im_end|> \n <|im_start|> a s s i s t a n t \n
CHAT_PROMPT_TOKENS = 21


def stream(client: httpx.Client, path: str, body: dict[str, Any]) -> list[Any]:
    with client.stream("POST", path, json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        return sse_events(response.iter_lines())


def test_the_engine_is_healthy(client: httpx.Client) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_models_lists_the_alias_with_the_tiny_models_shape(client: httpx.Client) -> None:
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    [model] = body["data"]
    assert model["id"] == ALIAS
    assert model["owned_by"] == "llamacpp"
    assert model["meta"]["n_ctx_train"] == 512
    assert model["meta"]["n_embd"] == 64
    assert model["meta"]["n_vocab"] == 270


def test_chat_runs_to_max_tokens_in_printable_text(client: httpx.Client) -> None:
    body = client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 12}).json()
    assert body["object"] == "chat.completion"
    assert body["model"] == ALIAS
    [choice] = body["choices"]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["role"] == "assistant"
    assert is_printable(choice["message"]["content"])
    assert choice["message"]["content"]
    assert body["usage"]["completion_tokens"] == 12
    assert body["usage"]["prompt_tokens"] == CHAT_PROMPT_TOKENS
    assert body["usage"]["total_tokens"] == CHAT_PROMPT_TOKENS + 12


def test_chat_stream_ends_with_a_usage_chunk_then_done(client: httpx.Client) -> None:
    events = stream(
        client,
        "/v1/chat/completions",
        {**CHAT, "max_tokens": 5, "stream": True, "stream_options": {"include_usage": True}},
    )
    assert events[-1] == "[DONE]"
    *chunks, usage_chunk = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert is_printable(text)
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    # As OpenAI does: a chunk of its own with no choices, after the finish_reason chunk.
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == 5
    assert usage_chunk["usage"]["prompt_tokens"] == CHAT_PROMPT_TOKENS
    assert all("usage" not in c for c in chunks)


def test_chat_stream_without_include_usage_carries_no_usage(client: httpx.Client) -> None:
    events = stream(client, "/v1/chat/completions", {**CHAT, "max_tokens": 3, "stream": True})
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert all("usage" not in c for c in chunks)


def test_completions_answers_text(client: httpx.Client) -> None:
    body = client.post(
        "/v1/completions", json={"model": ALIAS, "prompt": "hello world", "max_tokens": 8}
    ).json()
    assert body["object"] == "text_completion"
    [choice] = body["choices"]
    assert choice["finish_reason"] == "length"
    assert is_printable(choice["text"])
    assert body["usage"]["prompt_tokens"] == 2  # "hello", " world": no BOS is added
    assert body["usage"]["completion_tokens"] == 8


def test_completions_stream_puts_usage_in_its_last_chunk_even_unasked(
    client: httpx.Client,
) -> None:
    # Unlike chat, llama.cpp's text-completion stream always carries usage, inside the
    # chunk that has the finish_reason (not in a separate choices-less chunk).
    for options in ({}, {"stream_options": {"include_usage": True}}):
        events = stream(
            client,
            "/v1/completions",
            {"prompt": "hello", "max_tokens": 4, "stream": True, **options},
        )
        assert events[-1] == "[DONE]"
        *chunks, last = events[:-1]
        assert last["choices"][0]["finish_reason"] == "length"
        assert last["usage"]["completion_tokens"] == 4
        assert all("usage" not in c for c in chunks)


def test_unknown_model_names_are_served_anyway(client: httpx.Client) -> None:
    # One model per engine: llama.cpp ignores "model", so routing by name is ours to do.
    body = {**CHAT, "model": "no-such-model", "max_tokens": 1}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    assert response.json()["model"] == ALIAS


def test_tokenize_returns_ids_and_merges_word_pieces(client: httpx.Client) -> None:
    response = client.post("/tokenize", json={"content": "hello world"})
    assert response.status_code == 200
    ids = response.json()["tokens"]
    assert response.json() == {"tokens": ids}
    assert len(ids) == 2  # "hello" and " world" are merged pieces
    pieces = client.post("/tokenize", json={"content": "hello world", "with_pieces": True})
    assert pieces.json() == {
        "tokens": [{"id": ids[0], "piece": "hello"}, {"id": ids[1], "piece": " world"}]
    }
    back = client.post("/detokenize", json={"tokens": ids}).json()
    assert back == {"content": "hello world"}


def test_tokenize_parses_special_tokens_unless_told_not_to(client: httpx.Client) -> None:
    special = client.post("/tokenize", json={"content": "<|im_end|>"}).json()["tokens"]
    assert len(special) == 1
    literal = client.post(
        "/tokenize", json={"content": "<|im_end|>", "parse_special": False}
    ).json()["tokens"]
    assert literal == [ord(c) for c in "<|im_end|>"]  # ids 0-255 are the bytes
    assert client.post("/tokenize", json={}).json() == {"tokens": []}


def test_a_chats_prompt_tokens_can_be_counted_before_sending_it(client: httpx.Client) -> None:
    # /apply-template renders the chat as the model will see it; /tokenize counts it.
    prompt = client.post("/apply-template", json={"messages": CHAT["messages"]}).json()["prompt"]
    assert prompt == "<|im_start|>user\nhello world<|im_end|>\n<|im_start|>assistant\n"
    tokens = client.post("/tokenize", json={"content": prompt}).json()["tokens"]
    assert len(tokens) == CHAT_PROMPT_TOKENS


@pytest.mark.parametrize(
    ("path", "body", "error_type"),
    [
        ("/v1/chat/completions", b'{"messages":', "invalid_request_error"),
        ("/v1/completions", b"not json", "invalid_request_error"),
        ("/v1/chat/completions", b"{}", "invalid_request_error"),
    ],
)
def test_bad_requests_get_a_json_400(
    client: httpx.Client, path: str, body: bytes, error_type: str
) -> None:
    response = client.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == 400
    assert error["type"] == error_type
    assert error["message"]


def test_a_prompt_longer_than_a_slot_is_a_400_naming_the_sizes(client: httpx.Client) -> None:
    response = client.post("/v1/completions", json={"prompt": "a " * 300, "max_tokens": 1})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "exceed_context_size_error"
    assert error["n_ctx"] == 512
    assert error["n_prompt_tokens"] == 600


def test_embeddings_are_refused_with_501_unless_enabled(client: httpx.Client) -> None:
    response = client.post("/v1/embeddings", json={"input": "hello"})
    assert response.status_code == 501
    assert response.json()["error"]["type"] == "not_supported_error"


def test_unknown_paths_are_a_json_404(client: httpx.Client) -> None:
    response = client.get("/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"
