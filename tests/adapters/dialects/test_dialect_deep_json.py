"""JSON nested past the parser's stack (msgspec raises RecursionError, not DecodeError):
bad JSON from a client, a malformed answer from a backend, never an internal error."""

from __future__ import annotations

import pytest

from corral.adapters.dialects import ollama, openai
from corral.adapters.dialects.common import args_to_object
from corral.core.canonical import Delta
from corral.core.errors import InvalidField, InvalidJSON, UpstreamError

DEEP = b"[" * 5000 + b"]" * 5000


@pytest.mark.parametrize(
    "parse",
    [
        ollama.parse_chat,
        ollama.parse_generate,
        openai.parse_chat,
        openai.parse_completion,
        openai.parse_embed,
    ],
)
def test_a_client_body_nested_past_the_stack_is_bad_json(parse: object) -> None:
    body = b'{"model": "m", "future_field": ' + DEEP + b"}"  # skipped, but read to its end
    with pytest.raises(InvalidJSON, match="nested too deeply"):
        parse(body)  # type: ignore[operator]


def test_tool_arguments_nested_past_the_stack_are_refused_naming_them() -> None:
    with pytest.raises(InvalidField) as err:
        args_to_object(
            '{"city": ' + DEEP.decode() + "}", param="messages[1].tool_calls[0].function.arguments"
        )
    assert err.value.param == "messages[1].tool_calls[0].function.arguments"


def test_a_backend_answer_nested_past_the_stack_is_an_upstream_error() -> None:
    answer = b'{"model": "m", "extra": ' + DEEP + b"}"
    with pytest.raises(UpstreamError, match="nested too deeply"):
        ollama.parse_reply(answer, kind="chat")
    with pytest.raises(UpstreamError, match="nested too deeply"):
        openai.parse_reply(answer)
    with pytest.raises(UpstreamError, match="nested too deeply"):
        openai.parse_embed_reply(answer)


def test_a_stream_line_nested_past_the_stack_ends_the_stream_with_an_error() -> None:
    (delta,) = ollama.StreamDecoder("chat").feed(b'{"extra": ' + DEEP + b"}\n")
    assert isinstance(delta, Delta) and delta.error and "malformed stream line" in delta.error
    (delta,) = openai.StreamDecoder().feed(b"data: " + DEEP + b"\n\n")
    assert delta.error and "malformed stream event" in delta.error
