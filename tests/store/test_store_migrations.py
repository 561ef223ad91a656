"""Migrations reach head on both engines, twice is a no-op, and match the models."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect

from corral.adapters.store import Store
from corral.adapters.store.db import head_revision
from corral.adapters.store.schema import metadata
from tests.store.conftest import fresh_store

TABLES = {
    "groups",
    "users",
    "api_keys",
    "backends",
    "usage",
    "quota_overrides",
    "quota_periods",
    "quota_requests",
    "audit_events",
    "request_audit",
}


def _tables(conn: Connection) -> set[str]:
    return set(inspect(conn).get_table_names())


def _drift(conn: Connection) -> list[object]:
    context = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_upgrade_reaches_head_and_a_second_upgrade_is_a_no_op(
    kind: str, tmp_path: Path
) -> None:
    async with fresh_store(kind, tmp_path) as store:
        assert not await store.migrated()
        assert await store.current_revision() is None
        head = head_revision()
        assert head is not None
        assert await store.upgrade() == head
        assert await store.migrated()
        async with store.engine.connect() as conn:
            first = await conn.run_sync(_tables)
        assert await store.upgrade() == head
        async with store.engine.connect() as conn:
            assert await conn.run_sync(_tables) == first
        assert first >= TABLES | {"alembic_version"}


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
async def test_the_migrated_schema_matches_the_models(kind: str, tmp_path: Path) -> None:
    async with fresh_store(kind, tmp_path) as store:
        await store.upgrade()
        async with store.engine.connect() as conn:
            assert await conn.run_sync(_drift) == []


async def test_open_creates_the_sqlite_files_directory(tmp_path: Path) -> None:
    where = tmp_path / "a" / "b" / "corral.db"
    store = await Store.open(f"sqlite+aiosqlite:///{where}")
    try:
        assert await store.ping()
        await store.upgrade()
    finally:
        await store.close()
    assert where.exists()


async def test_ping_answers_on_both(store: Store) -> None:
    assert await store.ping()
    assert await store.migrated()


async def test_ping_is_false_when_the_database_is_gone(tmp_path: Path) -> None:
    store = await Store.open("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    try:
        assert not await store.ping()
    finally:
        await store.close()


async def test_an_unsupported_url_is_refused() -> None:
    from corral.core.errors import BadRequest

    with pytest.raises(BadRequest, match="unsupported"):
        await Store.open("mysql+aiomysql://root@localhost/corral")
