"""Every error the gateway returns, and how it looks in each client dialect.

The tree::

    CorralError                      status  when
    ├── BadRequest                   400     the request cannot be understood
    │   ├── InvalidJSON              400     the body is not JSON
    │   └── InvalidField             400     a field is missing or has the wrong type
    ├── Unauthorized                 401     no API key, or one that is wrong, expired or revoked
    ├── Forbidden                    403     a valid key lacking the scope or the model
    │   └── BudgetExhausted          403     the user's token budget for the period is spent
    ├── NotFound                     404
    │   ├── ModelNotFound            404     no backend holds the model
    │   └── RouteNotFound            404     unknown path
    ├── MethodNotAllowed             405
    ├── Conflict                     409     the change clashes with what is stored (a taken name)
    ├── PayloadTooLarge              413     body over ``limits.max_body_bytes``
    ├── RateLimited                  429     a key's rpm/tpm or a user's concurrency (Retry-After)
    ├── Unavailable                  503     nothing can take the request now (Retry-After)
    │   ├── NoHealthyBackend         503     backends hold the model but none is up
    │   ├── QueueFull                503     the wait queue is at its bound
    │   ├── QueueTimeout             503     waited ``queue.timeout_s`` for a free slot
    │   └── TooManyStreams           503     ``limits.max_streams`` open streams
    └── UpstreamError                502     every backend tried failed
        └── UpstreamTimeout          504     a backend did not answer in time

Each error renders itself in the Ollama dialect (``{"error": "text"}``) and in the
OpenAI dialect (``{"error": {"message", "type", "param", "code"}}``).
"""

from __future__ import annotations

import json
from typing import ClassVar

__all__ = [
    "BadRequest",
    "BudgetExhausted",
    "Conflict",
    "CorralError",
    "Forbidden",
    "InvalidField",
    "InvalidJSON",
    "MethodNotAllowed",
    "ModelNotFound",
    "NoHealthyBackend",
    "NotFound",
    "PayloadTooLarge",
    "QueueFull",
    "QueueTimeout",
    "RateLimited",
    "RouteNotFound",
    "TooManyStreams",
    "Unauthorized",
    "Unavailable",
    "UpstreamError",
    "UpstreamTimeout",
]


class CorralError(Exception):
    """Base of every error the gateway renders to a client."""

    status: ClassVar[int] = 500
    openai_type: ClassVar[str] = "server_error"
    openai_code: ClassVar[str | None] = None  # None: the class name

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.retry_after = retry_after
        if status is not None:
            self.status = status  # type: ignore[misc]  # an upstream status relayed as-is

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"Retry-After": str(max(1, round(self.retry_after)))}

    def body(self, dialect: str) -> bytes:
        """The error in the client's dialect: ``openai`` or Ollama's shape."""
        return self.openai_body() if dialect == "openai" else self.ollama_body()

    def ollama_body(self) -> bytes:
        return json.dumps({"error": self.message}).encode()

    def openai_body(self) -> bytes:
        code = self.openai_code or type(self).__name__
        kind = self.openai_type
        if self.status == 429:  # OpenAI's shape for rate limits
            kind, code = "requests", "rate_limit_exceeded"
        body = {
            "error": {
                "message": self.message,
                "type": kind,
                "param": self.param,
                "code": code,
            }
        }
        return json.dumps(body).encode()


class BadRequest(CorralError):
    status = 400
    openai_type = "invalid_request_error"


class InvalidJSON(BadRequest):
    pass


class InvalidField(BadRequest):
    pass


class Unauthorized(CorralError):
    """No usable key; the answer asks for a bearer token, as RFC 6750 says."""

    status = 401
    openai_type = "invalid_request_error"
    openai_code = "invalid_api_key"  # OpenAI's own, so its clients raise AuthenticationError

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class Forbidden(CorralError):
    status = 403
    openai_type = "invalid_request_error"
    openai_code = "insufficient_permissions"


class BudgetExhausted(Forbidden):
    """OpenAI's own code for a spent quota, so its clients show the usual message."""

    openai_type = "insufficient_quota"
    openai_code = "insufficient_quota"


class NotFound(CorralError):
    status = 404
    openai_type = "not_found_error"


class ModelNotFound(NotFound):
    def __init__(self, model: str) -> None:
        # Ollama's own wording, so clients that match on it keep working.
        super().__init__(f'model "{model}" not found, try pulling it first', param="model")
        self.model = model


class RouteNotFound(NotFound):
    pass


class MethodNotAllowed(CorralError):
    status = 405
    openai_type = "invalid_request_error"


class Conflict(CorralError):
    status = 409
    openai_type = "invalid_request_error"


class PayloadTooLarge(CorralError):
    status = 413
    openai_type = "invalid_request_error"


class RateLimited(CorralError):
    status = 429  # rendered as OpenAI's rate_limit_exceeded (see openai_body)


class Unavailable(CorralError):
    status = 503
    openai_type = "server_error"


class NoHealthyBackend(Unavailable):
    pass


class QueueFull(Unavailable):
    pass


class QueueTimeout(Unavailable):
    pass


class TooManyStreams(Unavailable):
    pass


class UpstreamError(CorralError):
    status = 502
    openai_type = "server_error"


class UpstreamTimeout(UpstreamError):
    status = 504
