"""Budgets, quota requests and usage over HTTP (admin scope).

A user's own budget replaces their group's default; clearing it brings the group's
back. Approving a quota request raises the user's own budget by the amount asked
(starting from their effective budget, the group's if they had none of their own),
as `corral.adapters.store.quota.decide_quota_request` does; the decision, the budget
change and the audit event commit together.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field

from corral.adapters.store import audited
from corral.adapters.store.ledger import usage_totals
from corral.adapters.store.quota import (
    decide_quota_request,
    effective_budget,
    list_quota_requests,
)
from corral.app.admin.deps import Actor
from corral.app.admin.identity_models import (
    MAX_NOTE,
    AdminActor,
    BudgetOut,
    GroupBy,
    Paging,
    QuotaRequestOut,
    QuotaRequestPage,
    Status,
    Strict,
    Tokens,
    UsageQuery,
    UsageReport,
    admin_actor,
    budget_out,
    quota_request_out,
    refresh,
    store_of,
    usage_params,
    usage_row_out,
)
from corral.app.admin.openapi import refusals

if TYPE_CHECKING:
    from corral.adapters.store.db import Store
    from corral.app.gateway import Gateway

__all__ = ["router", "usage_report"]

UserName = Annotated[str, Path(min_length=1, max_length=128, description="The user's name.")]
RequestId = Annotated[int, Path(ge=1, le=2**31 - 1, description="The quota request's number.")]


class BudgetSet(Strict):
    tokens: Tokens | None = Field(
        description="Tokens per period (the group's period); null: unlimited; 0 stops all use."
    )
    note: str = Field("", max_length=MAX_NOTE, description="Why, for the record.")


class UserBudget(BudgetOut):
    user: str = Field(description="Whose budget.")


class QuotaDecision(BaseModel):
    request: QuotaRequestOut = Field(description="The request, now decided.")
    budget: BudgetOut = Field(description="The user's effective budget after the decision.")


def router(gw: Gateway) -> APIRouter:
    api = APIRouter(prefix="/admin", tags=["identity"], dependencies=[Depends(admin_actor)])

    @api.put("/users/{name}/budget", response_model=UserBudget, summary="Set a user's budget")
    async def set_budget(name: UserName, body: BudgetSet, actor: AdminActor) -> UserBudget:
        """Give the user their own token budget per period (null: unlimited), in place of
        their group's. The period stays the group's (a month without a group). Takes
        effect on the next request."""
        _, after = await audited.set_budget(store_of(gw), actor.name, name, body.tokens, body.note)
        await refresh(gw)
        return UserBudget(**budget_out(after).model_dump(), user=name)

    @api.delete("/users/{name}/budget", response_model=UserBudget, summary="Clear a user's budget")
    async def clear_budget(name: UserName, actor: AdminActor) -> UserBudget:
        """Drop the user's own budget: their group's default applies again (or none)."""
        _, after = await audited.clear_budget(store_of(gw), actor.name, name)
        await refresh(gw)
        return UserBudget(**budget_out(after).model_dump(), user=name)

    @api.get("/quota/requests", response_model=QuotaRequestPage, summary="List quota requests")
    async def quota_requests(
        _: AdminActor,
        page: Paging,
        status: Annotated[Status | None, Query(description="Only requests in this state.")] = None,
        user: Annotated[
            str | None, Query(min_length=1, max_length=128, description="Only this user's.")
        ] = None,
    ) -> QuotaRequestPage:
        """Requests for more budget, oldest first, a page at a time."""
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

    async def decide(request_id: int, actor: Actor, approve: bool) -> QuotaDecision:
        store = store_of(gw)
        done = await decide_quota_request(
            store,
            request_id,
            approve=approve,
            decided_by=actor.user or actor.name,
            decider_is_user=actor.user is not None,
        )
        await refresh(gw)
        budget = await effective_budget(store, done.user_name)
        return QuotaDecision(request=quota_request_out(done), budget=budget_out(budget))

    @api.post(
        "/quota/requests/{id}/approve",
        response_model=QuotaDecision,
        summary="Approve a quota request",
        responses=refusals({409: "The request was decided already."}),
    )
    async def approve(id: RequestId, actor: AdminActor) -> QuotaDecision:
        """Approve a pending request: the user's own budget becomes their effective
        budget plus the amount (an unlimited budget stays unlimited). A request already
        decided is 409; an unknown one 404."""
        return await decide(id, actor, approve=True)

    @api.post(
        "/quota/requests/{id}/deny",
        response_model=QuotaDecision,
        summary="Deny a quota request",
        responses=refusals({409: "The request was decided already."}),
    )
    async def deny(id: RequestId, actor: AdminActor) -> QuotaDecision:
        """Deny a pending request; the budget stays as it is. A request already decided
        is 409; an unknown one 404."""
        return await decide(id, actor, approve=False)

    @api.get("/usage", response_model=UsageReport, summary="Usage by user, model or day")
    async def usage(
        _: AdminActor,
        page: Paging,
        filters: Annotated[UsageQuery, Depends(usage_params)],
        group_by: Annotated[GroupBy, Query(description="Sum per user, model or UTC day.")] = "user",
        user: Annotated[
            str | None, Query(min_length=1, max_length=128, description="Only this user's.")
        ] = None,
    ) -> UsageReport:
        """Requests and tokens from the usage ledger, summed per user, per model or per
        UTC day, over `[since, until)`, optionally for one user or model. Rows reach the
        ledger within `usage.batch_s` of a request's end."""
        return await usage_report(store_of(gw), group_by, user, filters, page)

    return api


async def usage_report(
    store: Store, group_by: GroupBy, user: str | None, filters: UsageQuery, page: tuple[int, int]
) -> UsageReport:
    """One page of the ledger's totals (the admin's report, and a user's own)."""
    limit, offset = page
    found = await usage_totals(
        store,
        group_by=group_by,
        user=user,
        model=filters.model,
        since=filters.since,
        until=filters.until,
        limit=limit,
        offset=offset,
    )
    return UsageReport(
        group_by=group_by,
        items=[usage_row_out(t) for t in found.items],
        limit=limit,
        offset=offset,
        more=found.more,
    )
