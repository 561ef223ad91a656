"""One search over the audit: admin events and request audit rows, newest first.

Both tables are filtered in SQL and merged by one ``UNION ALL`` of (kind, id, time),
ordered and paged in the database; only the page's rows are then read whole. Text
matches literally and case-insensitively (``%`` and ``_`` are themselves), as a scan
of the rows the other filters leave: there is no full-text index, and the retention
period keeps the request rows bounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import msgspec
from sqlalchemy import ColumnElement, Select, String, Text, cast, literal, or_, select, union_all

from corral.adapters.store.db import Store, check_page
from corral.adapters.store.records import AuditEvent, Page
from corral.adapters.store.request_audit import RequestAuditEntry
from corral.adapters.store.schema import AuditRow, RequestAuditRow
from corral.core.errors import BadRequest

__all__ = ["AuditHit", "Kind", "search_everything"]

Kind = Literal["admin", "request"]
MAX_TEXT = 256


@dataclass(frozen=True, slots=True)
class AuditHit:
    """One search result: an admin event or a request, never both."""

    kind: Kind
    id: int
    time: datetime
    event: AuditEvent | None = None
    request: RequestAuditEntry | None = None


def _check(since: datetime | None, until: datetime | None, text: str | None) -> None:
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise BadRequest(f"{name} must carry a timezone", param=name)
    if since is not None and until is not None and until < since:
        raise BadRequest("until is before since", param="until")
    if text is not None and len(text) > MAX_TEXT:
        raise BadRequest(f"search text is over {MAX_TEXT} characters", param="text")


def _admin_query(
    user: str | None,
    action: str | None,
    since: datetime | None,
    until: datetime | None,
    text: str | None,
) -> Select[str, int, datetime]:
    where: list[ColumnElement[bool]] = []
    if user is not None:
        where.append(AuditRow.actor == user)
    if action is not None:
        where.append(AuditRow.action == action)
    if since is not None:
        where.append(AuditRow.time >= since)
    if until is not None:
        where.append(AuditRow.time < until)
    if text:
        columns = (
            AuditRow.actor,
            AuditRow.action,
            AuditRow.target,
            cast(AuditRow.before, Text),
            cast(AuditRow.after, Text),
        )
        where.append(or_(*(c.icontains(text, autoescape=True) for c in columns)))
    return select(literal("admin", String(8)).label("kind"), AuditRow.id, AuditRow.time).where(
        *where
    )


def _request_query(
    user: str | None,
    model: str | None,
    action: str | None,
    since: datetime | None,
    until: datetime | None,
    text: str | None,
) -> Select[str, int, datetime]:
    r = RequestAuditRow
    where: list[ColumnElement[bool]] = []
    if user is not None:
        where.append(r.user_name == user)
    if model is not None:
        where.append(r.model == model)
    if action is not None:
        where.append(r.endpoint == action)
    if since is not None:
        where.append(r.time >= since)
    if until is not None:
        where.append(r.time < until)
    if text:
        # The prompt is kept as JSON text: look for the text as JSON writes it (quotes,
        # backslashes and control characters escaped), which is how it appears there.
        escaped = msgspec.json.encode(text).decode()[1:-1]
        where.append(
            or_(
                r.response.icontains(text, autoescape=True),
                r.prompt.icontains(escaped, autoescape=True),
                r.error.icontains(text, autoescape=True),
            )
        )
    return select(literal("request", String(8)).label("kind"), r.id, r.time).where(*where)


def _event(row: AuditRow) -> AuditEvent:
    return AuditEvent(
        row.id, row.time, row.actor, row.action, row.target, row.before, row.after, row.request_id
    )


def _request(row: RequestAuditRow) -> RequestAuditEntry:
    return RequestAuditEntry(
        request_id=row.request_id,
        time=row.time,
        model=row.model,
        endpoint=row.endpoint,
        dialect=row.dialect,
        status=row.status,
        level=row.level,
        user_name=row.user_name,
        key_prefix=row.key_prefix,
        backend=row.backend,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        ttft_ms=row.ttft_ms,
        duration_ms=row.duration_ms,
        error=row.error,
        params=row.params,
        prompt=row.prompt,
        response=row.response,
        truncated=row.truncated,
    )


async def search_everything(
    store: Store,
    *,
    kind: Kind | None = None,
    user: str | None = None,
    model: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    text: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> Page[AuditHit]:
    """Admin events and requests matching every filter given, newest first.

    ``user`` is an event's actor or a request's user; ``action`` an event's action or
    a request's endpoint; ``model`` applies to requests only (admin events have none,
    so giving it leaves them out); ``text`` searches an event's actor, action, target
    and before/after JSON, and a request's prompt, answer and error.
    """
    check_page(limit, offset)
    _check(since, until, text)
    parts = []
    if kind in (None, "admin") and model is None:
        parts.append(_admin_query(user, action, since, until, text))
    if kind in (None, "request"):
        parts.append(_request_query(user, model, action, since, until, text))
    if not parts:
        return Page([], limit, offset, more=False)
    merged = union_all(*parts).subquery()
    page = (
        select(merged.c.kind, merged.c.id)
        .order_by(merged.c.time.desc(), merged.c.kind, merged.c.id.desc())
        .limit(limit + 1)
        .offset(offset)
    )
    async with store.read() as session:
        found = [(str(k), int(i)) for k, i in (await session.execute(page)).all()]
        shown = found[:limit]
        admin_ids = [i for k, i in shown if k == "admin"]
        request_ids = [i for k, i in shown if k == "request"]
        events = {}
        if admin_ids:
            rows = await session.scalars(select(AuditRow).where(AuditRow.id.in_(admin_ids)))
            events = {row.id: _event(row) for row in rows}
        requests = {}
        if request_ids:
            rows2 = await session.scalars(
                select(RequestAuditRow).where(RequestAuditRow.id.in_(request_ids))
            )
            requests = {row.id: (row.time, _request(row)) for row in rows2}
    hits = []
    for k, i in shown:
        if k == "admin" and i in events:
            event = events[i]
            hits.append(AuditHit("admin", i, event.time, event=event))
        elif k == "request" and i in requests:  # a row purged meanwhile is skipped
            time, request = requests[i]
            hits.append(AuditHit("request", i, time, request=request))
    return Page(hits, limit, offset, more=len(found) > limit)
