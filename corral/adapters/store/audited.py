"""Admin changes to users, groups, keys and budgets, each committed with its audit event.

Every function here is one transaction holding the change and one ``audit_events``
row naming the actor, the action, the target and the record before and after, so a
change never lands without its audit row or the other way round. What goes into an
audit row is a snapshot made by the ``*_snapshot`` functions below: never a key's
text or digest, never a password or its hash (only whether there is one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from corral.adapters.store.audit import insert_audit
from corral.adapters.store.db import Store
from corral.adapters.store.keys import insert_key, revoke_key_row, revoke_user_keys
from corral.adapters.store.quota import MAX_REASON, budget_of, set_override
from corral.adapters.store.records import ApiKey, Budget, Group, NewKey, User
from corral.adapters.store.schema import ApiKeyRow, QuotaOverrideRow
from corral.adapters.store.users import (
    KEEP,
    Keep,
    change_group,
    change_user,
    group_row,
    group_value,
    insert_group,
    insert_user,
    user_row,
    user_value,
)

__all__ = [
    "KeySpec",
    "budget_snapshot",
    "clear_budget",
    "create_group",
    "create_key",
    "create_user",
    "disable_user",
    "group_snapshot",
    "key_snapshot",
    "live_key_count",
    "revoke_key",
    "set_budget",
    "update_group",
    "update_user",
    "user_snapshot",
]


@dataclass(frozen=True, slots=True)
class KeySpec:
    """What a new key may do; the key's text is made by the store, never given."""

    name: str = ""
    scopes: Sequence[str] = ("inference",)
    allowed_models: Sequence[str] | None = None
    expires_at: datetime | None = None
    rpm_limit: int | None = None
    tpm_limit: int | None = None


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def user_snapshot(user: User) -> dict[str, Any]:
    return {
        "name": user.name,
        "role": user.role,
        "group": user.group,
        "disabled": user.disabled,
        "max_concurrent": user.max_concurrent,
        "has_password": user.has_password,
    }


def group_snapshot(group: Group) -> dict[str, Any]:
    return {
        "name": group.name,
        "weight": group.weight,
        "token_budget": group.token_budget,
        "budget_period": group.budget_period,
    }


def key_snapshot(key: ApiKey) -> dict[str, Any]:
    return {
        "prefix": key.prefix,
        "user": key.user_name,
        "name": key.name,
        "scopes": list(key.scopes),
        "allowed_models": None if key.allowed_models is None else list(key.allowed_models),
        "rpm_limit": key.rpm_limit,
        "tpm_limit": key.tpm_limit,
        "expires_at": _time(key.expires_at),
        "revoked": key.revoked,
    }


def budget_snapshot(budget: Budget) -> dict[str, Any]:
    return {"token_budget": budget.tokens, "period": budget.period, "source": budget.source}


def _spec(spec: KeySpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "scopes": spec.scopes,
        "allowed_models": spec.allowed_models,
        "expires_at": spec.expires_at,
        "rpm_limit": spec.rpm_limit,
        "tpm_limit": spec.tpm_limit,
    }


async def create_user(
    store: Store,
    actor: str,
    name: str,
    *,
    role: str = "user",
    group: str | None = None,
    max_concurrent: int | None = None,
    password_hash: str | None = None,
    key: KeySpec | None = None,
    server_secret: bytes | None = None,
) -> tuple[User, NewKey | None]:
    """A user and, with ``key``, their first key: both with the audit event, or nothing."""
    async with store.write() as session:
        row = await insert_user(
            session,
            name,
            role=role,
            group=group,
            max_concurrent=max_concurrent,
            password_hash=password_hash,
        )
        new = None
        if key is not None:
            assert server_secret is not None, "a key needs the server secret"
            new = await insert_key(session, row, server_secret, **_spec(key))
        user = await user_value(session, row)
        after = user_snapshot(user)
        if new is not None:
            after["key"] = key_snapshot(new.key)
        await insert_audit(session, actor, "user.create", name, after=after)
    return user, new


async def update_user(
    store: Store,
    actor: str,
    name: str,
    *,
    role: str | None = None,
    group: str | Keep | None = KEEP,
    disabled: bool | None = None,
    max_concurrent: int | Keep | None = KEEP,
    password_hash: str | Keep | None = KEEP,
) -> User:
    """Change what is given (``password_hash`` None removes the password)."""
    async with store.write() as session:
        row = await user_row(session, name)
        before = user_snapshot(await user_value(session, row))
        await change_user(
            session, row, role=role, group=group, disabled=disabled, max_concurrent=max_concurrent
        )
        if not isinstance(password_hash, Keep):
            row.password_hash = password_hash
            await session.flush()
        user = await user_value(session, row)
        after = user_snapshot(user)
        if not isinstance(password_hash, Keep):
            # Only the fact: the hash itself never enters the audit log.
            after["password"] = "removed" if password_hash is None else "set"
        await insert_audit(session, actor, "user.update", name, before=before, after=after)
    return user


async def disable_user(store: Store, actor: str, name: str) -> tuple[User, list[str]]:
    """Disable a user and revoke every key they hold; their usage rows stay.

    Returns the user and the prefixes of the keys revoked now.
    """
    async with store.write() as session:
        row = await user_row(session, name)
        before = user_snapshot(await user_value(session, row))
        row.disabled = True
        revoked = await revoke_user_keys(session, row)
        user = await user_value(session, row)
        after = {**user_snapshot(user), "revoked_keys": revoked}
        await insert_audit(session, actor, "user.delete", name, before=before, after=after)
    return user, revoked


async def create_group(
    store: Store,
    actor: str,
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
        group = group_value(row)
        await insert_audit(session, actor, "group.create", name, after=group_snapshot(group))
    return group


async def update_group(
    store: Store,
    actor: str,
    name: str,
    *,
    weight: float | None = None,
    token_budget: int | Keep | None = KEEP,
    budget_period: str | None = None,
) -> Group:
    """Change a group's weight, default budget (None: unlimited) or budget period."""
    async with store.write() as session:
        row = await group_row(session, name)
        before = group_snapshot(group_value(row))
        change_group(row, weight=weight, token_budget=token_budget, budget_period=budget_period)
        await session.flush()
        group = group_value(row)
        await insert_audit(
            session, actor, "group.update", name, before=before, after=group_snapshot(group)
        )
    return group


async def create_key(
    store: Store, actor: str, user: str, server_secret: bytes, spec: KeySpec
) -> NewKey:
    """A new key for ``user``; the audit event records its prefix, never its text."""
    async with store.write() as session:
        owner = await user_row(session, user)
        new = await insert_key(session, owner, server_secret, **_spec(spec))
        await insert_audit(
            session, actor, "key.create", new.key.prefix, after=key_snapshot(new.key)
        )
    return new


async def revoke_key(store: Store, actor: str, prefix: str, *, owner: str | None = None) -> ApiKey:
    """Revoke a key (with ``owner``, only one of theirs); again is no error."""
    async with store.write() as session:
        before, after = await revoke_key_row(session, prefix, owner=owner)
        await insert_audit(
            session,
            actor,
            "key.revoke",
            prefix,
            before=key_snapshot(before),
            after=key_snapshot(after),
        )
    return after


async def live_key_count(store: Store, user: str) -> int:
    """How many keys of ``user`` are not revoked (expired ones count until revoked)."""
    async with store.read() as session:
        owner = await user_row(session, user)
        rows = await session.scalars(
            select(ApiKeyRow.id).where(ApiKeyRow.user_id == owner.id, ApiKeyRow.revoked.is_(False))
        )
        return len(rows.all())


async def set_budget(
    store: Store, actor: str, user: str, tokens: int | None, note: str = ""
) -> tuple[Budget, Budget]:
    """Give ``user`` their own budget (None: unlimited) in place of the group's."""
    async with store.write() as session:
        row = await user_row(session, user)
        before = await budget_of(session, row)
        await set_override(session, row.id, tokens, note[:MAX_REASON])
        after = await budget_of(session, row)
        await insert_audit(
            session,
            actor,
            "budget.set",
            user,
            before=budget_snapshot(before),
            after={**budget_snapshot(after), "note": note[:MAX_REASON]},
        )
    return before, after


async def clear_budget(store: Store, actor: str, user: str) -> tuple[Budget, Budget]:
    """Drop ``user``'s own budget: their group's applies again."""
    async with store.write() as session:
        row = await user_row(session, user)
        before = await budget_of(session, row)
        override = await session.scalar(
            select(QuotaOverrideRow).where(QuotaOverrideRow.user_id == row.id)
        )
        if override is not None:
            await session.delete(override)
            await session.flush()
        after = await budget_of(session, row)
        await insert_audit(
            session,
            actor,
            "budget.clear",
            user,
            before=budget_snapshot(before),
            after=budget_snapshot(after),
        )
    return before, after
