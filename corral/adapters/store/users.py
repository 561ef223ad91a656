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
    "count_users",
    "create_group",
    "create_user",
    "get_group",
    "get_user",
    "hash_password",
    "insert_user",
    "list_groups",
    "list_users",
    "set_password",
    "update_user",
    "user_row",
    "verify_password",
]

DEFAULT_HASHER = PasswordHasher()  # argon2id with RFC 9106's low-memory parameters
MAX_PASSWORD = 1024


class _Keep:
    """The default of an `update_user` field that should stay as it is."""


KEEP = _Keep()


def _group(row: GroupRow) -> Group:
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
    if tokens is not None and tokens < 0:
        raise BadRequest(f"token budget must be 0 or more, not {tokens}", param="token_budget")
    if period not in PERIODS:
        raise BadRequest(f"budget period must be one of {', '.join(PERIODS)}", param="period")


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise BadRequest(f"role must be one of {', '.join(ROLES)}, not {role!r}", param="role")
    return role


async def create_group(
    store: Store,
    name: str,
    *,
    weight: float = 1.0,
    token_budget: int | None = None,
    budget_period: str = "month",
) -> Group:
    check_name(name, "group")
    _check_weight(weight)
    _check_budget(token_budget, budget_period)
    row = GroupRow(name=name, weight=weight, token_budget=token_budget, budget_period=budget_period)
    try:
        async with store.write() as session:
            session.add(row)
            await session.flush()
    except Conflict as exc:
        raise Conflict(f"group {name!r} already exists", param="name") from exc
    return _group(row)


async def get_group(store: Store, name: str) -> Group:
    async with store.read() as session:
        row = await session.scalar(select(GroupRow).where(GroupRow.name == name))
    if row is None:
        raise NotFound(f"no group {name!r}")
    return _group(row)


async def list_groups(store: Store) -> list[Group]:
    async with store.read() as session:
        rows = await session.scalars(select(GroupRow).order_by(GroupRow.name))
        return [_group(row) for row in rows]


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
        raise NotFound(f"no user {name!r}")
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
    if max_concurrent is not None and max_concurrent < 0:
        raise BadRequest("max_concurrent must be 0 or more", param="max_concurrent")
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
        raise NotFound(f"no user {name!r}")
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


async def update_user(
    store: Store,
    name: str,
    *,
    role: str | None = None,
    group: str | _Keep | None = KEEP,
    disabled: bool | None = None,
    max_concurrent: int | _Keep | None = KEEP,
) -> User:
    """Change a user's role, group (None: none), disabled flag or concurrency cap."""
    async with store.write() as session:
        row = await user_row(session, name)
        if role is not None:
            row.role = _check_role(role)
        if not isinstance(group, _Keep):
            row.group_id = await _group_id(session, group)
        if disabled is not None:
            row.disabled = disabled
        if not isinstance(max_concurrent, _Keep):
            if max_concurrent is not None and max_concurrent < 0:
                raise BadRequest("max_concurrent must be 0 or more", param="max_concurrent")
            row.max_concurrent = max_concurrent
        await session.flush()
        group_name = None
        if row.group_id is not None:
            group_name = await session.scalar(
                select(GroupRow.name).where(GroupRow.id == row.group_id)
            )
    return _user(row, group_name)


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
