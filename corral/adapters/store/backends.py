"""Backends registered at run time; the config file's backends stay declarative.

A registration is checked by the same `BackendConfig` the config file uses, so a
stored backend is always one the gateway could have been configured with.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from sqlalchemy import select

from corral.adapters.store.db import Store
from corral.adapters.store.records import Backend
from corral.adapters.store.schema import BackendRow
from corral.config.models import BackendConfig
from corral.core.errors import BadRequest, Conflict, NotFound

__all__ = ["backend_config", "deregister_backend", "list_backends", "register_backend"]


def _backend(row: BackendRow) -> Backend:
    return Backend(row.name, row.url, row.kind, dict(row.options), row.created_by, row.created_at)


def backend_config(backend: Backend) -> BackendConfig:
    """The stored backend as the gateway's own config value."""
    return BackendConfig(name=backend.name, url=backend.url, kind=backend.kind, **backend.options)  # type: ignore[arg-type]


async def register_backend(
    store: Store,
    url: str,
    *,
    name: str | None = None,
    kind: str | None = None,
    options: dict[str, Any] | None = None,
    created_by: str | None = None,
) -> Backend:
    """Store a new backend; a taken name is `Conflict`, a bad field `BadRequest`."""
    fields: dict[str, Any] = {**(options or {}), "url": url}
    for key, value in (("name", name), ("kind", kind)):
        if value is not None:
            fields[key] = value
    try:
        config = BackendConfig.model_validate(fields)
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(p) for p in problem["loc"]) or "backend"
        raise BadRequest(f"backend {where}: {problem['msg']}", param=where) from exc
    extra = config.model_dump(exclude={"url", "kind", "name"}, exclude_unset=True)
    row = BackendRow(
        name=config.name, url=config.url, kind=config.kind, options=extra, created_by=created_by
    )
    try:
        async with store.write() as session:
            session.add(row)
            await session.flush()
    except Conflict as exc:
        raise Conflict(f"backend {config.name!r} already exists", param="name") from exc
    return _backend(row)


async def deregister_backend(store: Store, name: str) -> Backend:
    """Remove a registered backend and return what it was."""
    async with store.write() as session:
        row = await session.scalar(select(BackendRow).where(BackendRow.name == name))
        if row is None:
            raise NotFound(f"no registered backend {name!r}", param="name")
        gone = _backend(row)
        await session.delete(row)
    return gone


async def list_backends(store: Store) -> list[Backend]:
    async with store.read() as session:
        rows = await session.scalars(select(BackendRow).order_by(BackendRow.name))
        return [_backend(row) for row in rows]
