"""API keys: made at random, shown once, kept only as an HMAC-SHA256 digest.

A key reads ``crl_<prefix>_<secret>``: ``crl_`` says what it is (secret scanners can
match it), the 8-character prefix names the key in lists and usage rows, and the
40-character secret carries ~238 random bits. The database holds
HMAC-SHA256(server secret, key): a leaked database reveals no key and, without the
server secret, cannot even be used to test guesses. Why not argon2: docs/store.md.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import string
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from corral.adapters.store.db import Store, check_page
from corral.adapters.store.records import ApiKey, NewKey, Page, User, check_name
from corral.adapters.store.schema import SCOPES, ApiKeyRow, UserRow
from corral.adapters.store.users import MAX_INT, get_user, insert_user, user_row
from corral.core.errors import BadRequest, NotFound

__all__ = [
    "ADMIN_KEY_ENV",
    "KEY_RE",
    "PREFIX_RE",
    "active_keys",
    "create_key",
    "create_user_with_key",
    "find_key",
    "find_key_by_digest",
    "find_key_by_prefix",
    "insert_key",
    "key_digest",
    "key_value",
    "list_all_keys",
    "list_keys",
    "load_or_create_secret",
    "new_key_text",
    "parse_key",
    "revoke_key",
    "revoke_key_row",
    "revoke_user_keys",
]

# An admin key taken from the environment, for automation; the auth slice honours it
# (docs/store.md says how). It is never written to the database.
ADMIN_KEY_ENV = "CORRAL_ADMIN_KEY"
KEY_RE = re.compile(r"crl_([a-z0-9]{8})_([A-Za-z0-9]{40})")
PREFIX_RE = re.compile(r"[a-z0-9]{8}")
MIN_SECRET = 32
MAX_ALLOWED_MODELS = 1000
_PREFIX_ALPHABET = string.ascii_lowercase + string.digits
_SECRET_ALPHABET = string.ascii_letters + string.digits


def new_key_text() -> tuple[str, str]:
    """A fresh ``(prefix, key)``."""
    prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(8))
    secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(40))
    return prefix, f"crl_{prefix}_{secret}"


def parse_key(text: str) -> str | None:
    """The prefix of a well-formed key, or None for anything else."""
    found = KEY_RE.fullmatch(text) if isinstance(text, str) else None
    return found.group(1) if found else None


def key_digest(server_secret: bytes, key: str) -> str:
    if len(server_secret) < MIN_SECRET:
        raise ValueError(f"the server secret must be at least {MIN_SECRET} bytes")
    return hmac.new(server_secret, key.encode(), hashlib.sha256).hexdigest()


def load_or_create_secret(path: Path) -> bytes:
    """The server secret in ``path`` (hex), made on first use, readable by the owner only."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        text = secrets.token_hex(MIN_SECRET)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first: use theirs
            return load_or_create_secret(path)
        with os.fdopen(fd, "w") as out:
            out.write(text + "\n")
    secret = bytes.fromhex(text)
    if len(secret) < MIN_SECRET:
        raise ValueError(f"{path}: the server secret must be at least {MIN_SECRET} bytes")
    return secret


def key_value(row: ApiKeyRow, user_name: str) -> ApiKey:
    return ApiKey(
        id=row.id,
        user_id=row.user_id,
        user_name=user_name,
        prefix=row.prefix,
        name=row.name,
        scopes=tuple(row.scopes),
        allowed_models=None if row.allowed_models is None else tuple(row.allowed_models),
        rpm_limit=row.rpm_limit,
        tpm_limit=row.tpm_limit,
        expires_at=row.expires_at,
        revoked=row.revoked,
        created_at=row.created_at,
    )


def _check_scopes(scopes: Iterable[str]) -> list[str]:
    wanted = list(dict.fromkeys(scopes))
    unknown = [s for s in wanted if s not in SCOPES]
    if unknown or not wanted:
        raise BadRequest(
            f"scopes must be some of {', '.join(SCOPES)}; got {', '.join(unknown) or 'none'}",
            param="scopes",
        )
    return wanted


def _check_models(models: Iterable[str] | None) -> list[str] | None:
    if models is None:
        return None
    wanted = list(dict.fromkeys(models))
    if len(wanted) > MAX_ALLOWED_MODELS:
        raise BadRequest(f"at most {MAX_ALLOWED_MODELS} allowed models", param="allowed_models")
    for model in wanted:
        check_name(model, "allowed_models")
    return wanted


def _check_limit(value: int | None, what: str) -> int | None:
    if value is not None and not 0 <= value <= MAX_INT:
        raise BadRequest(f"{what} must be 0 to {MAX_INT}, not {value}", param=what)
    return value


async def insert_key(
    session: AsyncSession,
    user: UserRow,
    server_secret: bytes,
    *,
    name: str = "",
    scopes: Iterable[str] = ("inference",),
    allowed_models: Iterable[str] | None = None,
    expires_at: datetime | None = None,
    rpm_limit: int | None = None,
    tpm_limit: int | None = None,
) -> NewKey:
    """Add a key for ``user`` inside an open transaction.

    Only a user whose role is admin may hold a key with the admin scope.
    """
    if name:
        check_name(name, "name")
    wanted = _check_scopes(scopes)
    if "admin" in wanted and user.role != "admin":
        raise BadRequest(
            f"the admin scope needs an admin; {user.name!r} is a {user.role}", param="scopes"
        )
    if expires_at is not None and expires_at.tzinfo is None:
        raise BadRequest("expires_at must carry a timezone", param="expires_at")
    prefix, plaintext = new_key_text()
    row = ApiKeyRow(
        user_id=user.id,
        prefix=prefix,
        digest=key_digest(server_secret, plaintext),
        name=name,
        scopes=wanted,
        allowed_models=_check_models(allowed_models),
        expires_at=expires_at,
        rpm_limit=_check_limit(rpm_limit, "rpm_limit"),
        tpm_limit=_check_limit(tpm_limit, "tpm_limit"),
        revoked=False,
    )
    session.add(row)
    await session.flush()
    return NewKey(key_value(row, user.name), plaintext)


async def create_key(
    store: Store, user_name: str, server_secret: bytes, **options: object
) -> NewKey:
    """A new key for an existing user; ``options`` are `insert_key`'s."""
    async with store.write() as session:
        user = await user_row(session, user_name)
        return await insert_key(session, user, server_secret, **options)  # type: ignore[arg-type]


async def create_user_with_key(
    store: Store,
    name: str,
    server_secret: bytes,
    *,
    role: str = "user",
    group: str | None = None,
    password_hash: str | None = None,
    max_concurrent: int | None = None,
    **key_options: object,
) -> tuple[User, NewKey]:
    """A user and their first key in one transaction: both or neither."""
    async with store.write() as session:
        user = await insert_user(
            session,
            name,
            role=role,
            group=group,
            password_hash=password_hash,
            max_concurrent=max_concurrent,
        )
        new = await insert_key(session, user, server_secret, **key_options)  # type: ignore[arg-type]
    return await get_user(store, name), new


async def find_key_by_digest(store: Store, digest: str) -> ApiKey | None:
    async with store.read() as session:
        found = (
            await session.execute(
                select(ApiKeyRow, UserRow.name)
                .join(UserRow, ApiKeyRow.user_id == UserRow.id)
                .where(ApiKeyRow.digest == digest)
            )
        ).first()
    return None if found is None else key_value(found[0], found[1])


async def find_key_by_prefix(store: Store, prefix: str) -> ApiKey | None:
    async with store.read() as session:
        found = (
            await session.execute(
                select(ApiKeyRow, UserRow.name)
                .join(UserRow, ApiKeyRow.user_id == UserRow.id)
                .where(ApiKeyRow.prefix == prefix)
            )
        ).first()
    return None if found is None else key_value(found[0], found[1])


async def find_key(store: Store, server_secret: bytes, text: str) -> ApiKey | None:
    """The stored key ``text`` is, or None; a malformed key costs no query."""
    if parse_key(text) is None:
        return None
    return await find_key_by_digest(store, key_digest(server_secret, text))


async def list_keys(store: Store, user_name: str) -> list[ApiKey]:
    async with store.read() as session:
        user = await user_row(session, user_name)
        rows = await session.scalars(
            select(ApiKeyRow).where(ApiKeyRow.user_id == user.id).order_by(ApiKeyRow.id)
        )
        return [key_value(row, user.name) for row in rows]


async def list_all_keys(
    store: Store, *, user: str | None = None, limit: int = 100, offset: int = 0
) -> Page[ApiKey]:
    """Everyone's keys (or, with ``user``, theirs), one page at a time, by owner then age."""
    check_page(limit, offset)
    query = select(ApiKeyRow, UserRow.name).join(UserRow, ApiKeyRow.user_id == UserRow.id)
    async with store.read() as session:
        if user is not None:
            try:
                owner = await user_row(session, user)
            except NotFound as exc:
                raise NotFound(exc.message, param="user") from exc
            query = query.where(ApiKeyRow.user_id == owner.id)
        rows = (
            await session.execute(
                query.order_by(UserRow.name, ApiKeyRow.id).limit(limit + 1).offset(offset)
            )
        ).all()
    found = [key_value(row, name) for row, name in rows]
    return Page(found[:limit], limit, offset, more=len(found) > limit)


async def active_keys(store: Store, now: datetime) -> dict[str, ApiKey]:
    """Every usable key by digest: what the auth cache loads (no query per request)."""
    async with store.read() as session:
        found = await session.execute(
            select(ApiKeyRow, UserRow.name)
            .join(UserRow, ApiKeyRow.user_id == UserRow.id)
            .where(ApiKeyRow.revoked.is_(False), UserRow.disabled.is_(False))
        )
        keys = {row.digest: key_value(row, name) for row, name in found}
    return {digest: key for digest, key in keys.items() if key.usable(now)}


async def revoke_key_row(
    session: AsyncSession, prefix: str, *, owner: str | None = None
) -> tuple[ApiKey, ApiKey]:
    """Revoke the key with ``prefix`` inside an open transaction: (before, after).

    With ``owner``, only a key of theirs is found: anyone else's is NotFound, the same
    answer as for no key at all, so a caller learns nothing of others' prefixes.
    """
    found = (
        await session.execute(
            select(ApiKeyRow, UserRow.name)
            .join(UserRow, ApiKeyRow.user_id == UserRow.id)
            .where(ApiKeyRow.prefix == prefix)
        )
    ).first()
    if found is None or (owner is not None and found[1] != owner):
        raise NotFound(f"no key {prefix!r}", param="prefix")
    row, user_name = found
    before = key_value(row, user_name)
    if not row.revoked:
        row.revoked = True
        row.revoked_at = datetime.now(UTC)
        await session.flush()
    return before, key_value(row, user_name)


async def revoke_key(store: Store, prefix: str, *, owner: str | None = None) -> ApiKey:
    """Revoke the key with ``prefix``; with ``owner``, only if it is theirs.

    Revoking a revoked key changes nothing and is not an error.
    """
    async with store.write() as session:
        return (await revoke_key_row(session, prefix, owner=owner))[1]


async def revoke_user_keys(session: AsyncSession, user: UserRow) -> list[str]:
    """Revoke every live key of ``user`` inside an open transaction; their prefixes."""
    rows = list(
        await session.scalars(
            select(ApiKeyRow)
            .where(ApiKeyRow.user_id == user.id, ApiKeyRow.revoked.is_(False))
            .order_by(ApiKeyRow.id)
        )
    )
    now = datetime.now(UTC)
    for row in rows:
        row.revoked, row.revoked_at = True, now
    await session.flush()
    return [row.prefix for row in rows]
