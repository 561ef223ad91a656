"""Anyone's API keys over HTTP (admin scope): make, list, revoke.

A key's text is in the response that made it and nowhere else: the store keeps its
HMAC digest, lists and audit rows show its prefix. A revocation reloads the key cache
before the response is sent, so the very next request with that key is a 401.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, Path, Query

from corral.adapters.store import audited
from corral.adapters.store.keys import list_all_keys
from corral.app.admin.identity_models import (
    AdminActor,
    KeyCreate,
    KeyOut,
    KeyPage,
    NewKeyOut,
    Paging,
    admin_actor,
    check_prefix,
    key_out,
    key_spec,
    refresh,
    store_of,
)
from corral.app.admin.openapi import refusals

if TYPE_CHECKING:
    from corral.adapters.store.db import Store
    from corral.app.gateway import Gateway

__all__ = ["key_page", "router"]

UserName = Annotated[str, Path(min_length=1, max_length=128, description="The key's owner.")]
# The pattern is documented (and guides generated calls); check_prefix enforces it
# with a message that says what a prefix looks like.
Prefix = Annotated[
    str,
    Path(
        min_length=1,
        max_length=64,
        description="The key's prefix (8 lowercase letters and digits).",
        json_schema_extra={"pattern": "^[a-z0-9]{8}$"},
    ),
]


def router(gw: Gateway) -> APIRouter:
    api = APIRouter(prefix="/admin", tags=["identity"], dependencies=[Depends(admin_actor)])

    @api.post("/users/{name}/keys", status_code=201, response_model=NewKeyOut, summary="Make a key")
    async def create_key(name: UserName, body: KeyCreate, actor: AdminActor) -> NewKeyOut:
        """A new key for the user, with scopes (default inference; admin only for an
        admin), an expiry, allowed models and per-minute limits. The key's text is in
        this response once and never again."""
        now = datetime.now(UTC)
        spec = key_spec(body, list(body.scopes or ["inference"]), now)
        new = await audited.create_key(store_of(gw), actor.name, name, gw.auth.server_secret, spec)
        await refresh(gw)
        return NewKeyOut(**key_out(new.key, now).model_dump(), key=new.plaintext)

    @api.get(
        "/keys",
        response_model=KeyPage,
        summary="List keys",
        responses=refusals({404: "No user by that name (`user`)."}),
    )
    async def keys(
        _: AdminActor,
        page: Paging,
        user: Annotated[
            str | None, Query(min_length=1, max_length=128, description="Only this user's keys.")
        ] = None,
    ) -> KeyPage:
        """Everyone's keys (or one user's), by owner then age, a page at a time: prefixes
        and settings, never a key's text or digest. An unknown `user` is 404."""
        return await key_page(store_of(gw), user, page)

    @api.delete("/keys/{prefix}", response_model=KeyOut, summary="Revoke a key")
    async def revoke_key(prefix: Prefix, actor: AdminActor) -> KeyOut:
        """Revoke anyone's key, effective on the very next request. Revoking a revoked
        key changes nothing. A malformed prefix is 400, an unknown one 404."""
        done = await audited.revoke_key(store_of(gw), actor.name, check_prefix(prefix))
        await refresh(gw)
        return key_out(done)

    return api


async def key_page(store: Store, user: str | None, page: tuple[int, int]) -> KeyPage:
    """One page of keys, everyone's or one user's (the admin's list, and a user's own)."""
    limit, offset = page
    found = await list_all_keys(store, user=user, limit=limit, offset=offset)
    now = datetime.now(UTC)
    return KeyPage(
        items=[key_out(k, now) for k in found.items], limit=limit, offset=offset, more=found.more
    )
