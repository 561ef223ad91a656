"""Backends registered at run time; the config file's backends stay declarative.

A registration is checked by the same `BackendConfig` the config file uses, so a
stored backend is always one the gateway could have been configured with. Given an
``actor``, each change writes its audit event in the same transaction.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from corral.adapters.store.audit import insert_audit
from corral.adapters.store.db import Store
from corral.adapters.store.records import Backend
from corral.adapters.store.schema import BackendRow
from corral.config.models import BackendConfig
from corral.core.errors import BadRequest, Conflict, NotFound

__all__ = [
    "backend_config",
    "backend_options",
    "backend_record",
    "deregister_backend",
    "list_backends",
    "register_backend",
    "update_backend",
    "validate_backend",
]


def _backend(row: BackendRow) -> Backend:
    return Backend(row.name, row.url, row.kind, dict(row.options), row.created_by, row.created_at)


def backend_record(backend: Backend) -> dict[str, Any]:
    """The stored backend as plain JSON (what the audit log keeps before and after)."""
    return {"name": backend.name, "url": backend.url, "kind": backend.kind, **backend.options}


def backend_config(backend: Backend) -> BackendConfig:
    """The stored backend as the gateway's own config value."""
    return BackendConfig(name=backend.name, url=backend.url, kind=backend.kind, **backend.options)  # type: ignore[arg-type]


def validate_backend(fields: dict[str, Any]) -> BackendConfig:
    """``fields`` as a `BackendConfig`, or `BadRequest` naming the first bad field."""
    try:
        return BackendConfig.model_validate(fields)
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(p) for p in problem["loc"]) or "backend"
        message = problem["msg"].removeprefix("Value error, ")
        raise BadRequest(f"backend {where}: {message}", param=where) from exc


def backend_options(config: BackendConfig) -> dict[str, Any]:
    """What a registration stores beyond name, URL and kind: the fields given."""
    return config.model_dump(mode="json", exclude={"url", "kind", "name"}, exclude_unset=True)


async def register_backend(
    store: Store,
    url: str,
    *,
    name: str | None = None,
    kind: str | None = None,
    options: dict[str, Any] | None = None,
    created_by: str | None = None,
    actor: str | None = None,
) -> Backend:
    """Store a new backend; a taken name is `Conflict`, a bad field `BadRequest`."""
    fields: dict[str, Any] = {**(options or {}), "url": url}
    for key, value in (("name", name), ("kind", kind)):
        if value is not None:
            fields[key] = value
    config = validate_backend(fields)
    row = BackendRow(
        name=config.name,
        url=config.url,
        kind=config.kind,
        options=backend_options(config),
        created_by=created_by,
    )
    try:
        async with store.write() as session:
            session.add(row)
            await session.flush()
            made = _backend(row)
            if actor is not None:
                after = backend_record(made)
                await insert_audit(session, actor, "backend.register", made.name, after=after)
    except Conflict as exc:
        raise Conflict(f"backend {config.name!r} already exists", param="name") from exc
    return made


async def _row(session: AsyncSession, name: str) -> BackendRow:
    row = await session.scalar(select(BackendRow).where(BackendRow.name == name))
    if row is None:
        raise NotFound(f"no registered backend {name!r}", param="name")
    return row


async def update_backend(
    store: Store, name: str, changes: dict[str, Any], *, actor: str | None = None
) -> tuple[Backend, Backend]:
    """Change a registered backend's options (None unsets one); (before, after).

    The result is checked as a whole `BackendConfig`; the name, URL and kind stay.
    """
    for key in ("name", "url", "kind"):
        if key in changes:
            raise BadRequest(f"a backend's {key} cannot be changed; deregister it", param=key)
    async with store.write() as session:
        row = await _row(session, name)
        before = _backend(row)
        options = {**row.options, **changes}
        options = {k: v for k, v in options.items() if v is not None}
        config = validate_backend({**options, "name": row.name, "url": row.url, "kind": row.kind})
        row.options = backend_options(config)
        await session.flush()
        after = _backend(row)
        if actor is not None:
            await insert_audit(
                session,
                actor,
                "backend.update",
                name,
                before=backend_record(before),
                after=backend_record(after),
            )
    return before, after


async def deregister_backend(store: Store, name: str, *, actor: str | None = None) -> Backend:
    """Remove a registered backend and return what it was."""
    async with store.write() as session:
        row = await _row(session, name)
        gone = _backend(row)
        await session.delete(row)
        if actor is not None:
            await insert_audit(
                session, actor, "backend.deregister", name, before=backend_record(gone)
            )
    return gone


async def list_backends(store: Store) -> list[Backend]:
    async with store.read() as session:
        rows = await session.scalars(select(BackendRow).order_by(BackendRow.name))
        return [_backend(row) for row in rows]
