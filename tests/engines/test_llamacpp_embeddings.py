"""/v1/embeddings on an engine started with ``embedding=True`` (mean pooling)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from corral.engines.llamacpp import start_llamacpp
from tests.engines.support import ALIAS


@pytest.fixture(scope="module")
def embed_client(tiny_model: Path) -> Iterator[httpx.Client]:
    with (
        start_llamacpp(tiny_model, parallel=2, embedding=True, alias=ALIAS) as server,
        httpx.Client(base_url=server.url, timeout=30.0) as http,
    ):
        yield http


def test_one_normalised_vector_per_input(embed_client: httpx.Client) -> None:
    response = embed_client.post(
        "/v1/embeddings", json={"model": ALIAS, "input": ["hello world", "the"]}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    assert body["model"] == ALIAS
    assert [item["index"] for item in body["data"]] == [0, 1]
    for item in body["data"]:
        assert item["object"] == "embedding"
        assert len(item["embedding"]) == 64
        assert math.isclose(math.hypot(*item["embedding"]), 1.0, rel_tol=1e-4)
    assert body["data"][0]["embedding"] != body["data"][1]["embedding"]
    # "hello", " world"; "t", "he" (the vocab merges "he" but has no "the" without a space)
    assert body["usage"] == {"prompt_tokens": 4, "total_tokens": 4}


def test_a_single_string_input_gives_one_vector(embed_client: httpx.Client) -> None:
    body = embed_client.post("/v1/embeddings", json={"input": "hello"}).json()
    assert len(body["data"]) == 1


def test_the_same_text_embeds_the_same(embed_client: httpx.Client) -> None:
    first, second = (
        embed_client.post("/v1/embeddings", json={"input": "hello"}).json()["data"][0]
        for _ in range(2)
    )
    assert first["embedding"] == pytest.approx(second["embedding"], abs=1e-6)


def test_an_empty_input_list_is_a_400(embed_client: httpx.Client) -> None:
    response = embed_client.post("/v1/embeddings", json={"input": []})
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_an_embedding_engine_still_chats(embed_client: httpx.Client) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    response = embed_client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    assert response.json()["usage"]["completion_tokens"] == 3
