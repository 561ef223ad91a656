"""What the store hands out and takes in: frozen values, never live ORM rows.

Returning plain values keeps sessions short (nothing lazy-loads after a transaction
ends) and lets the later slices cache them in memory (keys, limits) safely.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from corral.core.errors import BadRequest
from corral.core.usage import UsageRecord

__all__ = [
    "ApiKey",
    "AuditEvent",
    "Backend",
    "Budget",
    "Group",
    "NewKey",
    "Page",
    "QuotaRequest",
    "UsageEntry",
    "UsageTotal",
    "User",
    "check_name",
    "usage_entry",
]

T = TypeVar("T")

MAX_NAME = 128


def check_name(value: str, what: str = "name") -> str:
    """A name is 1-128 printable characters without surrounding spaces; stored as given.

    Quotes, semicolons and SQL keywords are fine: every value travels as a bound
    parameter, so ``x'; DROP TABLE users;--`` is just an odd name.
    """
    if not isinstance(value, str) or not value or len(value) > MAX_NAME:
        raise BadRequest(f"{what} must be 1 to {MAX_NAME} characters", param=what)
    if value != value.strip() or not value.isprintable():
        raise BadRequest(
            f"{what} must not have surrounding spaces or control characters", param=what
        )
    return value


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing; ``more`` says whether another page follows."""

    items: list[T]
    limit: int
    offset: int
    more: bool


@dataclass(frozen=True, slots=True)
class Group:
    id: int
    name: str
    weight: float
    token_budget: int | None
    budget_period: str


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str
    role: str
    group: str | None
    disabled: bool
    max_concurrent: int | None
    has_password: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A key as stored: everything but the secret, which only its holder knows."""

    id: int
    user_id: int
    user_name: str
    prefix: str
    name: str
    scopes: tuple[str, ...]
    allowed_models: tuple[str, ...] | None
    rpm_limit: int | None
    tpm_limit: int | None
    expires_at: datetime | None
    revoked: bool
    created_at: datetime

    def usable(self, now: datetime) -> bool:
        return not self.revoked and (self.expires_at is None or now < self.expires_at)


@dataclass(frozen=True, slots=True)
class NewKey:
    """A freshly made key; ``plaintext`` exists only here and is never stored."""

    key: ApiKey
    plaintext: str


@dataclass(frozen=True, slots=True)
class Backend:
    name: str
    url: str
    kind: str
    options: dict[str, Any]
    created_by: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class UsageEntry:
    """One usage row to write (the ledger's unit); ``request_id`` makes writes idempotent."""

    request_id: str
    time: datetime
    model: str
    dialect_in: str
    status: int
    user_id: int | None = None
    key_prefix: str | None = None
    tenant: str | None = None
    backend: str | None = None
    dialect_out: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tokens_estimated: bool = False
    tokens_source: str | None = None  # "reported", "tokenized", "estimated"; None: no counts
    ttft_ms: float | None = None
    duration_ms: float = 0.0
    routing_reason: str | None = None


def usage_entry(
    record: UsageRecord,
    *,
    user_id: int | None = None,
    key_prefix: str | None = None,
    dialect_out: str | None = None,
) -> UsageEntry:
    """The row for one finished request, from the gateway's own usage record."""
    return UsageEntry(
        request_id=record.request_id,
        time=datetime.fromtimestamp(record.started_at, UTC),
        model=record.model,
        dialect_in=record.dialect,
        status=record.status,
        user_id=user_id,
        key_prefix=key_prefix,
        tenant=record.tenant or None,
        backend=record.backend,
        dialect_out=dialect_out,
        prompt_tokens=record.prompt_tokens or 0,
        completion_tokens=record.completion_tokens or 0,
        tokens_estimated=record.usage_estimated,
        tokens_source=record.usage_source,
        ttft_ms=None if record.ttfb_s is None else record.ttfb_s * 1000.0,
        duration_ms=record.duration_s * 1000.0,
        routing_reason=record.route_reason,
    )


@dataclass(frozen=True, slots=True)
class UsageTotal:
    """Usage summed over one group: a user name, a model, or a day (``YYYY-MM-DD``)."""

    key: str | None
    requests: int
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class AuditEvent:
    id: int
    time: datetime
    actor: str
    action: str
    target: str
    before: Any
    after: Any
    request_id: str | None


@dataclass(frozen=True, slots=True)
class Budget:
    """A user's effective token budget per period and where it came from."""

    tokens: int | None  # None: unlimited
    period: str
    source: str  # "user", "group" or "none"


@dataclass(frozen=True, slots=True)
class QuotaRequest:
    id: int
    user_id: int
    user_name: str
    amount: int
    reason: str
    status: str
    decided_by: str | None
    decided_at: datetime | None
    created_at: datetime
