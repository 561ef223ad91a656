"""The official ``openai`` client talks to the engine directly."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from corral.engines.llamacpp import LlamaCppServer
from tests.engines.support import ALIAS, is_printable

MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "user", "content": "hello world"}
]


@pytest.fixture
def oai(engine: LlamaCppServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{engine.url}/v1", api_key="unused", max_retries=0) as client:
        yield client


def test_models_list(oai: openai.OpenAI) -> None:
    assert [model.id for model in oai.models.list()] == [ALIAS]


def test_chat_completion(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(model=ALIAS, messages=MESSAGES, max_tokens=6)
    assert reply.choices[0].finish_reason == "length"
    assert is_printable(reply.choices[0].message.content or "")
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 6


def test_chat_stream_with_usage(oai: openai.OpenAI) -> None:
    chunks = list(
        oai.chat.completions.create(
            model=ALIAS,
            messages=MESSAGES,
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert is_printable(text)
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 4


def test_text_completion(oai: openai.OpenAI) -> None:
    reply = oai.completions.create(model=ALIAS, prompt="hello", max_tokens=5)
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 5


def test_errors_map_to_the_clients_exceptions(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        oai.completions.create(model=ALIAS, prompt="a " * 300, max_tokens=1)
    assert caught.value.status_code == 400
    with pytest.raises(openai.APIStatusError) as refused:
        oai.embeddings.create(model=ALIAS, input="hello")
    assert refused.value.status_code == 501
