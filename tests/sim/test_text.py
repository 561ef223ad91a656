"""Deterministic text, counts, tool calls and embeddings; Ollama's keep_alive parsing."""

from __future__ import annotations

import math

import pytest

from corral.sim import text
from corral.sim.wire import BadRequest, parse_keep_alive


def test_text_depends_only_on_model_prompt_and_seed() -> None:
    a, _ = text.output_tokens("m", "prompt", 1, 40)
    assert a == text.output_tokens("m", "prompt", 1, 40)[0]
    assert a != text.output_tokens("m", "prompt", 2, 40)[0]
    assert a != text.output_tokens("other", "prompt", 1, 40)[0]
    assert len(a) == 40 and all(w.strip().strip(".").isalpha() for w in a)
    assert "".join(a).endswith(".")


def test_lengths_follow_num_predict_else_a_stable_20_to_120() -> None:
    assert text.output_length("m", "p", None, 7) == 7
    lengths = {text.output_length("m", f"p{i}", None, None) for i in range(200)}
    assert min(lengths) >= 20 and max(lengths) <= 120 and len(lengths) > 20
    assert text.output_length("m", "p", None, None) == text.output_length("m", "p", None, None)


def test_prompt_counts_are_about_four_chars_a_token() -> None:
    assert text.prompt_tokens("") == 0
    assert text.prompt_tokens("abcd") == 1 and text.prompt_tokens("abcde") == 2
    _, one = text.chat_prompt([{"role": "user", "content": "a" * 40}])
    _, two = text.chat_prompt([{"role": "user", "content": "a" * 40}] * 2)
    assert two > one > 10


def test_json_format_may_be_cut_by_num_predict() -> None:
    pieces, cut = text.output_tokens("m", "p", None, 1 << 20, "json")
    short, short_cut = text.output_tokens("m", "p", None, 2, "json")
    assert not cut and short_cut and short == pieces[:2]


def test_tool_call_only_when_the_user_asks() -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "parameters": {
                    "type": "object",
                    "properties": {"q": {"type": "string"}, "n": {"type": "integer"}},
                },
            },
        }
    ]
    call = text.tool_call(tools, [{"role": "user", "content": "please lookup cats"}], None)
    assert call is not None and call["function"]["name"] == "lookup"
    assert set(call["function"]["arguments"]) == {"q", "n"}
    assert isinstance(call["function"]["arguments"]["n"], int)
    assert text.tool_call(tools, [{"role": "user", "content": "a poem"}], None) is None


def test_embeddings_are_unit_vectors_of_the_model_dimension() -> None:
    v = text.embedding("m", "hello", 384)
    assert len(v) == 384 and math.isclose(sum(x * x for x in v), 1.0)
    assert v == text.embedding("m", "hello", 384) and v != text.embedding("m", "hi", 384)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        (0, 0.0),
        ("0", 0.0),
        (30, 30.0),
        (1.5, 1.5),
        ("5m", 300.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        (-1, math.inf),
        ("-1m", math.inf),
    ],
)
def test_keep_alive_parses_like_ollama(value: object, seconds: float | None) -> None:
    assert parse_keep_alive(value) == seconds


@pytest.mark.parametrize("value", ["soon", "300", True, [1]])
def test_bad_keep_alive_is_a_bad_request(value: object) -> None:
    with pytest.raises(BadRequest):
        parse_keep_alive(value)
