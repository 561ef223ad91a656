"""Who is calling the control plane, and what they may do.

`Actor` is the caller of an admin or self-service route: the key's user, ``env`` for
``CORRAL_ADMIN_KEY``, or ``local`` when auth is off (the gateway then listens on
loopback only, and whoever can reach it is trusted as an admin — docs/admin-api.md).

Use ``Depends(requires(gw, "admin"))`` on a route: the dependency verifies the key
(401) and that it carries one of the scopes named (403), in the admin API's error
shape (corral/app/admin/errors.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from corral.adapters.store.keycache import ENV_USER, Identity
from corral.adapters.store.schema import SCOPES
from corral.core.errors import Forbidden

if TYPE_CHECKING:
    from corral.app.gateway import Gateway

__all__ = ["API_KEY", "LOCAL_ACTOR", "Actor", "BearerKey", "actor_of", "requires"]

LOCAL_ACTOR = "local"  # the actor's name when auth is off

# Declares the bearer key in the OpenAPI spec (and the /docs "Authorize" button); the
# key itself is checked by `actor_of`, in Corral's own error shape.
API_KEY = HTTPBearer(
    scheme_name="APIKey", description="A Corral API key: `crl_...`.", auto_error=False
)
BearerKey = Annotated[HTTPAuthorizationCredentials | None, Security(API_KEY)]


@dataclass(frozen=True, slots=True)
class Actor:
    """The caller of a control-plane route."""

    name: str  # the user's name, "env" (CORRAL_ADMIN_KEY) or "local" (auth off)
    identity: Identity | None  # None when auth is off
    scopes: frozenset[str]

    @property
    def user(self) -> str | None:
        """The store user this actor is, if any (None for env and local)."""
        return None if self.identity is None else self.identity.user

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes

    @property
    def key_prefix(self) -> str | None:
        return None if self.identity is None else self.identity.prefix


def actor_of(gw: Gateway, request: Request) -> Actor:
    """The verified caller (401 on a missing, wrong, expired or revoked key)."""
    if not gw.auth.enabled:
        return Actor(LOCAL_ACTOR, None, frozenset(SCOPES))
    found = gw.auth.verify(request.headers.get("authorization", "").encode("latin-1") or None)
    return Actor(found.user or ENV_USER, found, found.scopes)


def requires(gw: Gateway, *scopes: str) -> Callable[[Request], Actor]:
    """A dependency: the caller, who must hold at least one of ``scopes`` (else 403)."""
    wanted = frozenset(scopes)
    unknown = wanted - frozenset(SCOPES)
    if unknown:
        raise ValueError(f"unknown scopes {sorted(unknown)}")
    needs = " or ".join(sorted(wanted))

    def dependency(request: Request, _key: BearerKey = None) -> Actor:
        actor = actor_of(gw, request)
        if wanted and not actor.scopes & wanted:
            raise Forbidden(f"API key {actor.key_prefix} lacks the {needs} scope")
        return actor

    return dependency
