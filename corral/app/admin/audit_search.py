"""``GET /admin/audit/search``: admin events and audited requests, filtered and paged."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from corral.adapters.store.audit_search import AuditHit, search_everything
from corral.adapters.store.db import MAX_PAGE
from corral.app.admin.audit import audit_action
from corral.app.admin.deps import Actor, requires
from corral.app.admin.identity_models import IsoTime
from corral.core.errors import Unavailable

if TYPE_CHECKING:
    from corral.app.gateway import Gateway

__all__ = ["AdminEventHit", "AuditPage", "RequestHit", "router"]

MAX_OFFSET = 1_000_000  # deeper pages: narrow the time range instead


class AdminEventHit(BaseModel):
    kind: Literal["admin"] = Field(description='"admin": an admin action.')
    id: int = Field(description="The event's id.")
    time: datetime = Field(description="When it happened (UTC).")
    actor: str = Field(description='Who did it: a user, "env" (CORRAL_ADMIN_KEY) or "local".')
    action: str = Field(description='What was done, e.g. "key.create".')
    target: str = Field(description="What it was done to (a user, key prefix, backend, ...).")
    before: Any = Field(description="The record before the change (JSON), if any.")
    after: Any = Field(description="The record after the change (JSON), if any.")
    request_id: str | None = Field(description="The control-plane request that made it, if known.")


class RequestHit(BaseModel):
    kind: Literal["request"] = Field(description='"request": an inference request.')
    id: int = Field(description="The request audit row's id.")
    time: datetime = Field(description="When the request arrived (UTC).")
    request_id: str = Field(description="The request's X-Corral-Request-Id.")
    user: str | None = Field(description="The key's user (none with auth off or CORRAL_ADMIN_KEY).")
    key_prefix: str | None = Field(
        description='The key\'s visible prefix ("env" for CORRAL_ADMIN_KEY).'
    )
    action: str = Field(
        description="The endpoint called, e.g. /api/chat (what `action` filters on)."
    )
    model: str = Field(description="The model, as Corral resolved it (name:tag or logical name).")
    dialect: str = Field(description="The client's dialect: ollama or openai.")
    backend: str | None = Field(description="The backend that served it; none if none did.")
    status: int = Field(description="The HTTP status the client got (499: the client left).")
    prompt_tokens: int | None = Field(description="Prompt tokens, when counted.")
    completion_tokens: int | None = Field(description="Completion tokens, when counted.")
    ttft_ms: float | None = Field(description="Time to the first byte of the answer, ms.")
    duration_ms: float = Field(description="Time from arrival to the end, ms.")
    error: str | None = Field(description="What went wrong, if anything.")
    level: Literal["metadata", "full"] = Field(description="What audit.content was when it ran.")
    params: dict[str, Any] = Field(
        description="The request's parameters without its text; `omitted` names the text "
        "fields taken out (messages, prompt, system, tools, images, ...)."
    )
    prompt: dict[str, Any] | None = Field(
        description="full only: the request's text fields as sent (images replaced by a "
        "placeholder, cut at audit.max_text_chars)."
    )
    response: str | None = Field(description="full only: the answer's text (content).")
    truncated: bool = Field(description="True when the prompt or answer was cut.")


Hit = Annotated[AdminEventHit | RequestHit, Field(discriminator="kind")]


class AuditPage(BaseModel):
    items: list[Hit] = Field(description="Matching admin events and requests, newest first.")
    limit: int = Field(description="The page size asked for.")
    offset: int = Field(description="Results skipped before this page.")
    more: bool = Field(description="True when another page follows.")


def _prompt(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return {"unreadable": text}
    return value if isinstance(value, dict) else {"value": value}


def _item(hit: AuditHit) -> AdminEventHit | RequestHit:
    if hit.event is not None:
        e = hit.event
        return AdminEventHit(
            kind="admin",
            id=hit.id,
            time=e.time,
            actor=e.actor,
            action=e.action,
            target=e.target,
            before=e.before,
            after=e.after,
            request_id=e.request_id,
        )
    r = hit.request
    assert r is not None
    return RequestHit(
        kind="request",
        id=hit.id,
        time=r.time,
        request_id=r.request_id,
        user=r.user_name,
        key_prefix=r.key_prefix,
        action=r.endpoint,
        model=r.model,
        dialect=r.dialect,
        backend=r.backend,
        status=r.status,
        prompt_tokens=r.prompt_tokens,
        completion_tokens=r.completion_tokens,
        ttft_ms=r.ttft_ms,
        duration_ms=r.duration_ms,
        error=r.error,
        level="full" if r.level == "full" else "metadata",
        params=r.params or {},
        prompt=_prompt(r.prompt),
        response=r.response,
        truncated=r.truncated,
    )


def router(gw: Gateway) -> APIRouter:
    api = APIRouter(tags=["audit"])
    admin = Depends(requires(gw, "admin"))

    @api.get("/admin/audit/search", response_model=AuditPage, summary="Search the audit log")
    async def search(
        user: Annotated[
            str | None,
            Query(max_length=128, description="An admin event's actor or a request's user."),
        ] = None,
        model: Annotated[
            str | None,
            Query(
                max_length=256,
                description="Requests for this model (an alias finds its model); admin "
                "events have no model, so this leaves them out.",
            ),
        ] = None,
        since: Annotated[
            IsoTime | None,
            Query(description="From this time on, ISO 8601 with a timezone (2026-05-01T00:00Z)."),
        ] = None,
        until: Annotated[
            IsoTime | None,
            Query(description="Before this time, ISO 8601 with a timezone."),
        ] = None,
        text: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=256,
                description="Literal text, any case: in an event's actor, action, target or "
                "before/after, or a request's prompt, answer or error.",
            ),
        ] = None,
        kind: Annotated[
            Literal["admin", "request"] | None,
            Query(description="Only admin events, or only requests."),
        ] = None,
        action: Annotated[
            str | None,
            Query(
                max_length=128,
                description='An admin action ("key.create") or a request\'s endpoint '
                '("/api/chat").',
            ),
        ] = None,
        limit: Annotated[
            int, Query(ge=1, le=MAX_PAGE, description=f"Page size, 1 to {MAX_PAGE}.")
        ] = 100,
        offset: Annotated[
            int, Query(ge=0, le=MAX_OFFSET, description="Results to skip (newest first).")
        ] = 0,
        actor: Actor = admin,
    ) -> AuditPage:
        """Admin actions (always recorded) and inference requests (recorded when
        `audit.content` is metadata or full, kept for `audit.retention_days`), newest
        first, matching every filter given. Each item's `kind` says which it is. A
        search that can return requests is itself recorded as an `audit.search` event."""
        if gw.store is None:
            raise Unavailable("the store is not open", retry_after=1.0)
        resolved = gw.fleet.models.resolve(model) if model is not None else None
        page = await search_everything(
            gw.store,
            kind=kind,
            user=user,
            model=resolved,
            action=action,
            since=since,
            until=until,
            text=text,
            limit=limit,
            offset=offset,
        )
        if kind != "admin":
            # Reading what people asked and were answered is itself on the record.
            filters = {
                "user": user,
                "model": model,
                "since": since.isoformat() if since else None,
                "until": until.isoformat() if until else None,
                "text": text,
                "kind": kind,
                "action": action,
                "limit": limit,
                "offset": offset,
            }
            await audit_action(
                gw,
                actor,
                "audit.search",
                after={k: v for k, v in filters.items() if v is not None},
            )
        return AuditPage(
            items=[_item(hit) for hit in page.items], limit=limit, offset=offset, more=page.more
        )

    return api
