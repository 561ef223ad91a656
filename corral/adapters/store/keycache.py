"""The key cache: every usable API key by digest, in memory, so no request queries the store.

The gateway loads it at start, reloads it after each change it makes itself and on an
interval (so keys made or revoked with the CLI arrive within ``auth.reload_s``). A
lookup is one HMAC (skipped for keys seen recently) and one dict lookup.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from corral.adapters.store.db import Store
from corral.adapters.store.schema import SCOPES, ApiKeyRow, GroupRow, UserRow
from corral.core.names import normalize_model

__all__ = ["ENV_USER", "Identity", "KeyCache", "load_identities"]

ENV_USER = "env"  # whom CORRAL_ADMIN_KEY speaks for (docs/store.md)
_RECENT = 4096  # keys whose digest is remembered; a few per active client


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a key speaks for, with what it may do."""

    user: str | None  # None for CORRAL_ADMIN_KEY: its usage rows have no user
    group: str | None
    role: str
    scopes: frozenset[str]
    models: frozenset[str] | None  # None = any model; names as given and as name:tag
    expires_at: float | None  # epoch seconds
    prefix: str
    group_weight: float | None = None
    rpm: int | None = None  # the key's requests per minute
    tpm: int | None = None  # the key's tokens per minute
    max_concurrent: int | None = None  # the user's requests at once

    def allows_model(self, model: str, requested: str = "") -> bool:
        return self.models is None or model in self.models or requested in self.models


def _models(allowed: list[str] | None) -> frozenset[str] | None:
    if allowed is None:
        return None
    return frozenset(allowed) | frozenset(normalize_model(m) for m in allowed)


def _scopes(scopes: list[str], role: str) -> frozenset[str]:
    # The admin scope is the role's to give: a key made while its user was an admin
    # loses it the moment they are not (a demotion takes effect on every key at once).
    found = frozenset(scopes)
    return found if role == "admin" else found - {"admin"}


async def load_identities(store: Store, now: datetime) -> dict[str, Identity]:
    """Every key that is neither revoked nor expired, of users not disabled, by digest."""
    async with store.read() as session:
        rows = await session.execute(
            select(
                ApiKeyRow,
                UserRow.name,
                UserRow.role,
                UserRow.max_concurrent,
                GroupRow.name,
                GroupRow.weight,
            )
            .join(UserRow, ApiKeyRow.user_id == UserRow.id)
            .outerjoin(GroupRow, UserRow.group_id == GroupRow.id)
            .where(ApiKeyRow.revoked.is_(False), UserRow.disabled.is_(False))
        )
        found: dict[str, Identity] = {}
        for key, user, role, most, group, weight in rows:
            if key.expires_at is not None and key.expires_at <= now:
                continue
            found[key.digest] = Identity(
                user=user,
                group=group,
                role=role,
                scopes=_scopes(key.scopes, role),
                models=_models(key.allowed_models),
                expires_at=None if key.expires_at is None else key.expires_at.timestamp(),
                prefix=key.prefix,
                group_weight=weight,
                rpm=key.rpm_limit,
                tpm=key.tpm_limit,
                max_concurrent=most,
            )
    return found


class KeyCache:
    """Digest → Identity, plus a small LRU of key → digest so a repeat costs no HMAC."""

    def __init__(self, server_secret: bytes, *, env_key: str | None = None) -> None:
        self._secret = server_secret
        self._recent: OrderedDict[str, str] = OrderedDict()
        self._by_digest: dict[str, Identity] = {}
        # CORRAL_ADMIN_KEY: only its digest is kept, beside (never in) the store's keys.
        self._env: dict[str, Identity] = {}
        if env_key is not None:
            self._env[self.digest(env_key)] = Identity(
                user=None,
                group=None,
                role="admin",
                scopes=frozenset(SCOPES),
                models=None,
                expires_at=None,
                prefix=ENV_USER,
            )

    def __len__(self) -> int:
        return len(self._by_digest) + len(self._env)

    def replace(self, identities: dict[str, Identity]) -> None:
        """Swap in a freshly loaded set (one assignment: lookups never see half of it)."""
        self._by_digest = {**identities, **self._env}

    def digest(self, key: str) -> str:
        found = self._recent.get(key)
        if found is not None:
            self._recent.move_to_end(key)
            return found
        found = hmac.new(self._secret, key.encode(), hashlib.sha256).hexdigest()
        self._recent[key] = found
        if len(self._recent) > _RECENT:
            self._recent.popitem(last=False)
        return found

    def lookup(self, key: str) -> Identity | None:
        """The identity ``key`` speaks for, or None; expiry is the caller's to check."""
        digest = self.digest(key)
        return self._by_digest.get(digest) or self._env.get(digest)
