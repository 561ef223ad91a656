"""The store's tests run twice: on a SQLite file and on the real PostgreSQL.

PostgreSQL tests use a schema of their own (``corral_test_<random>``), created at the
start of the session and dropped at the end, so parallel and repeated runs never
meet. In CI (``CI=true``) an unreachable PostgreSQL fails the tests; elsewhere they
skip and say how to enable them.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from sqlalchemy import delete
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.schema import CreateSchema, DropSchema

from corral.adapters.store import Store
from corral.adapters.store.schema import metadata

PG_URL = os.environ.get("CORRAL_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
SECRET = b"test-server-secret-of-32-bytes!!"
# Cheap argon2 parameters: the tests check behaviour, not cost.
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


def _unreachable(exc: BaseException) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"PostgreSQL not reachable at 127.0.0.1:5432 in CI: {exc}")
    pytest.skip(
        "PostgreSQL not reachable at 127.0.0.1:5432; start it (e.g. .ci/run does) to run these"
    )


async def _schema_ddl(statement: CreateSchema | DropSchema) -> None:
    engine = create_async_engine(PG_URL, connect_args={"timeout": 5})
    try:
        async with engine.begin() as conn:
            await conn.execute(statement)
    finally:
        await engine.dispose()


def pg_connect_args(schema: str) -> dict[str, object]:
    return {"server_settings": {"search_path": schema}}


@asynccontextmanager
async def fresh_pg_store() -> AsyncIterator[Store]:
    """A PostgreSQL store on a new, empty schema, dropped afterwards."""
    schema = f"corral_test_{secrets.token_hex(6)}"
    try:
        await _schema_ddl(CreateSchema(schema))
    except (OSError, SQLAlchemyError) as exc:
        _unreachable(exc)
    store = await Store.open(PG_URL, connect_args=pg_connect_args(schema))
    try:
        yield store
    finally:
        await store.close()
        await _schema_ddl(DropSchema(schema, cascade=True))


@pytest.fixture(scope="session")
def pg_schema() -> Iterator[str]:
    """One migrated schema for the session's PostgreSQL tests."""
    schema = f"corral_test_{secrets.token_hex(6)}"
    try:
        asyncio.run(_schema_ddl(CreateSchema(schema)))
    except (OSError, SQLAlchemyError) as exc:
        _unreachable(exc)

    async def migrate() -> None:
        store = await Store.open(PG_URL, connect_args=pg_connect_args(schema))
        try:
            await store.upgrade()
        finally:
            await store.close()

    try:
        asyncio.run(migrate())
        yield schema
    finally:
        asyncio.run(_schema_ddl(DropSchema(schema, cascade=True)))


async def _wipe(store: Store) -> None:
    async with store.write() as session:
        for table in reversed(metadata.sorted_tables):
            await session.execute(delete(table))


@pytest.fixture(params=["sqlite", "postgresql"])
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict[str, object]]:
    """Where each engine's store lives: a fresh SQLite file, or the session's schema."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'data' / 'corral.db'}", {}
    # Resolved here, outside any event loop: the session fixture runs its own.
    return PG_URL, pg_connect_args(request.getfixturevalue("pg_schema"))


@pytest.fixture
async def store(store_target: tuple[str, dict[str, object]]) -> AsyncIterator[Store]:
    """A migrated, empty store on each engine."""
    url, connect_args = store_target
    opened = await Store.open(url, connect_args=connect_args)
    try:
        if opened.is_sqlite:
            await opened.upgrade()
        else:
            await _wipe(opened)
        yield opened
    finally:
        await opened.close()


@asynccontextmanager
async def fresh_store(kind: str, tmp_path: Path) -> AsyncIterator[Store]:
    """An unmigrated store on an empty database of ``kind``."""
    if kind == "postgresql":
        async with fresh_pg_store() as store:
            yield store
        return
    store = await Store.open(f"sqlite+aiosqlite:///{tmp_path / 'fresh' / 'corral.db'}")
    try:
        yield store
    finally:
        await store.close()
