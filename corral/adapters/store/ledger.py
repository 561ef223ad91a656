"""The usage ledger: one row per request, written in batches, summed on demand.

Writes are idempotent on ``request_id`` (insert-or-ignore, expressed with each
dialect's ON CONFLICT DO NOTHING construct), so replaying a journal after a crash
adds only what is missing. Amendments (counts a backend's tokenizer gave after the
row was written) are upserts on the same key: replayed, they change nothing more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from datetime import datetime
from typing import Any, Literal, cast

from sqlalchemy import ColumnElement, Table, func, select
from sqlalchemy.dialects import postgresql, sqlite

from corral.adapters.store.db import Store, check_page
from corral.adapters.store.records import Page, UsageEntry, UsageTotal
from corral.adapters.store.request_audit import RequestAuditEntry, insert_request_audit
from corral.adapters.store.schema import UsageRow, UserRow
from corral.core.errors import BadRequest

__all__ = [
    "GroupBy",
    "amend_usage_counts",
    "query_usage",
    "record_usage_batch",
    "tokens_used",
    "usage_totals",
]

GroupBy = Literal["user", "model", "day"]
_TEXT_LIMITS = {"request_id": 64, "key_prefix": 16, "tenant": 128, "model": 256, "backend": 128}
_COLUMNS = tuple(f.name for f in fields(UsageEntry))


def _check_entry(entry: UsageEntry) -> dict[str, Any]:
    if not entry.request_id:
        raise BadRequest("a usage row needs a request_id", param="request_id")
    if entry.time.tzinfo is None:
        raise BadRequest("usage times must carry a timezone", param="time")
    if entry.prompt_tokens < 0 or entry.completion_tokens < 0:
        raise BadRequest("token counts must be 0 or more", param="tokens")
    # Field by field, not dataclasses.asdict: that deep-copies every value, and was half
    # the event loop's time per batch (the values are immutable; a shallow dict is right).
    row = {name: getattr(entry, name) for name in _COLUMNS}
    for name, limit in _TEXT_LIMITS.items():
        value = row[name]
        if isinstance(value, str) and len(value) > limit:
            row[name] = value[:limit]  # a label too long to index is cut, not lost
    reason = row["routing_reason"]
    if isinstance(reason, str) and len(reason) > 256:
        row["routing_reason"] = reason[:256]
    return row


async def record_usage_batch(
    store: Store,
    entries: Sequence[UsageEntry],
    audits: Sequence[RequestAuditEntry] = (),
) -> int:
    """Write ``entries`` (and the requests' ``audits`` rows) in one transaction; return
    how many usage rows were new.

    A request_id already stored (or repeated in the batch) is skipped, not an error.
    """
    rows: dict[str, dict[str, Any]] = {}
    for entry in entries:
        rows.setdefault(entry.request_id, _check_entry(entry))
    if not rows and not audits:
        return 0
    dialect_insert = postgresql.insert if store.dialect == "postgresql" else sqlite.insert
    # On the table, not the ORM class: a plain executemany, without the ORM's bulk-insert
    # bookkeeping per row (it runs on the event loop, between the requests' chunks).
    table = cast(Table, UsageRow.__table__)
    statement = (
        dialect_insert(table)
        .on_conflict_do_nothing(index_elements=[table.c.request_id])
        .returning(table.c.request_id)
    )
    async with store.write() as session:
        added = 0
        if rows:
            inserted = await session.execute(statement, list(rows.values()))
            added = len(inserted.all())
        if audits:
            await insert_request_audit(session, audits)
        return added


async def amend_usage_counts(store: Store, entries: Sequence[UsageEntry]) -> int:
    """Put better token counts (and where they came from) on rows already written; a row
    that is missing (its first line was lost) is written whole. Idempotent, one
    transaction; returns how many entries were applied."""
    rows: dict[str, dict[str, Any]] = {}
    for entry in entries:
        rows[entry.request_id] = _check_entry(entry)  # the last amendment wins
    if not rows:
        return 0
    dialect_insert = postgresql.insert if store.dialect == "postgresql" else sqlite.insert
    insert = dialect_insert(UsageRow)
    statement = insert.on_conflict_do_update(
        index_elements=[UsageRow.request_id],
        set_={
            name: insert.excluded[name]
            for name in ("prompt_tokens", "completion_tokens", "tokens_estimated", "tokens_source")
        },
    )
    async with store.write() as session:
        await session.execute(statement, list(rows.values()))
    return len(rows)


def _check_range(since: datetime | None, until: datetime | None) -> None:
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise BadRequest(f"{name} must carry a timezone", param=name)
    if since is not None and until is not None and until < since:
        raise BadRequest("until is before since", param="until")


def _day(store: Store) -> ColumnElement[str]:
    if store.dialect == "postgresql":
        return func.to_char(func.timezone("UTC", UsageRow.time), "YYYY-MM-DD")
    return func.date(UsageRow.time)  # SQLite keeps naive UTC text, so date() is the UTC day


def _filters(
    user_id: int | None, since: datetime | None, until: datetime | None
) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if user_id is not None:
        where.append(UsageRow.user_id == user_id)
    if since is not None:
        where.append(UsageRow.time >= since)
    if until is not None:
        where.append(UsageRow.time < until)
    return where


async def usage_totals(
    store: Store,
    *,
    group_by: GroupBy = "model",
    user: str | None = None,
    model: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> Page[UsageTotal]:
    """Requests and tokens in ``[since, until)``, per user name, model or UTC day, a page
    at a time (ordered by the group's key).

    With ``user`` or ``model``, only those rows. Rows of deleted or anonymous users
    group under a None key.
    """
    check_page(limit, offset)
    _check_range(since, until)
    key: ColumnElement[Any]
    if group_by == "user":
        key = UserRow.name.expression
    elif group_by == "model":
        key = UsageRow.model.expression
    elif group_by == "day":
        key = _day(store)
    else:
        raise BadRequest("group_by must be user, model or day", param="group_by")
    async with store.read() as session:
        user_id = None
        if user is not None:
            user_id = await session.scalar(select(UserRow.id).where(UserRow.name == user))
            if user_id is None:
                return Page([], limit, offset, more=False)
        where = _filters(user_id, since, until)
        if model is not None:
            where.append(UsageRow.model == model)
        query = (
            select(
                key.label("key"),
                func.count(UsageRow.id),
                func.coalesce(func.sum(UsageRow.prompt_tokens), 0),
                func.coalesce(func.sum(UsageRow.completion_tokens), 0),
            )
            .select_from(UsageRow)
            .outerjoin(UserRow, UsageRow.user_id == UserRow.id)
            .where(*where)
            .group_by(key)
            .order_by(key)
            .limit(limit + 1)
            .offset(offset)
        )
        rows = (await session.execute(query)).all()
    found = [
        UsageTotal(None if k is None else str(k), int(n), int(p), int(c)) for k, n, p, c in rows
    ]
    return Page(found[:limit], limit, offset, more=len(found) > limit)


async def query_usage(
    store: Store,
    *,
    group_by: GroupBy = "model",
    user: str | None = None,
    model: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[UsageTotal]:
    """`usage_totals` without the page around it."""
    page = await usage_totals(
        store,
        group_by=group_by,
        user=user,
        model=model,
        since=since,
        until=until,
        limit=limit,
        offset=offset,
    )
    return page.items


async def tokens_used(
    store: Store, user_id: int, since: datetime, until: datetime | None = None
) -> int:
    """Prompt plus completion tokens a user spent in ``[since, until)``."""
    _check_range(since, until)
    async with store.read() as session:
        total = await session.scalar(
            select(
                func.coalesce(func.sum(UsageRow.prompt_tokens + UsageRow.completion_tokens), 0)
            ).where(*_filters(user_id, since, until))
        )
    return int(total or 0)
