"""Token budgets: group defaults, per-user overrides, period counters, increase requests.

A user's budget is their override if they have one (which may be "unlimited"), else
their group's, else none. Spending is counted per user per period in
``quota_periods`` so a restart keeps the count; the limits slice charges it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from corral.adapters.store.audit import insert_audit
from corral.adapters.store.db import Store, check_page
from corral.adapters.store.records import Budget, Page, QuotaRequest
from corral.adapters.store.schema import (
    REQUEST_STATES,
    GroupRow,
    QuotaOverrideRow,
    QuotaPeriodRow,
    QuotaRequestRow,
    UserRow,
)
from corral.adapters.store.users import MAX_TOKENS, user_row
from corral.core.errors import BadRequest, Conflict, NotFound
from corral.core.limits import period_bounds

__all__ = [
    "MAX_TOKENS",
    "UserBudget",
    "budget_of",
    "charge_period",
    "clear_user_budget",
    "decide_quota_request",
    "effective_budget",
    "file_quota_request",
    "list_quota_requests",
    "load_budgets",
    "period_bounds",
    "period_used",
    "set_group_budget",
    "set_override",
    "set_user_budget",
]

MAX_REASON = 4000


def _check_tokens(tokens: int | None) -> None:
    if tokens is not None and not 0 <= tokens <= MAX_TOKENS:
        raise BadRequest(
            f"token budget must be 0 to {MAX_TOKENS}, not {tokens}", param="token_budget"
        )


async def set_group_budget(
    store: Store, group: str, tokens: int | None, period: str = "month"
) -> None:
    """The default budget of ``group``'s members (None: unlimited)."""
    _check_tokens(tokens)
    period_bounds(period, datetime.now(UTC))  # validates the name
    async with store.write() as session:
        row = await session.scalar(select(GroupRow).where(GroupRow.name == group))
        if row is None:
            raise NotFound(f"no group {group!r}", param="group")
        row.token_budget, row.budget_period = tokens, period


async def set_override(session: AsyncSession, user_id: int, tokens: int | None, note: str) -> None:
    """Give a user their own budget (None: unlimited) inside an open transaction."""
    _check_tokens(tokens)
    row = await session.scalar(select(QuotaOverrideRow).where(QuotaOverrideRow.user_id == user_id))
    if row is None:
        session.add(QuotaOverrideRow(user_id=user_id, token_budget=tokens, note=note))
    else:
        row.token_budget, row.note = tokens, note
    await session.flush()


async def set_user_budget(store: Store, user: str, tokens: int | None, note: str = "") -> None:
    """Give ``user`` their own budget (None: unlimited), replacing the group's."""
    _check_tokens(tokens)
    async with store.write() as session:
        row = await user_row(session, user)
        await set_override(session, row.id, tokens, note[:MAX_REASON])


async def clear_user_budget(store: Store, user: str) -> None:
    """Drop ``user``'s override: the group's budget applies again."""
    async with store.write() as session:
        row = await user_row(session, user)
        override = await session.scalar(
            select(QuotaOverrideRow).where(QuotaOverrideRow.user_id == row.id)
        )
        if override is not None:
            await session.delete(override)


async def budget_of(session: AsyncSession, user: UserRow) -> Budget:
    """A user's effective budget inside a transaction."""
    group = None
    if user.group_id is not None:
        group = await session.get(GroupRow, user.group_id)
    period = group.budget_period if group is not None else "month"
    override = await session.scalar(
        select(QuotaOverrideRow).where(QuotaOverrideRow.user_id == user.id)
    )
    if override is not None:
        return Budget(override.token_budget, period, "user")
    if group is not None and group.token_budget is not None:
        return Budget(group.token_budget, period, "group")
    return Budget(None, period, "none")


async def effective_budget(store: Store, user: str) -> Budget:
    async with store.read() as session:
        return await budget_of(session, await user_row(session, user))


async def charge_period(
    store: Store, user_id: int, start: datetime, end: datetime, tokens: int
) -> int:
    """Add ``tokens`` to the user's count for the period ``[start, end)``; return the total."""
    if tokens < 0:
        raise BadRequest("a charge must be 0 or more tokens", param="tokens")
    bump = (
        update(QuotaPeriodRow)
        .where(QuotaPeriodRow.user_id == user_id, QuotaPeriodRow.period_start == start)
        .values(used=QuotaPeriodRow.used + tokens)
        .returning(QuotaPeriodRow.used)
    )
    async with store.write() as session:
        used = await session.scalar(bump)
        if used is None:
            try:
                async with session.begin_nested():
                    session.add(
                        QuotaPeriodRow(
                            user_id=user_id, period_start=start, period_end=end, used=tokens
                        )
                    )
                used = tokens
            except IntegrityError:  # another writer opened the period first
                used = await session.scalar(bump)
    return int(used or 0)


async def period_used(store: Store, user_id: int, start: datetime) -> int:
    async with store.read() as session:
        used = await session.scalar(
            select(QuotaPeriodRow.used).where(
                QuotaPeriodRow.user_id == user_id, QuotaPeriodRow.period_start == start
            )
        )
    return int(used or 0)


@dataclass(frozen=True, slots=True)
class UserBudget:
    """A user's budget as the gateway holds it in memory, with their spending so far."""

    user_id: int
    tokens: int | None  # None: unlimited
    period: str
    period_start: datetime
    period_end: datetime
    used: int


async def load_budgets(store: Store, now: datetime) -> dict[str, UserBudget]:
    """Every user with a budget, by name: three queries for all users, none per request."""
    async with store.read() as session:
        users = (
            await session.execute(
                select(UserRow.id, UserRow.name, GroupRow.token_budget, GroupRow.budget_period)
                .outerjoin(GroupRow, UserRow.group_id == GroupRow.id)
                .where(UserRow.disabled.is_(False))
            )
        ).all()
        overrides = dict(
            (
                await session.execute(
                    select(QuotaOverrideRow.user_id, QuotaOverrideRow.token_budget)
                )
            ).all()
        )
        starts = {p: period_bounds(p, now) for p in ("day", "week", "month")}
        spent = (
            await session.execute(
                select(
                    QuotaPeriodRow.user_id, QuotaPeriodRow.period_start, QuotaPeriodRow.used
                ).where(QuotaPeriodRow.period_end > now)
            )
        ).all()
    used = {(uid, start.astimezone(UTC)): n for uid, start, n in spent}
    found: dict[str, UserBudget] = {}
    for uid, name, group_tokens, group_period in users:
        tokens = overrides.get(uid, group_tokens)  # an override of None: unlimited
        if tokens is None:
            continue
        period = group_period or "month"
        start, end = starts[period]
        found[name] = UserBudget(uid, tokens, period, start, end, used.get((uid, start), 0))
    return found


_Decider = aliased(UserRow)


def _request(row: QuotaRequestRow, user: str, decider: str | None) -> QuotaRequest:
    return QuotaRequest(
        id=row.id,
        user_id=row.user_id,
        user_name=user,
        amount=row.amount,
        reason=row.reason,
        status=row.status,
        decided_by=decider,
        decided_at=row.decided_at,
        created_at=row.created_at,
    )


async def file_quota_request(
    store: Store, user: str, amount: int, reason: str = "", *, actor: str | None = None
) -> QuotaRequest:
    """A user asks for ``amount`` more tokens per period; it waits for an admin.

    With ``actor``, an audit event (``quota_request.file``) commits with it.
    """
    if not 0 < amount <= MAX_TOKENS:
        raise BadRequest(f"the amount must be 1 to {MAX_TOKENS}, not {amount}", param="amount")
    if len(reason) > MAX_REASON:
        raise BadRequest(f"the reason is over {MAX_REASON} characters", param="reason")
    async with store.write() as session:
        owner = await user_row(session, user)
        row = QuotaRequestRow(user_id=owner.id, amount=amount, reason=reason, status="pending")
        session.add(row)
        await session.flush()
        if actor is not None:
            after = {"id": row.id, "amount": amount, "reason": reason, "status": "pending"}
            await insert_audit(session, actor, "quota_request.file", user, after=after)
    return _request(row, user, None)


async def list_quota_requests(
    store: Store,
    *,
    status: str | None = None,
    user: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> Page[QuotaRequest]:
    check_page(limit, offset)
    if status is not None and status not in REQUEST_STATES:
        raise BadRequest(f"status must be one of {', '.join(REQUEST_STATES)}", param="status")
    query = (
        select(QuotaRequestRow, UserRow.name, _Decider.name)
        .join(UserRow, QuotaRequestRow.user_id == UserRow.id)
        .outerjoin(_Decider, QuotaRequestRow.decided_by == _Decider.id)
    )
    if status is not None:
        query = query.where(QuotaRequestRow.status == status)
    if user is not None:
        query = query.where(UserRow.name == user)
    query = query.order_by(QuotaRequestRow.id).limit(limit + 1).offset(offset)
    async with store.read() as session:
        rows = (await session.execute(query)).all()
    found = [_request(row, name, decider) for row, name, decider in rows]
    return Page(found[:limit], limit, offset, more=len(found) > limit)


async def decide_quota_request(
    store: Store,
    request_id: int,
    *,
    approve: bool,
    decided_by: str,
    decider_is_user: bool = True,
) -> QuotaRequest:
    """Approve (raising the user's own budget by the amount) or deny a pending request.

    ``decided_by`` names a user (NotFound if there is none), or, with
    ``decider_is_user=False``, an actor that is no user (``env``, ``local``): the
    request then records no decider and the audit event names the actor.
    The decision, the budget change and the audit event commit together or not at all.
    """
    now = datetime.now(UTC)
    async with store.write() as session:
        admin = await user_row(session, decided_by) if decider_is_user else None
        row = await session.get(QuotaRequestRow, request_id)
        if row is None:
            raise NotFound(f"no quota request {request_id}", param="id")
        if row.status != "pending":
            raise Conflict(f"quota request {request_id} is already {row.status}")
        owner = await session.get(UserRow, row.user_id)
        assert owner is not None  # the foreign key cascades deletes
        before = await budget_of(session, owner)
        if approve and before.tokens is not None:
            raised = min(before.tokens + row.amount, MAX_TOKENS)
            await set_override(session, owner.id, raised, f"quota request {request_id}")
        row.status = "approved" if approve else "denied"
        row.decided_by, row.decided_at = (None if admin is None else admin.id), now
        after = await budget_of(session, owner)
        await insert_audit(
            session,
            decided_by,
            f"quota_request.{row.status}",
            owner.name,
            before={"token_budget": before.tokens, "source": before.source},
            after={"token_budget": after.tokens, "source": after.source},
            time=now,
        )
        await session.flush()
        return _request(row, owner.name, None if admin is None else admin.name)
