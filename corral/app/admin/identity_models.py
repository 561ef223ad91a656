"""The identity API's shapes: typed request and response bodies, and the shared pieces.

Request bodies forbid unknown fields, so a misspelt field is a 400 naming it rather
than a silent no-op. Limits on numbers are those of the columns they land in (32-bit
for rates and concurrency, 64-bit for budgets), so nothing reaches the database that
it would refuse with a 500.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import Depends, Query, Request
from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

from corral.adapters.store.audited import KeySpec
from corral.adapters.store.db import MAX_PAGE, Store
from corral.adapters.store.keys import MAX_ALLOWED_MODELS, PREFIX_RE
from corral.adapters.store.records import ApiKey, Budget, Group, QuotaRequest, UsageTotal, User
from corral.adapters.store.schema import SCOPES
from corral.adapters.store.users import MAX_INT, MAX_PASSWORD, MAX_TOKENS
from corral.app.admin.deps import Actor, BearerKey, requires
from corral.core.errors import BadRequest, Unavailable

if TYPE_CHECKING:
    from corral.app.gateway import Gateway

__all__ = [
    "MAX_EXPIRY_DAYS",
    "MAX_NOTE",
    "MAX_PASSWORD",
    "AdminActor",
    "AnyActor",
    "BudgetOut",
    "GroupBy",
    "GroupOut",
    "KeyCreate",
    "KeyOut",
    "KeyPage",
    "Name",
    "NewKeyOut",
    "Page",
    "Paging",
    "Period",
    "QuotaRequestOut",
    "QuotaRequestPage",
    "Rate",
    "Status",
    "Strict",
    "Tokens",
    "UsageQuery",
    "UsageReport",
    "UsageRowOut",
    "UserOut",
    "admin_actor",
    "any_actor",
    "budget_out",
    "check_prefix",
    "group_out",
    "key_out",
    "key_spec",
    "page_params",
    "quota_request_out",
    "refresh",
    "store_of",
    "url_name",
    "usage_params",
    "usage_row_out",
    "user_out",
]

log = logging.getLogger("corral.admin")

MAX_EXPIRY_DAYS = 36_500
MAX_OFFSET = 2**31 - 1
MAX_NOTE = 4000
Scope = Literal["inference", "admin", "models"]
Period = Literal["day", "week", "month"]
GroupBy = Literal["user", "model", "day"]
Status = Literal["pending", "approved", "denied"]


class Strict(BaseModel):
    """A request body: unknown fields are refused with a 400 naming them, and so are
    values of another JSON type (``true`` for a number, ``"3"`` for 3, ``"yes"`` for
    true), as the inference endpoints refuse them."""

    model_config = ConfigDict(extra="forbid", strict=True)


def url_name(value: str) -> str:
    # Users and groups are addressed by name in paths, where a slash cannot travel.
    if "/" in value:
        raise ValueError("must not contain '/' (names are used in URLs)")
    if value != value.strip() or not value.isprintable():
        raise ValueError("must not have surrounding spaces or control characters")
    return value


Name = Annotated[str, Field(min_length=1, max_length=128)]
Tokens = Annotated[int, Field(ge=0, le=MAX_TOKENS)]
Rate = Annotated[int, Field(ge=0, le=MAX_INT)]


# ---- pages -----------------------------------------------------------------------------


class Page(BaseModel):
    limit: int = Field(description="The page size asked for.")
    offset: int = Field(description="How many items were skipped.")
    more: bool = Field(description="True when another page follows (ask with offset + limit).")


def page_params(
    limit: Annotated[
        int, Query(ge=1, le=MAX_PAGE, description=f"Items per page, 1 to {MAX_PAGE}.")
    ] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Items to skip.")] = 0,
) -> tuple[int, int]:
    """The ``limit`` and ``offset`` query parameters of every listing (bounded)."""
    return limit, offset


Paging = Annotated[tuple[int, int], Depends(page_params)]


# ---- who is calling --------------------------------------------------------------------


def admin_actor(request: Request, _key: BearerKey = None) -> Actor:
    """The caller, who must hold the admin scope (401 / 403)."""
    return requires(request.app.state.gateway, "admin")(request)


def any_actor(request: Request, _key: BearerKey = None) -> Actor:
    """The caller, with any valid key (401)."""
    return requires(request.app.state.gateway)(request)


# Module-level, so FastAPI can resolve them from the annotations' text; a router uses the
# same callable in its own `dependencies`, and FastAPI runs it once per request.
AdminActor = Annotated[Actor, Depends(admin_actor)]
AnyActor = Annotated[Actor, Depends(any_actor)]


# ---- users and groups ------------------------------------------------------------------


class BudgetOut(BaseModel):
    token_budget: int | None = Field(description="Tokens per period; null: unlimited.")
    period: str = Field(description="day, week (from Monday) or month, in UTC.")
    source: str = Field(
        description='"user" (their own budget), "group" (their group\'s default) or "none".'
    )


def budget_out(budget: Budget) -> BudgetOut:
    return BudgetOut(token_budget=budget.tokens, period=budget.period, source=budget.source)


class UserOut(BaseModel):
    name: str = Field(description="The user's name (unique, case-sensitive).")
    role: str = Field(description="admin or user.")
    group: str | None = Field(description="The user's group, if any.")
    disabled: bool = Field(description="A disabled user's keys do not work.")
    max_concurrent: int | None = Field(description="Requests at once; null: no cap.")
    has_password: bool = Field(description="Whether a dashboard password is set.")
    created_at: datetime = Field(description="When the user was created (UTC).")


def user_out(user: User) -> UserOut:
    return UserOut(
        name=user.name,
        role=user.role,
        group=user.group,
        disabled=user.disabled,
        max_concurrent=user.max_concurrent,
        has_password=user.has_password,
        created_at=user.created_at,
    )


class GroupOut(BaseModel):
    name: str = Field(description="The group's name.")
    weight: float = Field(description="Scheduling weight: a group of 2 gets twice the share.")
    token_budget: int | None = Field(description="Default tokens per period; null: unlimited.")
    budget_period: str = Field(description="day, week or month; members' budgets follow it.")


def group_out(group: Group) -> GroupOut:
    return GroupOut(
        name=group.name,
        weight=group.weight,
        token_budget=group.token_budget,
        budget_period=group.budget_period,
    )


# ---- keys ------------------------------------------------------------------------------


class KeyCreate(Strict):
    name: str = Field("", max_length=128, description="A label to tell keys apart.")
    scopes: list[Scope] | None = Field(
        None,
        min_length=1,
        max_length=len(SCOPES),
        description="inference, admin, models. Default: every scope for an admin's first "
        "key, else inference.",
    )
    expires_at: AwareDatetime | None = Field(
        None,
        strict=False,  # JSON has no datetime: it comes as a string
        description="When the key stops working (ISO 8601 with a timezone).",
    )
    expires_in_days: int | None = Field(
        None, ge=1, le=MAX_EXPIRY_DAYS, description="Or: expire this many days from now."
    )
    allowed_models: list[Name] | None = Field(
        None,
        max_length=MAX_ALLOWED_MODELS,
        description="Only these models (Ollama names: llama3.2 allows llama3.2:latest); null: any.",
    )
    rpm_limit: Rate | None = Field(None, description="Requests per minute; null: no limit.")
    tpm_limit: Rate | None = Field(None, description="Tokens per minute; null: no limit.")


def key_spec(body: KeyCreate, scopes: list[str], now: datetime) -> KeySpec:
    """The store's key options from a request body (``scopes`` already decided)."""
    if body.expires_at is not None and body.expires_in_days is not None:
        raise BadRequest("give expires_at or expires_in_days, not both", param="expires_in_days")
    expires = body.expires_at
    if body.expires_in_days is not None:
        expires = now + timedelta(days=body.expires_in_days)
    if expires is not None and expires <= now:
        raise BadRequest("expires_at is in the past", param="expires_at")
    return KeySpec(
        name=body.name,
        scopes=scopes,
        allowed_models=body.allowed_models,
        expires_at=expires,
        rpm_limit=body.rpm_limit,
        tpm_limit=body.tpm_limit,
    )


class KeyOut(BaseModel):
    prefix: str = Field(description="The key's visible prefix: how lists and usage name it.")
    user: str = Field(description="Whose key it is.")
    name: str = Field(description="Its label.")
    scopes: list[str] = Field(description="What it may do: inference, admin, models.")
    allowed_models: list[str] | None = Field(description="Only these models; null: any.")
    rpm_limit: int | None = Field(description="Requests per minute; null: no limit.")
    tpm_limit: int | None = Field(description="Tokens per minute; null: no limit.")
    expires_at: datetime | None = Field(description="When it stops working; null: never.")
    revoked: bool = Field(description="Revoked keys never work again.")
    state: str = Field(description="active, expired or revoked.")
    created_at: datetime = Field(description="When it was made (UTC).")


class NewKeyOut(KeyOut):
    key: str = Field(
        description="The key itself: shown in this response once and never again "
        "(only its digest is kept)."
    )


def key_out(key: ApiKey, now: datetime | None = None) -> KeyOut:
    now = now or datetime.now(UTC)
    state = "revoked" if key.revoked else "active" if key.usable(now) else "expired"
    return KeyOut(
        prefix=key.prefix,
        user=key.user_name,
        name=key.name,
        scopes=list(key.scopes),
        allowed_models=None if key.allowed_models is None else list(key.allowed_models),
        rpm_limit=key.rpm_limit,
        tpm_limit=key.tpm_limit,
        expires_at=key.expires_at,
        revoked=key.revoked,
        state=state,
        created_at=key.created_at,
    )


class KeyPage(Page):
    items: list[KeyOut] = Field(description="The keys, by owner then age.")


def check_prefix(prefix: str) -> str:
    """A key's prefix as given in a path: 8 lowercase letters and digits (400 otherwise)."""
    if PREFIX_RE.fullmatch(prefix) is None:
        raise BadRequest(
            "prefix: a key prefix is 8 lowercase letters and digits (the part after crl_)",
            param="prefix",
        )
    return prefix


# ---- quota requests and usage ----------------------------------------------------------


class QuotaRequestOut(BaseModel):
    id: int = Field(description="The request's number.")
    user: str = Field(description="Who asked.")
    amount: int = Field(description="Tokens per period asked for, on top of the budget.")
    reason: str = Field(description="Why, in the user's words.")
    status: str = Field(description="pending, approved or denied.")
    decided_by: str | None = Field(
        description="The admin who decided; null while pending, or when CORRAL_ADMIN_KEY "
        "or the loopback admin decided (the audit log names them)."
    )
    decided_at: datetime | None = Field(description="When it was decided.")
    created_at: datetime = Field(description="When it was filed.")


def quota_request_out(found: QuotaRequest) -> QuotaRequestOut:
    return QuotaRequestOut(
        id=found.id,
        user=found.user_name,
        amount=found.amount,
        reason=found.reason,
        status=found.status,
        decided_by=found.decided_by,
        decided_at=found.decided_at,
        created_at=found.created_at,
    )


class QuotaRequestPage(Page):
    items: list[QuotaRequestOut] = Field(description="The requests, oldest first.")


class UsageRowOut(BaseModel):
    key: str | None = Field(
        description="The user's name, the model, or the UTC day (YYYY-MM-DD); null for "
        "requests of no user (CORRAL_ADMIN_KEY, auth off, a removed user)."
    )
    requests: int = Field(description="Requests in the group.")
    prompt_tokens: int = Field(description="Prompt tokens they used.")
    completion_tokens: int = Field(description="Completion tokens they used.")
    total_tokens: int = Field(description="Prompt plus completion tokens.")


def usage_row_out(total: UsageTotal) -> UsageRowOut:
    return UsageRowOut(
        key=total.key,
        requests=total.requests,
        prompt_tokens=total.prompt_tokens,
        completion_tokens=total.completion_tokens,
        total_tokens=total.total_tokens,
    )


class UsageReport(Page):
    group_by: str = Field(description="user, model or day.")
    items: list[UsageRowOut] = Field(description="One row per group, ordered by its key.")


class UsageQuery(BaseModel):
    model: str | None
    since: datetime | None
    until: datetime | None


def _iso_time(value: object) -> object:
    # pydantic would read "1700000000" (or "0.5") as seconds since 1970: not what the
    # spec says this is, and easy to send by mistake.
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        raise ValueError("must be an ISO 8601 time with a timezone, e.g. 2026-05-01T00:00Z")
    return value


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
IsoTime = Annotated[AwareDatetime, BeforeValidator(_iso_time)]


def usage_params(
    model: Annotated[
        str | None, Query(min_length=1, max_length=256, description="Only this model.")
    ] = None,
    since: Annotated[
        IsoTime | None, Query(description="From this time (ISO 8601 with a timezone).")
    ] = None,
    until: Annotated[IsoTime | None, Query(description="Up to (not including) this time.")] = None,
) -> UsageQuery:
    """The filters shared by the admin and the self-service usage routes."""
    return UsageQuery(model=model, since=since, until=until)


# ---- helpers ---------------------------------------------------------------------------


def store_of(gw: Gateway) -> Store:
    if gw.store is None:
        raise Unavailable("the store is not open")
    return gw.store


async def refresh(gw: Gateway) -> None:
    """Reload the key cache and limits after a change, so it takes effect at once."""
    try:
        await gw.auth.reload()
    except Exception as exc:
        log.exception("reloading the key cache after a change failed")
        raise Unavailable(
            "the change is stored, but the gateway could not reload its keys; it will "
            f"retry every auth.reload_s ({gw.settings.auth.reload_s:g} s)",
            retry_after=gw.settings.auth.reload_s,
        ) from exc
