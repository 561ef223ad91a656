"""Request audit rows: each request's metadata (and, when configured, its text), purged
after a retention period.

The rows travel like usage rows: the request appends its `ContentLine` to the usage
journal inside its usage line, and the ledger's batch writes both tables in one
transaction (`insert_request_audit`), idempotent on ``request_id``. `purge_request_audit`
deletes what is past retention, in bounded batches so a large purge never holds
SQLite's one write lock for long.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from corral.adapters.store.db import Store
from corral.adapters.store.schema import CONTENT_LEVELS, RequestAuditRow
from corral.core.errors import BadRequest
from corral.core.usage import UsageRecord

__all__ = [
    "ContentLine",
    "RequestAuditEntry",
    "insert_request_audit",
    "purge_request_audit",
    "request_audit_entry",
]

PURGE_BATCH = 5000
_TEXT_LIMITS = {
    "request_id": 64,
    "user_name": 128,
    "key_prefix": 16,
    "model": 256,
    "endpoint": 64,
    "dialect": 16,
    "backend": 128,
    "error": 512,
}


class ContentLine(msgspec.Struct, omit_defaults=True):
    """What the audit adds to a request's journal line (beside its usage record)."""

    level: str  # metadata or full
    params: dict[str, Any] = {}
    prompt: str | None = None  # full: the request's text fields, as JSON text
    response: str | None = None  # full: the answer's text
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class RequestAuditEntry:
    """One request audit row, to write or as read back."""

    request_id: str
    time: datetime
    model: str
    endpoint: str
    dialect: str
    status: int
    level: str
    user_name: str | None = None
    key_prefix: str | None = None
    backend: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_ms: float | None = None
    duration_ms: float = 0.0
    error: str | None = None
    params: dict[str, Any] | None = None
    prompt: str | None = None
    response: str | None = None
    truncated: bool = False


def request_audit_entry(record: UsageRecord, content: ContentLine) -> RequestAuditEntry:
    """The row for one finished request, from its usage record and its audit line."""
    return RequestAuditEntry(
        request_id=record.request_id,
        time=datetime.fromtimestamp(record.started_at, UTC),
        model=record.model,
        endpoint=record.endpoint,
        dialect=record.dialect,
        status=record.status,
        level=content.level,
        user_name=record.user,
        key_prefix=record.key_prefix,
        backend=record.backend,
        prompt_tokens=record.prompt_tokens,
        completion_tokens=record.completion_tokens,
        ttft_ms=None if record.ttfb_s is None else record.ttfb_s * 1000.0,
        duration_ms=record.duration_s * 1000.0,
        error=record.error,
        params=content.params,
        prompt=content.prompt,
        response=content.response,
        truncated=content.truncated,
    )


def _check(entry: RequestAuditEntry) -> dict[str, Any]:
    if not entry.request_id:
        raise BadRequest("a request audit row needs a request_id", param="request_id")
    if entry.time.tzinfo is None:
        raise BadRequest("request audit times must carry a timezone", param="time")
    if entry.level not in CONTENT_LEVELS:
        raise BadRequest(f"level must be one of {', '.join(CONTENT_LEVELS)}", param="level")
    row = asdict(entry)
    row["params"] = row["params"] or {}
    for name, limit in _TEXT_LIMITS.items():
        value = row[name]
        if isinstance(value, str) and len(value) > limit:
            row[name] = value[:limit]  # a label too long for its column is cut, not lost
    return row


async def insert_request_audit(session: AsyncSession, entries: Sequence[RequestAuditEntry]) -> int:
    """Add ``entries`` inside an open transaction; a request_id already stored is skipped."""
    rows: dict[str, dict[str, Any]] = {}
    for entry in entries:
        rows.setdefault(entry.request_id, _check(entry))
    if not rows:
        return 0
    bind = session.get_bind()
    dialect_insert = postgresql.insert if bind.dialect.name == "postgresql" else sqlite.insert
    statement = (
        dialect_insert(RequestAuditRow)
        .on_conflict_do_nothing(index_elements=[RequestAuditRow.request_id])
        .returning(RequestAuditRow.request_id)
    )
    inserted = await session.scalars(statement, list(rows.values()))
    return len(inserted.all())


async def purge_request_audit(store: Store, before: datetime, *, batch: int = PURGE_BATCH) -> int:
    """Delete request audit rows from before ``before``; return how many went.

    One transaction per ``batch`` rows, oldest first, so other writers (the usage
    ledger) get the lock between batches.
    """
    if before.tzinfo is None:
        raise BadRequest("the purge time must carry a timezone", param="before")
    total = 0
    while True:
        oldest = (
            select(RequestAuditRow.id)
            .where(RequestAuditRow.time < before)
            .order_by(RequestAuditRow.time)
            .limit(batch)
        )
        async with store.write() as session:
            result = await session.execute(
                delete(RequestAuditRow)
                .where(RequestAuditRow.id.in_(oldest))
                .execution_options(synchronize_session=False)
            )
        gone = int(result.rowcount or 0)  # type: ignore[attr-defined]
        total += gone
        if gone < batch:
            return total
