"""Users, groups and passwords: each operation one transaction.

Passwords (for the dashboards) are argon2id hashes; hashing is CPU work of a few
hundred milliseconds, so it runs in a thread, never on the event loop.
"""

from __future__ import annotations

import asyncio
import math

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from corral.adapters.store.db import Store, check_page
from corral.adapters.store.records import Group, Page, User, check_name
from corral.adapters.store.schema import PERIODS, ROLES, GroupRow, UserRow
from corral.core.errors import BadRequest, Conflict, NotFound

__all__ = [
    "DEFAULT_HASHER",
    "KEEP",
    "MAX_INT",
    "MAX_TOKENS",
    "Keep",
    "change_group",
    "change_user",
    "count_users",
    "create_group",
    "create_user",
    "get_group",
    "get_user",
    "group_row",
    "group_value",
    "hash_password",
    "insert_group",
    "insert_user",
    "list_groups",
    "list_users",
    "set_password",
    "update_group",
    "update_user",
    "user_row",
    "user_value",
    "verify_password",
]

DEFAULT_HASHER = PasswordHasher()  # argon2id with RFC 9106's low-memory parameters
MAX_PASSWORD = 1024
# Budgets are 64-bit columns; nothing (an approval included) pushes one past what they hold.
MAX_TOKENS = 2**63 - 1
MAX_INT = 2**31 - 1  # the largest limit a 32-bit column holds (PostgreSQL's integer)


class Keep:
    """The default of an `update_user` field that should stay as it is."""


KEEP = Keep()


def group_value(row: GroupRow) -> Group:
    return Group(row.id, row.name, row.weight, row.token_budget, row.budget_period)


def _user(row: UserRow, group: str | None) -> User:
    return User(
        id=row.id,
        name=row.name,
        role=row.role,
        group=group,
        disabled=row.disabled,
        max_concurrent=row.max_concurrent,
        has_password=row.password_hash is not None,
        created_at=row.created_at,
    )


def _check_weight(weight: float) -> float:
    if not math.isfinite(weight) or weight < 0:
        raise BadRequest(f"group weight must be 0 or more, not {weight}", param="weight")
    return float(weight)


def _check_budget(tokens: int | None, period: str) -> None:
    if tokens is not None and not 0 <= tokens <= MAX_TOKENS:
        raise BadRequest(
            f"token budget must be 0 to {MAX_TOKENS}, not {tokens}", param="token_budget"
        )
    if period not in PERIODS:
        raise BadRequest(f"budget period must be one of {', '.join(PERIODS)}", param="period")


def _check_concurrency(most: int | None) -> None:
    if most is not None and not 0 <= most <= MAX_INT:
        raise BadRequest(f"max_concurrent must be 0 to {MAX_INT}", param="max_concurrent")


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise BadRequest(f"role must be one of {', '.join(ROLES)}, not {role!r}", param="role")
    return role


async def insert_group(
    session: AsyncSession,
    name: str,
    *,
    weight: float = 1.0,
    token_budget: int | None = None,
    budget_period: str = "month",
) -> GroupRow:
    """Add a group inside an open transaction; a taken name is `Conflict`."""
    check_name(name, "name")
    _check_weight(weight)
    _check_budget(token_budget, budget_period)
    row = GroupRow(name=name, weight=weight, token_budget=token_budget, budget_period=budget_period)
    session.add(row)
    try:
        async with session.begin_nested():  # the clash is reported, the transaction lives
            await session.flush()
    except IntegrityError as exc:
        raise Conflict(f"group {name!r} already exists", param="name") from exc
    return row


async def create_group(
    store: Store,
    name: str,
    *,
    weight: float = 1.0,
    token_budget: int | None = None,
    budget_period: str = "month",
) -> Group:
    async with store.write() as session:
        row = await insert_group(
            session, name, weight=weight, token_budget=token_budget, budget_period=budget_period
        )
    return group_value(row)


async def group_row(session: AsyncSession, name: str) -> GroupRow:
    """The group named ``name`` inside a transaction, or NotFound."""
    row = await session.scalar(select(GroupRow).where(GroupRow.name == name))
    if row is None:
        raise NotFound(f"no group {name!r}", param="name")
    return row


async def get_group(store: Store, name: str) -> Group:
    async with store.read() as session:
        return group_value(await group_row(session, name))


def change_group(
    row: GroupRow,
    *,
    weight: float | None = None,
    token_budget: int | Keep | None = KEEP,
    budget_period: str | None = None,
) -> None:
    """Apply the given changes to a group row (checked first, so nothing is half-set)."""
    tokens = row.token_budget if isinstance(token_budget, Keep) else token_budget
    period = row.budget_period if budget_period is None else budget_period
    if weight is not None:
        _check_weight(weight)
    _check_budget(tokens, period)
    if weight is not None:
        row.weight = float(weight)
    row.token_budget, row.budget_period = tokens, period


async def update_group(
    store: Store,
    name: str,
    *,
    weight: float | None = None,
    token_budget: int | Keep | None = KEEP,
    budget_period: str | None = None,
) -> Group:
    """Change a group's weight or default budget (None: unlimited) and its period."""
    async with store.write() as session:
        row = await group_row(session, name)
        change_group(row, weight=weight, token_budget=token_budget, budget_period=budget_period)
        await session.flush()
    return group_value(row)


async def list_groups(store: Store) -> list[Group]:
    async with store.read() as session:
        rows = await session.scalars(select(GroupRow).order_by(GroupRow.name))
        return [group_value(row) for row in rows]


async def _group_id(session: AsyncSession, name: str | None) -> int | None:
    if name is None:
        return None
    group_id = await session.scalar(select(GroupRow.id).where(GroupRow.name == name))
    if group_id is None:
        raise NotFound(f"no group {name!r}", param="group")
    return group_id


async def user_row(session: AsyncSession, name: str) -> UserRow:
    """The user named ``name`` inside a transaction, or NotFound."""
    row = await session.scalar(select(UserRow).where(UserRow.name == name))
    if row is None:
        raise NotFound(f"no user {name!r}", param="name")
    return row


async def insert_user(
    session: AsyncSession,
    name: str,
    *,
    role: str = "user",
    group: str | None = None,
    max_concurrent: int | None = None,
    password_hash: str | None = None,
) -> UserRow:
    """Add a user inside an open transaction; a taken name is `Conflict`."""
    check_name(name, "name")
    _check_role(role)
    _check_concurrency(max_concurrent)
    row = UserRow(
        name=name,
        role=role,
        group_id=await _group_id(session, group),
        max_concurrent=max_concurrent,
        password_hash=password_hash,
    )
    session.add(row)
    try:
        # A savepoint, so the clash is reported without poisoning the transaction.
        async with session.begin_nested():
            await session.flush()
    except IntegrityError as exc:
        raise Conflict(f"user {name!r} already exists", param="name") from exc
    return row


async def create_user(
    store: Store,
    name: str,
    *,
    role: str = "user",
    group: str | None = None,
    max_concurrent: int | None = None,
    password: str | None = None,
    hasher: PasswordHasher = DEFAULT_HASHER,
) -> User:
    hashed = None if password is None else await _hash(password, hasher)
    async with store.write() as session:
        row = await insert_user(
            session,
            name,
            role=role,
            group=group,
            max_concurrent=max_concurrent,
            password_hash=hashed,
        )
    return _user(row, group)


async def get_user(store: Store, name: str) -> User:
    async with store.read() as session:
        found = (
            await session.execute(
                select(UserRow, GroupRow.name)
                .outerjoin(GroupRow, UserRow.group_id == GroupRow.id)
                .where(UserRow.name == name)
            )
        ).first()
    if found is None:
        raise NotFound(f"no user {name!r}", param="name")
    return _user(found[0], found[1])


async def list_users(store: Store, *, limit: int = 100, offset: int = 0) -> Page[User]:
    check_page(limit, offset)
    async with store.read() as session:
        rows = (
            await session.execute(
                select(UserRow, GroupRow.name)
                .outerjoin(GroupRow, UserRow.group_id == GroupRow.id)
                .order_by(UserRow.name)
                .limit(limit + 1)
                .offset(offset)
            )
        ).all()
    users = [_user(row, group) for row, group in rows]
    return Page(users[:limit], limit, offset, more=len(users) > limit)


async def count_users(store: Store) -> int:
    async with store.read() as session:
        return int(await session.scalar(select(func.count()).select_from(UserRow)) or 0)


async def user_value(session: AsyncSession, row: UserRow) -> User:
    """A user row as a value, with its group's name, inside a transaction."""
    group_name = None
    if row.group_id is not None:
        group_name = await session.scalar(select(GroupRow.name).where(GroupRow.id == row.group_id))
    return _user(row, group_name)


async def change_user(
    session: AsyncSession,
    row: UserRow,
    *,
    role: str | None = None,
    group: str | Keep | None = KEEP,
    disabled: bool | None = None,
    max_concurrent: int | Keep | None = KEEP,
) -> None:
    """Apply the given changes to a user row inside an open transaction."""
    if role is not None:
        _check_role(role)
    if not isinstance(max_concurrent, Keep):
        _check_concurrency(max_concurrent)
    if not isinstance(group, Keep):
        row.group_id = await _group_id(session, group)
    if role is not None:
        row.role = role
    if disabled is not None:
        row.disabled = disabled
    if not isinstance(max_concurrent, Keep):
        row.max_concurrent = max_concurrent
    await session.flush()


async def update_user(
    store: Store,
    name: str,
    *,
    role: str | None = None,
    group: str | Keep | None = KEEP,
    disabled: bool | None = None,
    max_concurrent: int | Keep | None = KEEP,
) -> User:
    """Change a user's role, group (None: none), disabled flag or concurrency cap."""
    async with store.write() as session:
        row = await user_row(session, name)
        await change_user(
            session,
            row,
            role=role,
            group=group,
            disabled=disabled,
            max_concurrent=max_concurrent,
        )
        return await user_value(session, row)


async def _hash(password: str, hasher: PasswordHasher) -> str:
    if not password or len(password) > MAX_PASSWORD:
        raise BadRequest(f"a password must be 1 to {MAX_PASSWORD} characters", param="password")
    return await asyncio.to_thread(hasher.hash, password)


async def hash_password(password: str, hasher: PasswordHasher = DEFAULT_HASHER) -> str:
    """An argon2 hash of ``password`` for `insert_user` (1 to 1024 characters, else BadRequest)."""
    return await _hash(password, hasher)


async def set_password(
    store: Store, name: str, password: str, *, hasher: PasswordHasher = DEFAULT_HASHER
) -> None:
    hashed = await _hash(password, hasher)
    async with store.write() as session:
        row = await user_row(session, name)
        row.password_hash = hashed


async def verify_password(
    store: Store, name: str, password: str, *, hasher: PasswordHasher = DEFAULT_HASHER
) -> User | None:
    """The user when ``password`` is theirs, else None (unknown user, wrong password).

    A stored hash made with older parameters is replaced on success.
    """
    try:
        user = await get_user(store, name)
    except NotFound:
        return None
    async with store.read() as session:
        stored = await session.scalar(select(UserRow.password_hash).where(UserRow.id == user.id))
    if stored is None or user.disabled:
        return None
    try:
        await asyncio.to_thread(hasher.verify, stored, password)
    except (VerificationError, InvalidHashError):
        return None
    if hasher.check_needs_rehash(stored):
        await set_password(store, name, password, hasher=hasher)
    return user
