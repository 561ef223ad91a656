"""Audit events: who did what, with the record before and after, searchable."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Text, cast, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from corral.adapters.store.db import Store, check_page
from corral.adapters.store.records import AuditEvent, Page, check_name
from corral.adapters.store.schema import AuditRow
from corral.core.errors import BadRequest

__all__ = ["add_audit", "insert_audit", "search_audit"]

MAX_TEXT = 256
MAX_JSON = 1_000_000  # bytes of before/after; an audit row is not a blob store


def _check_json(value: Any, what: str) -> Any:
    if value is None:
        return None
    try:
        size = len(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"audit {what} must be plain JSON: {exc}", param=what) from exc
    if size > MAX_JSON:
        raise BadRequest(f"audit {what} is over {MAX_JSON} bytes", param=what)
    return value


def _event(row: AuditRow) -> AuditEvent:
    return AuditEvent(
        row.id, row.time, row.actor, row.action, row.target, row.before, row.after, row.request_id
    )


async def insert_audit(
    session: AsyncSession,
    actor: str,
    action: str,
    target: str = "",
    *,
    before: Any = None,
    after: Any = None,
    request_id: str | None = None,
    time: datetime | None = None,
) -> AuditRow:
    """Add an event inside an open transaction, so it commits with the change it records."""
    check_name(actor, "actor")
    check_name(action, "action")
    if len(target) > MAX_TEXT:
        raise BadRequest(f"audit target is over {MAX_TEXT} characters", param="target")
    row = AuditRow(
        time=time or datetime.now(UTC),
        actor=actor,
        action=action,
        target=target,
        before=_check_json(before, "before"),
        after=_check_json(after, "after"),
        request_id=request_id,
    )
    session.add(row)
    await session.flush()
    return row


async def add_audit(
    store: Store,
    actor: str,
    action: str,
    target: str = "",
    *,
    before: Any = None,
    after: Any = None,
    request_id: str | None = None,
    time: datetime | None = None,
) -> AuditEvent:
    async with store.write() as session:
        row = await insert_audit(
            session,
            actor,
            action,
            target,
            before=before,
            after=after,
            request_id=request_id,
            time=time,
        )
    return _event(row)


async def search_audit(
    store: Store,
    *,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    text: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> Page[AuditEvent]:
    """Events newest first; ``text`` matches (case-insensitively, literally) anywhere
    in the actor, action, target or the before/after JSON."""
    check_page(limit, offset)
    where: list[ColumnElement[bool]] = []
    if actor is not None:
        where.append(AuditRow.actor == actor)
    if action is not None:
        where.append(AuditRow.action == action)
    if target is not None:
        where.append(AuditRow.target == target)
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise BadRequest(f"{name} must carry a timezone", param=name)
    if since is not None:
        where.append(AuditRow.time >= since)
    if until is not None:
        where.append(AuditRow.time < until)
    if text:
        if len(text) > MAX_TEXT:
            raise BadRequest(f"search text is over {MAX_TEXT} characters", param="text")
        # autoescape: % and _ in the text are matched as themselves, not as wildcards.
        where.append(
            or_(
                *(
                    column.icontains(text, autoescape=True)
                    for column in (
                        AuditRow.actor,
                        AuditRow.action,
                        AuditRow.target,
                        cast(AuditRow.before, Text),
                        cast(AuditRow.after, Text),
                    )
                )
            )
        )
    async with store.read() as session:
        rows = list(
            await session.scalars(
                select(AuditRow)
                .where(*where)
                .order_by(AuditRow.time.desc(), AuditRow.id.desc())
                .limit(limit + 1)
                .offset(offset)
            )
        )
    events = [_event(row) for row in rows]
    return Page(events[:limit], limit, offset, more=len(events) > limit)
