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

from corral.core.errors import BadRequest

__all__ = ["SchemaCheck"]


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
        elif fmt != "json":
            raise BadRequest(f'{param} must be "json" or a JSON schema', param=param)

    def problem(self, text: str) -> str | None:
        """Why ``text`` does not satisfy the request, or None when it does."""
        try:
            value = msgspec.json.decode(text.strip() or b"")
        except msgspec.DecodeError as exc:
            return f"not JSON ({exc})"
        if self._validator is None:
            return None
        error = jsonschema.exceptions.best_match(self._validator.iter_errors(value))
        if error is None:
            return None
        where = "/".join(str(p) for p in error.absolute_path) or "the top level"
        return f"{error.message} (at {where})"
