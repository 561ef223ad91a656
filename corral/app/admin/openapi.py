"""The control plane's OpenAPI spec, with the errors it really answers.

FastAPI documents a 422 with pydantic's error list on every route that takes input;
Corral answers bad input with a 400 in its own error object instead
(corral/app/admin/errors.py), so the spec would promise a status that never comes and
hide the ones that do. `control_openapi` builds the spec once and rewrites each
operation's error responses:

- 422 goes; an operation with parameters or a body documents **400** (bad input),
- one that needs a key (an API key, or the fleet token) documents **401** and **403**,
- one with a free-form path parameter documents **404** (nothing by that name),
- one with a body documents **413** (over the body limit),
- every other error a route declares itself (``responses=refusals({409: "..."})``)
  keeps its description,

and every 4xx and 5xx without a body of its own is given the error object's schema.
tests/app/test_fuzz_control.py holds the gateway to this spec with generated calls.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field

__all__ = ["ErrorBody", "ErrorResponse", "control_openapi", "refusals"]

_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")
_ERROR_REF = {"$ref": "#/components/schemas/ErrorResponse"}


class ErrorBody(BaseModel):
    message: str = Field(description="What was wrong, for a person to read.")
    type: str = Field(description="The kind of error, e.g. invalid_request_error.")
    param: str | None = Field(description="The parameter or body field at fault, if one is.")
    code: str | None = Field(description="A stable code for programs, e.g. InvalidField.")


class ErrorResponse(BaseModel):
    """Every refusal of a control-plane route, in the OpenAI API's error shape."""

    error: ErrorBody


_GENERIC = {
    "400": "Bad input: a parameter or body field is missing, of the wrong type or out of "
    "range (`param` names the first one).",
    "401": "No key, or a key that is wrong, expired or revoked.",
    "403": "The key lacks the scope this route needs.",
    "404": "Nothing by that name or id.",
    "413": "The body is larger than limits.max_body_bytes (at least 1 MiB here).",
}


def refusals(described: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """A route's ``responses=``: the errors it answers beyond the generic ones above,
    each with when. Their body schema (the error object) is filled in by the spec."""
    return {status: {"description": text} for status, text in described.items()}


def _names_something(param: dict[str, Any]) -> bool:
    # A path parameter from a closed set (an enum) is checked like any input: a 400.
    return param.get("in") == "path" and "enum" not in param.get("schema", {})


def _document_errors(op: dict[str, Any]) -> None:
    responses: dict[str, Any] = op.setdefault("responses", {})
    responses.pop("422", None)
    wanted = []
    if op.get("parameters") or op.get("requestBody"):
        wanted.append("400")
    if op.get("security"):
        wanted += ["401", "403"]
    if any(_names_something(p) for p in op.get("parameters", ())):
        wanted.append("404")
    if op.get("requestBody"):
        wanted.append("413")
    for status in wanted:
        responses.setdefault(status, {"description": _GENERIC[status]})
    for status, response in responses.items():
        if status[0] in "45" and "content" not in response:
            response["content"] = {"application/json": {"schema": dict(_ERROR_REF)}}


def control_openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """A replacement for ``app.openapi``: FastAPI's spec with Corral's error responses."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(
                title=app.title,
                version=app.version,
                openapi_version=app.openapi_version,
                description=app.description,
                routes=app.routes,
            )
            for path_item in spec.get("paths", {}).values():
                for method in _METHODS:
                    if method in path_item:
                        _document_errors(path_item[method])
            schemas = spec.setdefault("components", {}).setdefault("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)  # only the 422s named them
            schemas["ErrorBody"] = ErrorBody.model_json_schema()
            schemas["ErrorResponse"] = ErrorResponse.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            schemas["ErrorResponse"].pop("$defs", None)
            app.openapi_schema = spec
        return app.openapi_schema

    return openapi
