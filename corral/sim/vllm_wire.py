"""vLLM's wire details for the simulator: error bodies, request validation, SSE framing.

Errors are ``{"error": {"message", "type", "param", "code"}}`` with ``code`` the HTTP
status as an integer (vLLM's ``ErrorResponse``/``ErrorInfo``; releases before the
nested shape answered a flat ``{"object": "error", "message", ...}``). Types follow
vLLM: ``BadRequestError`` / ``NotFoundError`` from the serving layer, the status phrase
(``Bad Request``) for request-schema errors caught by FastAPI's validation, and
``InternalServerError`` for a dead engine. A ``VLLMValidationError`` renders its
parameter and value after the message, as ``str()`` of it does in vLLM.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from typing import Any

import msgspec
from aiohttp import web

__all__ = [
    "DONE",
    "ENGINE_DEAD",
    "ApiError",
    "Fields",
    "ServedName",
    "context_too_long",
    "decode_json",
    "error_body",
    "error_response",
    "id_maker",
    "json_response",
    "max_tokens_too_large",
    "model_not_found",
    "not_supported",
    "sse",
    "validation_error",
]

encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

DONE = b"data: [DONE]\n\n"
# What vLLM answers once its engine core process has died.
ENGINE_DEAD = "EngineCore encountered an issue. See stack trace (above) for the root cause."


class ApiError(Exception):
    """An error answered in vLLM's shape."""

    def __init__(
        self, status: int, message: str, kind: str = "BadRequestError", param: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.param = param

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.message, self.kind, self.param)


def error_body(
    status: int, message: str, kind: str = "BadRequestError", param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


def error_response(exc: ApiError) -> web.Response:
    return json_response(exc.body(), exc.status)


def json_response(payload: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=payload if isinstance(payload, bytes) else encode(payload),
        status=status,
        content_type="application/json",
    )


def sse(payload: Any) -> bytes:
    return b"data: " + encode(payload) + b"\n\n"


def validation_error(
    kind: str, loc: str, msg: str, value: Any, param: str | None = None
) -> ApiError:
    """A request-schema error worded like pydantic's, as vLLM passes them on."""
    entry = {"type": kind, "loc": ("body", loc), "msg": msg, "input": value}
    return ApiError(400, str([entry]), "Bad Request", param)


def _with_extras(message: str, parameter: str, value: Any) -> str:
    return f"{message} (parameter={parameter}, value={value})"


def model_not_found(name: str) -> ApiError:
    return ApiError(404, f"The model `{name}` does not exist.", "NotFoundError", "model")


def not_supported(api: str) -> ApiError:
    return ApiError(400, f"The model does not support {api} API")


def context_too_long(max_model_len: int, tokens: int, what: str = "messages") -> ApiError:
    message = (
        f"This model's maximum context length is {max_model_len} tokens. However, your "
        f"request has {tokens} input tokens. Please reduce the length of the input {what}."
    )
    return ApiError(400, _with_extras(message, "input_tokens", tokens), param="input_tokens")


def embedding_too_long(max_model_len: int, tokens: int) -> ApiError:
    message = (
        f"This model's maximum context length is {max_model_len} tokens. However, you "
        f"requested {tokens} tokens in the input for embedding generation. Please reduce "
        "the length of the input."
    )
    return ApiError(400, _with_extras(message, "input_tokens", tokens), param="input_tokens")


def max_tokens_too_large(max_tokens: int, max_model_len: int, tokens: int) -> ApiError:
    message = (
        f"'max_tokens' or 'max_completion_tokens' is too large: {max_tokens}. This model's "
        f"maximum context length is {max_model_len} tokens and your request has {tokens} "
        f"input tokens ({max_tokens} > {max_model_len} - {tokens})."
    )
    return ApiError(400, _with_extras(message, "max_tokens", max_tokens), param="max_tokens")


def decode_json(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or FastAPI's 400 for what it cannot parse."""
    try:
        body = _decode(raw) if raw.strip() else None
    except msgspec.DecodeError as exc:
        entry = {
            "type": "json_invalid",
            "loc": ("body", 0),
            "msg": "JSON decode error",
            "input": {},
            "ctx": {"error": str(exc)},
        }
        raise ApiError(400, str([entry]), "Bad Request") from None
    if body is None:
        raise validation_error("missing", "", "Field required", None)
    if not isinstance(body, dict):
        raise validation_error(
            "model_attributes_type",
            "",
            "Input should be a valid dictionary or object to extract fields from",
            body,
        )
    return body


_KINDS: dict[type, tuple[str, str]] = {
    str: ("string_type", "Input should be a valid string"),
    bool: ("bool_type", "Input should be a valid boolean"),
    int: ("int_type", "Input should be a valid integer"),
    float: ("float_type", "Input should be a valid number"),
    list: ("list_type", "Input should be a valid list"),
    dict: ("dict_type", "Input should be a valid dictionary"),
}


class Fields:
    """Typed reads of optional request fields with pydantic-like 400s."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body

    def get(self, name: str, kind: type, default: Any = None, required: bool = False) -> Any:
        if name not in self.body or self.body[name] is None:
            if required:
                raise validation_error("missing", name, "Field required", self.body)
            return default
        value = self.body[name]
        if kind is float:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
        elif kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            ok = isinstance(value, kind)
        if not ok:
            code, msg = _KINDS.get(kind, ("type_error", "Input has the wrong type"))
            raise validation_error(code, name, msg, value)
        return value


class ServedName:
    """Resolves a request's ``model`` (optional in vLLM: absent means the served one)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def check(self, requested: Any) -> str:
        if requested is None or requested == "":
            return self.name
        if not isinstance(requested, str):
            raise validation_error(
                "string_type", "model", "Input should be a valid string", requested
            )
        if requested != self.name:
            raise model_not_found(requested)
        return self.name


def id_maker(seed: int) -> Callable[[str], str]:
    """Request ids like vLLM's (prefix + 32 hex digits), repeatable for a seed."""
    counter = itertools.count(1)

    def make(prefix: str) -> str:
        digest = hashlib.sha256(f"{seed}/{prefix}/{next(counter)}".encode()).hexdigest()
        return f"{prefix}-{digest[:32]}"

    return make
