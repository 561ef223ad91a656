"""Checking an answer against the structured output a request asked for.

``format: "json"`` / ``response_format: json_object`` asks for any JSON value;
a schema (Ollama's ``format`` object, OpenAI's ``json_schema.schema``) asks for JSON
that validates against it (jsonschema, the draft the schema names, else 2020-12).
"""

from __future__ import annotations

from typing import Any

import jsonschema
import msgspec
from jsonschema.exceptions import SchemaError
from referencing.exceptions import Unresolvable

from corral.core.errors import BadRequest

__all__ = ["SchemaCheck"]

_PROBES: tuple[Any, ...] = (None, {}, [], "", 0)  # one value of each JSON kind, or near


class SchemaCheck:
    def __init__(self, fmt: str | dict[str, Any], *, param: str) -> None:
        self._validator: Any = None
        if isinstance(fmt, dict):
            cls = jsonschema.validators.validator_for(fmt, default=jsonschema.Draft202012Validator)
            try:
                cls.check_schema(fmt)
            except SchemaError as exc:
                raise BadRequest(
                    f"{param} is not a valid JSON schema: {exc.message}", param=param
                ) from None
            self._validator = cls(fmt)
            # A $ref that leads nowhere (or only back to itself) fails only when an
            # answer is checked; one reached whatever the answer is found now, as a 400.
            for probe in _PROBES:
                why = self._unusable(probe)
                if why is not None:
                    raise BadRequest(f"{param} is not a valid JSON schema: {why}", param=param)
        elif fmt != "json":
            raise BadRequest(f'{param} must be "json" or a JSON schema', param=param)

    def _unusable(self, value: Any) -> str | None:
        """Why the schema cannot judge ``value`` (a $ref it cannot follow), if it cannot."""
        try:
            next(iter(self._validator.iter_errors(value)), None)
        except Unresolvable as exc:
            return _unresolvable(exc)
        except RecursionError:
            return _ENDLESS
        return None

    def problem(self, text: str) -> str | None:
        """Why ``text`` does not satisfy the request, or None when it does."""
        try:
            value = msgspec.json.decode(text.strip() or b"")
        except msgspec.DecodeError as exc:
            return f"not JSON ({exc})"
        except RecursionError:
            return "not JSON (nested too deeply)"
        if self._validator is None:
            return None
        try:
            error = jsonschema.exceptions.best_match(self._validator.iter_errors(value))
        except Unresolvable as exc:  # a $ref only this answer reached
            return f"the answer cannot be checked: {_unresolvable(exc)}"
        except RecursionError:
            return f"the answer cannot be checked: {_ENDLESS}"
        if error is None:
            return None
        where = "/".join(str(p) for p in error.absolute_path) or "the top level"
        return f"{error.message} (at {where})"


_ENDLESS = "its $ref leads back to itself without end"


def _unresolvable(exc: Unresolvable) -> str:
    return f"its $ref cannot be resolved ({exc})"
