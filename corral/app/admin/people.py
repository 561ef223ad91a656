"""Users and groups over HTTP: ``/admin/users`` and ``/admin/groups`` (admin scope).

Each change commits with its audit event (corral/adapters/store/audited.py) and then
reloads the gateway's key cache and limits, so a disabled user's keys, a new role or a
group's weight count from the very next request.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field, SecretStr, field_validator

from corral.adapters.store import audited
from corral.adapters.store.quota import effective_budget
from corral.adapters.store.schema import SCOPES
from corral.adapters.store.users import (
    KEEP,
    get_user,
    hash_password,
    list_groups,
    list_users,
)
from corral.app.admin.identity_models import (
    MAX_PASSWORD,
    AdminActor,
    BudgetOut,
    GroupOut,
    KeyCreate,
    Name,
    NewKeyOut,
    Page,
    Paging,
    Period,
    Rate,
    Strict,
    Tokens,
    UserOut,
    admin_actor,
    budget_out,
    group_out,
    key_out,
    key_spec,
    refresh,
    store_of,
    url_name,
    user_out,
)
from corral.core.errors import BadRequest

if TYPE_CHECKING:
    from corral.app.gateway import Gateway

__all__ = ["router"]

UserName = Annotated[str, Path(min_length=1, max_length=128, description="The user's name.")]
GroupName = Annotated[str, Path(min_length=1, max_length=128, description="The group's name.")]
Password = Annotated[SecretStr, Field(min_length=1, max_length=MAX_PASSWORD)]
Weight = Annotated[float, Field(ge=0, le=1_000_000, allow_inf_nan=False)]


class UserCreate(Strict):
    name: Name = Field(description="Unique, 1 to 128 printable characters, no '/'.")
    role: Literal["admin", "user"] = Field("user", description="admin or user.")
    group: Name | None = Field(None, description="An existing group.")
    password: Password | None = Field(
        None, description="A dashboard password (stored as an argon2 hash, never shown)."
    )
    max_concurrent: Rate | None = Field(None, description="Requests at once; null: no cap.")
    key: KeyCreate | None = Field(
        None,
        description="Make a first key too (send {} for the defaults); it is in the response once.",
    )

    _name = field_validator("name")(url_name)


class UserCreated(BaseModel):
    user: UserOut = Field(description="The new user.")
    key: NewKeyOut | None = Field(description="Their first key, shown this once; null if none.")


class UserPatch(Strict):
    role: Literal["admin", "user"] | None = Field(None, description="admin or user.")
    group: Name | None = Field(None, description="A group; null: no group.")
    disabled: bool | None = Field(None, description="true: their keys stop working.")
    max_concurrent: Rate | None = Field(None, description="Requests at once; null: no cap.")
    password: Password | None = Field(None, description="A new password; null: remove it.")


class UserDetail(UserOut):
    budget: BudgetOut = Field(description="Their effective token budget and where it comes from.")


class UserPage(Page):
    items: list[UserOut] = Field(description="The users, by name.")


class UserDeleted(BaseModel):
    user: UserOut = Field(description="The user, now disabled.")
    revoked_keys: list[str] = Field(description="Prefixes of the keys revoked now.")


class GroupCreate(Strict):
    name: Name = Field(description="Unique, 1 to 128 printable characters, no '/'.")
    weight: Weight = Field(1.0, description="Scheduling weight, 0 to 1,000,000.")
    token_budget: Tokens | None = Field(None, description="Members' default tokens per period.")
    budget_period: Period = Field("month", description="day, week or month (UTC).")

    _name = field_validator("name")(url_name)


class GroupPatch(Strict):
    weight: Weight | None = Field(None, description="Scheduling weight, 0 to 1,000,000.")
    token_budget: Tokens | None = Field(None, description="Default budget; null: unlimited.")
    budget_period: Period | None = Field(None, description="day, week or month.")


def _given(body: BaseModel, field: str, default: Any = KEEP) -> Any:
    """The field's value if the body named it (null included), else ``default``."""
    return getattr(body, field) if field in body.model_fields_set else default


def router(gw: Gateway) -> APIRouter:
    api = APIRouter(prefix="/admin", tags=["identity"], dependencies=[Depends(admin_actor)])

    @api.post("/users", status_code=201, response_model=UserCreated, summary="Create a user")
    async def create_user(body: UserCreate, actor: AdminActor) -> UserCreated:
        """Add a user, and with `key` their first key: both or neither. The key's text is
        in this response only. An admin's first key gets every scope unless `scopes`
        says otherwise. A taken name is 409."""
        store = store_of(gw)
        hashed = None
        if body.password is not None:
            hashed = await hash_password(body.password.get_secret_value())
        spec = None
        if body.key is not None:
            default = list(SCOPES) if body.role == "admin" else ["inference"]
            spec = key_spec(body.key, list(body.key.scopes or default), datetime.now(UTC))
        user, new = await audited.create_user(
            store,
            actor.name,
            body.name,
            role=body.role,
            group=body.group,
            max_concurrent=body.max_concurrent,
            password_hash=hashed,
            key=spec,
            server_secret=gw.auth.server_secret if spec is not None else None,
        )
        await refresh(gw)
        made = None
        if new is not None:
            made = NewKeyOut(**key_out(new.key).model_dump(), key=new.plaintext)
        return UserCreated(user=user_out(user), key=made)

    @api.get("/users", response_model=UserPage, summary="List users")
    async def users(_: AdminActor, page: Paging) -> UserPage:
        """Users by name, a page at a time (`limit` 1 to 1000, `offset`)."""
        limit, offset = page
        found = await list_users(store_of(gw), limit=limit, offset=offset)
        return UserPage(
            items=[user_out(u) for u in found.items], limit=limit, offset=offset, more=found.more
        )

    @api.get("/users/{name}", response_model=UserDetail, summary="Show a user")
    async def user(name: UserName, _: AdminActor) -> UserDetail:
        """One user, with their effective token budget. 404 if there is none."""
        store = store_of(gw)
        found = await get_user(store, name)
        budget = await effective_budget(store, name)
        return UserDetail(**user_out(found).model_dump(), budget=budget_out(budget))

    @api.patch("/users/{name}", response_model=UserOut, summary="Change a user")
    async def change_user(name: UserName, body: UserPatch, actor: AdminActor) -> UserOut:
        """Change the fields given: role, group (null: none), disabled, max_concurrent
        (null: no cap), password (null: remove it). Fields left out stay as they are.
        Demoting an admin takes the admin scope from all their keys at once."""
        if not body.model_fields_set:
            raise BadRequest("nothing to change: give at least one field", param="body")
        if actor.user == name and (body.disabled or body.role == "user"):
            raise BadRequest(
                "an admin may not disable or demote themselves (ask another admin)",
                param="disabled" if body.disabled else "role",
            )
        hashed: Any = KEEP
        if "password" in body.model_fields_set:
            hashed = None
            if body.password is not None:
                hashed = await hash_password(body.password.get_secret_value())
        changed = await audited.update_user(
            store_of(gw),
            actor.name,
            name,
            role=body.role,
            group=_given(body, "group"),
            disabled=body.disabled,
            max_concurrent=_given(body, "max_concurrent"),
            password_hash=hashed,
        )
        await refresh(gw)
        return user_out(changed)

    @api.delete("/users/{name}", response_model=UserDeleted, summary="Disable a user")
    async def delete_user(name: UserName, actor: AdminActor) -> UserDeleted:
        """Disable the user and revoke every key they hold, at once. The user is kept
        (disabled), so their usage rows keep their name and the name stays taken;
        `PATCH` with `disabled: false` lets them in again with new keys."""
        if actor.user == name:
            raise BadRequest("an admin may not delete themselves (ask another admin)", param="name")
        found, revoked = await audited.disable_user(store_of(gw), actor.name, name)
        await refresh(gw)
        return UserDeleted(user=user_out(found), revoked_keys=revoked)

    @api.post("/groups", status_code=201, response_model=GroupOut, summary="Create a group")
    async def create_group(body: GroupCreate, actor: AdminActor) -> GroupOut:
        """Add a group with a scheduling weight and, optionally, its members' default
        token budget per period. A taken name is 409."""
        made = await audited.create_group(
            store_of(gw),
            actor.name,
            body.name,
            weight=body.weight,
            token_budget=body.token_budget,
            budget_period=body.budget_period,
        )
        await refresh(gw)
        return group_out(made)

    @api.get("/groups", response_model=list[GroupOut], summary="List groups")
    async def groups(_: AdminActor) -> list[GroupOut]:
        """Every group, by name, with its weight and default budget."""
        return [group_out(g) for g in await list_groups(store_of(gw))]

    @api.patch("/groups/{name}", response_model=GroupOut, summary="Change a group")
    async def change_group(name: GroupName, body: GroupPatch, actor: AdminActor) -> GroupOut:
        """Change the fields given: weight (the scheduler uses it from the next request),
        token_budget (null: unlimited) and budget_period."""
        if not body.model_fields_set:
            raise BadRequest("nothing to change: give at least one field", param="body")
        changed = await audited.update_group(
            store_of(gw),
            actor.name,
            name,
            weight=body.weight,
            token_budget=_given(body, "token_budget"),
            budget_period=body.budget_period,
        )
        await refresh(gw)
        return group_out(changed)

    return api
