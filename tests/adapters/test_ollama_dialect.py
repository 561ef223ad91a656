"""Parsing Ollama requests once, and reading the counts off the last chunk."""

from __future__ import annotations

import pytest

from corral.adapters.ollama import decode_request, read_final
from corral.core.errors import BadRequest, InvalidField, InvalidJSON


def test_a_chat_request_keeps_its_fields_and_ignores_unknown_ones() -> None:
    req = decode_request(
        "/api/chat",
        b'{"model": "m", "messages": [{"role": "user", "content": "hi", "images": ["aGk="]}],'
        b' "stream": false, "keep_alive": "5m", "future_field": {"x": 1}}',
    )
    assert req.model == "m" and req.stream is False and req.keep_alive == "5m"


def test_the_legacy_name_field_stands_for_model() -> None:
    assert decode_request("/api/show", b'{"name": "llama3"}').model == "llama3"


def test_errors_name_the_problem() -> None:
    with pytest.raises(InvalidJSON):
        decode_request("/api/generate", b"{nope")
    with pytest.raises(BadRequest, match="missing request body"):
        decode_request("/api/generate", b"  ")
    with pytest.raises(InvalidField) as err:
        decode_request("/api/generate", b'{"model": "m", "images": "not-a-list"}')
    assert err.value.param == "images"
    with pytest.raises(InvalidField, match="model is required"):
        decode_request("/api/embed", b'{"model": "", "input": "x"}')


def test_read_final_takes_the_last_line_of_a_stream_tail() -> None:
    tail = (
        b'{"response":"a","done":false}\n'
        b'{"response":"","done":true,"prompt_eval_count":7,"eval_count":3,"load_duration":5}\n'
    )
    final = read_final(tail)
    assert final is not None and final.done
    assert (final.prompt_eval_count, final.eval_count, final.load_duration) == (7, 3, 5)


def test_read_final_sees_an_error_line_and_refuses_broken_json() -> None:
    final = read_final(b'{"response":"a","done":false}\n{"error":"runner died"}\n')
    assert final is not None and final.error == "runner died" and not final.done
    assert read_final(b'{"response":"a","do') is None


def test_a_body_nested_past_the_parsers_stack_is_bad_json() -> None:
    deep = b"[" * 5000 + b"]" * 5000
    with pytest.raises(InvalidJSON, match="nested too deeply"):
        decode_request("/api/generate", b'{"model": "m", "options": {"x": ' + deep + b"}}")
    assert read_final(b'{"done": true, "x": ' + deep + b"}") is None


@pytest.mark.parametrize("keep_alive", ["-1", "10", "5 minutes", "{}", ""])
def test_a_keep_alive_that_is_not_a_duration_is_refused_naming_it(keep_alive: str) -> None:
    # Ollama itself would answer "time: missing unit in duration", naming nothing.
    body = b'{"model": "m", "prompt": "x", "keep_alive": "' + keep_alive.encode() + b'"}'
    with pytest.raises(InvalidField) as err:
        decode_request("/api/generate", body)
    assert err.value.param == "keep_alive" and "keep_alive" in err.value.message


@pytest.mark.parametrize("keep_alive", ['"10m"', '"1h30m"', '"0"', '"-1m"', "-1", "300", "2.5"])
def test_durations_and_seconds_are_kept_as_sent(keep_alive: str) -> None:
    req = decode_request("/api/chat", b'{"model": "m", "keep_alive": ' + keep_alive.encode() + b"}")
    assert req.keep_alive is not None
