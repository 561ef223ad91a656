"""The store's tables, one schema for SQLite and PostgreSQL.

Only portable types: integers, strings, booleans, JSON (SQLAlchemy's, text on SQLite
and ``json`` on PostgreSQL) and UTC timestamps. Constraints carry names from the
naming convention so Alembic's batch mode can rebuild SQLite tables later.

The migrations in ``migrations/versions`` create these tables; a test compares the
migrated database with this metadata on both engines, so the two cannot drift.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "ROLES",
    "SCOPES",
    "ApiKeyRow",
    "AuditRow",
    "BackendRow",
    "Base",
    "GroupRow",
    "QuotaOverrideRow",
    "QuotaPeriodRow",
    "QuotaRequestRow",
    "RequestAuditRow",
    "UTCDateTime",
    "UsageRow",
    "UserRow",
    "metadata",
]

ROLES = ("admin", "user")
SCOPES = ("inference", "admin", "models")
PERIODS = ("day", "week", "month")
REQUEST_STATES = ("pending", "approved", "denied")
CONTENT_LEVELS = ("metadata", "full")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)

# SQLite's rowid alias must be INTEGER; PostgreSQL gets a 64-bit id for the big tables.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on both engines.

    SQLite has no timezone type and hands back naive values; this stores naive UTC
    there and re-attaches UTC on the way out. Naive input is refused, not guessed.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _now() -> datetime:
    return datetime.now(UTC)


def _one_of(column: str, values: tuple[str, ...]) -> str:
    # Literal text from our own constants, never from input: a CHECK needs SQL text.
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = metadata
    type_annotation_map: dict[Any, Any] = {datetime: UTCDateTime}


class GroupRow(Base):
    """A group of users with a scheduling weight and a default token budget."""

    __tablename__ = "groups"
    __table_args__ = (
        CheckConstraint("weight >= 0", name="weight_nonnegative"),
        CheckConstraint("token_budget IS NULL OR token_budget >= 0", name="budget_nonnegative"),
        CheckConstraint(_one_of("budget_period", PERIODS), name="budget_period"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    weight: Mapped[float] = mapped_column(Float, default=1.0)
    # Tokens per budget period for members without an override; NULL is no budget.
    token_budget: Mapped[int | None] = mapped_column(BigInteger)
    budget_period: Mapped[str] = mapped_column(String(8), default="month")
    created_at: Mapped[datetime] = mapped_column(default=_now)


class UserRow(Base):
    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint(_one_of("role", ROLES), name="role"),
        CheckConstraint(
            "max_concurrent IS NULL OR max_concurrent >= 0", name="concurrency_nonnegative"
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    role: Mapped[str] = mapped_column(String(16), default="user")
    group_id: Mapped[int | None] = mapped_column(
        ForeignKey("groups.id", ondelete="SET NULL"), index=True
    )
    password_hash: Mapped[str | None] = mapped_column(String(255))
    max_concurrent: Mapped[int | None] = mapped_column(Integer)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=_now)
    updated_at: Mapped[datetime] = mapped_column(default=_now, onupdate=_now)


class ApiKeyRow(Base):
    """An API key: only its HMAC digest is kept; the prefix identifies it to people."""

    __tablename__ = "api_keys"
    __table_args__ = (
        CheckConstraint("rpm_limit IS NULL OR rpm_limit >= 0", name="rpm_nonnegative"),
        CheckConstraint("tpm_limit IS NULL OR tpm_limit >= 0", name="tpm_nonnegative"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    prefix: Mapped[str] = mapped_column(String(16), unique=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    scopes: Mapped[list[str]] = mapped_column(JSON)
    # NULL: every model; a list: only these.
    allowed_models: Mapped[list[str] | None] = mapped_column(JSON(none_as_null=True))
    rpm_limit: Mapped[int | None] = mapped_column(Integer)
    tpm_limit: Mapped[int | None] = mapped_column(Integer)
    expires_at: Mapped[datetime | None] = mapped_column()
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    revoked_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=_now)


class BackendRow(Base):
    """A backend registered at run time (config-file backends stay declarative)."""

    __tablename__ = "backends"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    url: Mapped[str] = mapped_column(String(2048))
    kind: Mapped[str] = mapped_column(String(16), default="ollama")
    # The rest of a BackendConfig (max_concurrency, weight, vram_gb, ...), as given.
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_by: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=_now)


class UsageRow(Base):
    """One row per request; ``request_id`` is unique so replaying a journal is harmless."""

    __tablename__ = "usage"
    __table_args__ = (
        Index("ix_usage_user_id_time", "user_id", "time"),
        Index("ix_usage_time", "time"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64), unique=True)
    time: Mapped[datetime] = mapped_column()
    # Kept when the user goes: the ledger outlives accounts.
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    key_prefix: Mapped[str | None] = mapped_column(String(16))
    tenant: Mapped[str | None] = mapped_column(String(128))
    model: Mapped[str] = mapped_column(String(256))
    backend: Mapped[str | None] = mapped_column(String(128))
    dialect_in: Mapped[str] = mapped_column(String(16))
    dialect_out: Mapped[str | None] = mapped_column(String(16))
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    tokens_estimated: Mapped[bool] = mapped_column(Boolean, default=False)
    # How the counts were had: "reported", "tokenized" or "estimated" (NULL: none).
    tokens_source: Mapped[str | None] = mapped_column(String(16))
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    duration_ms: Mapped[float] = mapped_column(Float, default=0.0)
    status: Mapped[int] = mapped_column(Integer)
    routing_reason: Mapped[str | None] = mapped_column(String(256))


class QuotaOverrideRow(Base):
    """A user's own token budget, in place of the group's."""

    __tablename__ = "quota_overrides"
    __table_args__ = (
        CheckConstraint("token_budget IS NULL OR token_budget >= 0", name="budget_nonnegative"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), unique=True)
    # NULL here means "no budget at all", unlike a missing row ("the group's").
    token_budget: Mapped[int | None] = mapped_column(BigInteger)
    note: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime] = mapped_column(default=_now, onupdate=_now)


class QuotaPeriodRow(Base):
    """Tokens a user spent in one budget period, so a restart keeps the count."""

    __tablename__ = "quota_periods"
    __table_args__ = (
        UniqueConstraint("user_id", "period_start"),
        CheckConstraint("used >= 0", name="used_nonnegative"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    period_start: Mapped[datetime] = mapped_column()
    period_end: Mapped[datetime] = mapped_column()
    used: Mapped[int] = mapped_column(BigInteger, default=0)


class QuotaRequestRow(Base):
    """A user's request for more budget, and the admin's decision."""

    __tablename__ = "quota_requests"
    __table_args__ = (
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint(_one_of("status", REQUEST_STATES), name="status"),
        Index("ix_quota_requests_status_created_at", "status", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="pending")
    decided_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    decided_at: Mapped[datetime | None] = mapped_column()
    created_at: Mapped[datetime] = mapped_column(default=_now)


class AuditRow(Base):
    """Who did what, with the record before and after (JSON)."""

    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_time", "time"),
        Index("ix_audit_events_actor_time", "actor", "time"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    time: Mapped[datetime] = mapped_column(default=_now)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(String(256), default="")
    before: Mapped[Any | None] = mapped_column(JSON(none_as_null=True))
    after: Mapped[Any | None] = mapped_column(JSON(none_as_null=True))
    request_id: Mapped[str | None] = mapped_column(String(64))


class RequestAuditRow(Base):
    """One request as the audit keeps it (``audit.content``: metadata or full).

    Apart from ``usage`` because it is purged after ``audit.retention_days`` and may
    hold prompts and answers; the user is kept by name, as audit events keep actors,
    so a row still says who it was after the account is gone.
    """

    __tablename__ = "request_audit"
    __table_args__ = (
        Index("ix_request_audit_time", "time"),
        Index("ix_request_audit_user_name_time", "user_name", "time"),
        CheckConstraint(_one_of("level", CONTENT_LEVELS), name="level"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64), unique=True)
    time: Mapped[datetime] = mapped_column()
    user_name: Mapped[str | None] = mapped_column(String(128))
    key_prefix: Mapped[str | None] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(String(256))
    endpoint: Mapped[str] = mapped_column(String(64))
    dialect: Mapped[str] = mapped_column(String(16))
    backend: Mapped[str | None] = mapped_column(String(128))
    status: Mapped[int] = mapped_column(Integer)
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    duration_ms: Mapped[float] = mapped_column(Float, default=0.0)
    error: Mapped[str | None] = mapped_column(String(512))
    level: Mapped[str] = mapped_column(String(8))  # metadata or full
    # The request's parameters with its text fields taken out (their names in "omitted").
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # full only: the request's text fields as JSON text, and the answer's text.
    prompt: Mapped[str | None] = mapped_column(Text)
    response: Mapped[str | None] = mapped_column(Text)
    truncated: Mapped[bool] = mapped_column(Boolean, default=False)
