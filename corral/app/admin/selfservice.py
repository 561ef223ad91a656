"""Self-service over HTTP: any valid key sees and manages what is its user's own.

``/v1/me``, ``/v1/keys``, ``/v1/usage``, ``/v1/quota`` and ``/v1/quota/requests``.
Each answers for the user the calling key speaks for, never anyone else. There is no
such user when API keys are off (400) or for ``CORRAL_ADMIN_KEY`` (403): both may use
the admin API instead.

A key never mints a stronger key: a new key's scopes must be among the caller's, and
it inherits (and may only narrow) the caller's allowed models, per-minute limits and
expiry, so a limited or expiring key cannot be traded for an unlimited one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field

from corral.adapters.store import audited
from corral.adapters.store.keycache import Identity
from corral.adapters.store.keys import find_key_by_prefix
from corral.adapters.store.ledger import tokens_used
from corral.adapters.store.quota import effective_budget, file_quota_request, list_quota_requests
from corral.adapters.store.users import MAX_TOKENS, get_user
from corral.app.admin.apikeys import key_page
from corral.app.admin.budgets import usage_report
from corral.app.admin.identity_models import (
    MAX_NOTE,
    AnyActor,
    GroupBy,
    KeyCreate,
    KeyOut,
    KeyPage,
    NewKeyOut,
    Paging,
    QuotaRequestOut,
    QuotaRequestPage,
    Status,
    Strict,
    UsageQuery,
    UsageReport,
    check_prefix,
    key_out,
    key_spec,
    quota_request_out,
    refresh,
    store_of,
    usage_params,
)
from corral.app.admin.openapi import refusals
from corral.core.errors import BadRequest, Conflict, Forbidden
from corral.core.limits import period_bounds

if TYPE_CHECKING:
    from corral.app.gateway import Gateway

__all__ = ["MAX_OWN_KEYS", "MAX_PENDING_REQUESTS", "router"]

MAX_OWN_KEYS = 100  # live keys a user may hold by minting their own
MAX_PENDING_REQUESTS = 10  # quota requests a user may have waiting at once

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


class Me(BaseModel):
    user: str = Field(description="The user the key speaks for.")
    role: str = Field(description="admin or user.")
    group: str | None = Field(description="Their group, if any.")
    group_weight: float | None = Field(description="The group's scheduling weight.")
    scopes: list[str] = Field(description="What this key may do.")
    key_prefix: str = Field(description="This key's prefix.")
    key_expires_at: datetime | None = Field(description="When this key stops working.")
    allowed_models: list[str] | None = Field(description="Only these models; null: any.")
    rpm_limit: int | None = Field(description="This key's requests per minute.")
    tpm_limit: int | None = Field(description="This key's tokens per minute.")
    max_concurrent: int | None = Field(description="The user's requests at once.")


class QuotaOut(BaseModel):
    user: str = Field(description="Whose budget.")
    token_budget: int | None = Field(description="Tokens per period; null: unlimited.")
    source: str = Field(description='"user" (their own), "group" (the group\'s) or "none".')
    period: str = Field(description="day, week (from Monday) or month, in UTC.")
    period_start: datetime = Field(description="When the current period began.")
    resets_at: datetime = Field(description="When the count starts afresh.")
    used: int = Field(description="Tokens used in the current period.")
    remaining: int | None = Field(description="Tokens left in it; null: unlimited.")


class MyUsage(UsageReport):
    quota: QuotaOut = Field(description="The budget and what is left of it.")


class QuotaAsk(Strict):
    amount: int = Field(ge=1, le=MAX_TOKENS, description="Tokens per period wanted on top.")
    reason: str = Field("", max_length=MAX_NOTE, description="Why, for the admin who decides.")


@dataclass(frozen=True, slots=True)
class Holder:
    """The caller of a self-service route: a user, through one of their keys."""

    user: str
    key: Identity


def holder(actor: AnyActor) -> Holder:
    """The caller, whose key must be a user's (checked before the body is validated)."""
    if actor.identity is None:
        raise BadRequest(
            "API keys are off on this gateway (auth.mode), so there is no user to answer "
            "for; the self-service routes need keys on"
        )
    if actor.identity.user is None:
        raise Forbidden(
            "CORRAL_ADMIN_KEY speaks for no user, so it has no keys, usage or quota of its "
            "own; use a user's key here, or the admin API under /admin"
        )
    return Holder(actor.identity.user, actor.identity)


Caller = Annotated[Holder, Depends(holder)]


def _narrower(asked: int | None, held: int | None, field: str) -> int | None:
    if held is None:
        return asked
    if asked is None:
        return held
    if asked > held:
        raise Forbidden(f"{field} may be at most this key's own ({held})", param=field)
    return asked


def router(gw: Gateway) -> APIRouter:
    api = APIRouter(
        prefix="/v1",
        tags=["self-service"],
        dependencies=[Depends(holder)],
        responses=refusals(
            {
                400: "Bad input (`param` names the field), or API keys are off on this "
                "gateway, so there is no user to answer for.",
                403: "CORRAL_ADMIN_KEY, which speaks for no user; or (making a key) more "
                "than the calling key holds.",
            }
        ),
    )

    async def quota_of(user: str) -> QuotaOut:
        store = store_of(gw)
        budget = await effective_budget(store, user)
        now = datetime.now(UTC)
        start, end = period_bounds(budget.period, now)
        limiter = gw.auth.limits
        if budget.tokens is not None and user in limiter.budgets:
            # The count admission compares against, with charges not yet written.
            used = limiter.counters.spent(user, start)
        else:
            used = await tokens_used(store, (await get_user(store, user)).id, start)
        remaining = None if budget.tokens is None else max(0, budget.tokens - used)
        return QuotaOut(
            user=user,
            token_budget=budget.tokens,
            source=budget.source,
            period=budget.period,
            period_start=start,
            resets_at=end,
            used=used,
            remaining=remaining,
        )

    @api.get("/me", response_model=Me, summary="Who this key is")
    async def me(caller: Caller) -> Me:
        """The user the calling key speaks for, with the key's scopes, expiry, allowed
        models and limits."""
        user, who = caller.user, caller.key
        stored = await find_key_by_prefix(store_of(gw), who.prefix)
        models = None if stored is None or stored.allowed_models is None else stored.allowed_models
        expires = None if who.expires_at is None else datetime.fromtimestamp(who.expires_at, UTC)
        return Me(
            user=user,
            role=who.role,
            group=who.group,
            group_weight=who.group_weight,
            scopes=sorted(who.scopes),
            key_prefix=who.prefix,
            key_expires_at=expires,
            allowed_models=None if models is None else list(models),
            rpm_limit=who.rpm,
            tpm_limit=who.tpm,
            max_concurrent=who.max_concurrent,
        )

    @api.post(
        "/keys",
        status_code=201,
        response_model=NewKeyOut,
        summary="Make one of my keys",
        responses=refusals({409: "The user holds the most live keys allowed."}),
    )
    async def create_key(body: KeyCreate, caller: Caller) -> NewKeyOut:
        """A new key for the caller's user, shown in this response once. Its scopes must
        be among the calling key's (default: inference); it inherits the calling key's
        allowed models, per-minute limits and expiry, and may only narrow them (403
        otherwise). At most 100 live keys per user (409)."""
        user, who = caller.user, caller.key
        store = store_of(gw)
        scopes = list(body.scopes or (["inference"] if "inference" in who.scopes else who.scopes))
        beyond = sorted(set(scopes) - who.scopes)
        if beyond:
            raise Forbidden(
                f"this key may not grant scopes it does not hold: {', '.join(beyond)}",
                param="scopes",
            )
        now = datetime.now(UTC)
        spec = key_spec(body, sorted(set(scopes), key=scopes.index), now)
        models = spec.allowed_models
        if who.models is not None:
            if models is None:
                held = await find_key_by_prefix(store, who.prefix)
                models = None if held is None else held.allowed_models
            outside = [m for m in models or () if m not in who.models]
            if models is None or outside:
                raise Forbidden(
                    f"this key may not grant models outside its own: {', '.join(outside)}",
                    param="allowed_models",
                )
        held_expiry = (
            None if who.expires_at is None else datetime.fromtimestamp(who.expires_at, UTC)
        )
        expires = spec.expires_at
        if held_expiry is not None:
            if expires is not None and expires > held_expiry:
                raise Forbidden(
                    f"expires_at may be at most this key's own ({held_expiry.isoformat()})",
                    param="expires_at",
                )
            expires = expires or held_expiry
        spec = audited.KeySpec(
            name=spec.name,
            scopes=spec.scopes,
            allowed_models=models,
            expires_at=expires,
            rpm_limit=_narrower(spec.rpm_limit, who.rpm, "rpm_limit"),
            tpm_limit=_narrower(spec.tpm_limit, who.tpm, "tpm_limit"),
        )
        if await audited.live_key_count(store, user) >= MAX_OWN_KEYS:
            raise Conflict(f"{user!r} already holds {MAX_OWN_KEYS} live keys; revoke one first")
        new = await audited.create_key(store, user, user, gw.auth.server_secret, spec)
        await refresh(gw)
        return NewKeyOut(**key_out(new.key, now).model_dump(), key=new.plaintext)

    @api.get("/keys", response_model=KeyPage, summary="List my keys")
    async def keys(caller: Caller, page: Paging) -> KeyPage:
        """The caller's user's keys, oldest first: prefixes and settings, never a key's
        text."""
        return await key_page(store_of(gw), caller.user, page)

    @api.delete("/keys/{prefix}", response_model=KeyOut, summary="Revoke one of my keys")
    async def revoke_key(prefix: Prefix, caller: Caller) -> KeyOut:
        """Revoke one of the caller's user's keys (the calling key too), effective on the
        very next request. Anyone else's prefix is 404, as if there were none."""
        user = caller.user
        done = await audited.revoke_key(store_of(gw), user, check_prefix(prefix), owner=user)
        await refresh(gw)
        return key_out(done)

    @api.get("/usage", response_model=MyUsage, summary="My usage")
    async def usage(
        caller: Caller,
        page: Paging,
        filters: Annotated[UsageQuery, Depends(usage_params)],
        group_by: Annotated[
            GroupBy, Query(description="Sum per model or UTC day (user: one row).")
        ] = "model",
    ) -> MyUsage:
        """The caller's user's requests and tokens, summed per model or per UTC day over
        `[since, until)`, with their budget and what is left of it."""
        user = caller.user
        report = await usage_report(store_of(gw), group_by, user, filters, page)
        return MyUsage(**dict(report), quota=await quota_of(user))

    @api.get("/quota", response_model=QuotaOut, summary="My budget")
    async def quota(caller: Caller) -> QuotaOut:
        """The caller's user's token budget for the current period, what they used of
        it, what is left and when it resets."""
        user = caller.user
        return await quota_of(user)

    @api.post(
        "/quota/requests",
        status_code=201,
        response_model=QuotaRequestOut,
        summary="Ask for more budget",
        responses=refusals({409: "The most pending requests allowed are waiting already."}),
    )
    async def file_request(body: QuotaAsk, caller: Caller) -> QuotaRequestOut:
        """File a request for `amount` more tokens per period; an admin approves or
        denies it. At most 10 pending at once (409)."""
        user = caller.user
        store = store_of(gw)
        waiting = await list_quota_requests(
            store, status="pending", user=user, limit=MAX_PENDING_REQUESTS
        )
        if len(waiting.items) >= MAX_PENDING_REQUESTS:
            raise Conflict(
                f"{MAX_PENDING_REQUESTS} quota requests are already pending; wait for a decision"
            )
        filed = await file_quota_request(store, user, body.amount, body.reason, actor=user)
        return quota_request_out(filed)

    @api.get("/quota/requests", response_model=QuotaRequestPage, summary="My quota requests")
    async def my_requests(
        caller: Caller,
        page: Paging,
        status: Annotated[Status | None, Query(description="Only requests in this state.")] = None,
    ) -> QuotaRequestPage:
        """The caller's user's quota requests, oldest first, with their decisions."""
        user = caller.user
        limit, offset = page
        found = await list_quota_requests(
            store_of(gw), status=status, user=user, limit=limit, offset=offset
        )
        return QuotaRequestPage(
            items=[quota_request_out(r) for r in found.items],
            limit=limit,
            offset=offset,
            more=found.more,
        )

    return api
