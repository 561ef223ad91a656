"""Structured-output checks with schemas whose $ref cannot be followed: a 400 when the
request comes, or a failed check of the answer, never an internal error."""

from __future__ import annotations

from typing import Any

import pytest

from corral.adapters.schema_check import SchemaCheck
from corral.core.errors import BadRequest


@pytest.mark.parametrize(
    ("schema", "why"),
    [
        ({"$ref": "#"}, "leads back to itself without end"),
        ({"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"}, "itself without end"),
        ({"$ref": "#/nowhere"}, "cannot be resolved"),
        # Never fetched: a remote $ref is unresolvable, not a request to that address.
        ({"$ref": "http://127.0.0.1:9/schema.json"}, "cannot be resolved"),
    ],
)
def test_a_schema_whose_ref_goes_nowhere_is_refused(schema: dict[str, Any], why: str) -> None:
    with pytest.raises(BadRequest) as err:
        SchemaCheck(schema, param="format")
    assert err.value.param == "format"
    assert err.value.message.startswith("format is not a valid JSON schema: its $ref")
    assert why in err.value.message


def test_a_ref_only_some_answers_reach_fails_those_answers_check() -> None:
    check = SchemaCheck(
        {"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}}, param="format"
    )
    assert check.problem('{"b": 1}') is None
    problem = check.problem('{"a": 1}')
    assert problem is not None and problem.startswith("the answer cannot be checked: its $ref")


def test_an_answer_nested_past_the_stack_is_not_json() -> None:
    check = SchemaCheck("json", param="format")
    assert check.problem("[" * 5000 + "]" * 5000) == "not JSON (nested too deeply)"
