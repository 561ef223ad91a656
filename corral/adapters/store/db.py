"""The store's connection: engine, migrations, transactions.

One `Store` per process, held by the app object. SQLite (the default, a file in the
data directory) gets WAL, a busy timeout, foreign keys, and a single writer: write
transactions take an asyncio lock so two coroutines never fight over the file's one
write lock. PostgreSQL gets a pre-pinged pool and concurrent writers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import StaticPool

from corral.core.errors import BadRequest, Conflict

__all__ = ["MAX_PAGE", "MIGRATIONS", "Store", "alembic_config", "check_page", "head_revision"]

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
MAX_PAGE = 1000

# The only SQL text in the store: connection settings and transaction control that
# SQLite offers no other way to reach. Fixed literals, never built from input.
_SQLITE_PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA foreign_keys=ON", "PRAGMA synchronous=NORMAL")
_SQLITE_BEGIN = "BEGIN"


def check_page(limit: int, offset: int) -> None:
    """Refuse pages a client could use to make the database do unbounded work."""
    if not 1 <= limit <= MAX_PAGE:
        raise BadRequest(f"limit must be between 1 and {MAX_PAGE}, not {limit}", param="limit")
    if offset < 0:
        raise BadRequest(f"offset must be 0 or more, not {offset}", param="offset")


def alembic_config() -> Config:
    """Alembic's settings, built in code: the package ships no alembic.ini."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _make_parent(database: str) -> None:
    Path(database).expanduser().parent.mkdir(mode=0o700, parents=True, exist_ok=True)


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # The driver's own transaction handling starts a transaction only at the first
    # write, so earlier reads and DDL run outside it; SQLAlchemy emits BEGIN instead
    # (the recipe in its SQLite dialect docs): reads, writes, savepoints and a
    # migration's DDL then share one transaction.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in _SQLITE_PRAGMAS:
        cursor.execute(pragma)
    cursor.close()


def _on_sqlite_begin(connection: Connection) -> None:
    connection.exec_driver_sql(_SQLITE_BEGIN)


class Store:
    """An open database: `open`, then `upgrade`, then transactions; `close` at the end."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        # One writer per SQLite file (STYLE.md #7); PostgreSQL locks rows itself.
        self._write_lock: asyncio.Lock | None = asyncio.Lock() if self.is_sqlite else None

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @classmethod
    async def open(cls, url: str, *, connect_args: Mapping[str, Any] | None = None) -> Store:
        """Connect to ``url`` (``sqlite+aiosqlite:///path`` or ``postgresql+asyncpg://…``).

        A SQLite file's directory is created. ``connect_args`` go to the driver (the
        tests use it to put PostgreSQL tables in a schema of their own).
        """
        parsed = make_url(url)
        args: dict[str, Any] = dict(connect_args or {})
        options: dict[str, Any] = {}
        if parsed.get_backend_name() == "sqlite":
            database = parsed.database or ""
            if database and database != ":memory:" and not database.startswith("file:"):
                await asyncio.to_thread(_make_parent, database)
            else:
                options["poolclass"] = StaticPool  # an in-memory database lives in one connection
            args.setdefault("timeout", 30)  # the driver's busy timeout, in seconds
        elif parsed.get_backend_name() == "postgresql":
            args.setdefault("server_settings", {})
            args["server_settings"] = {"timezone": "UTC", **args["server_settings"]}
            options.update(pool_size=10, max_overflow=10, pool_pre_ping=True, pool_recycle=1800)
        else:
            raise BadRequest(f"unsupported database URL {parsed.render_as_string()!r}")
        engine = create_async_engine(parsed, connect_args=args, **options)
        if parsed.get_backend_name() == "sqlite":
            event.listen(engine.sync_engine, "connect", _on_sqlite_connect)
            event.listen(engine.sync_engine, "begin", _on_sqlite_begin)
        return cls(engine)

    async def close(self) -> None:
        await self.engine.dispose()

    async def ping(self) -> bool:
        """True when a trivial query answers."""
        try:
            async with self.engine.connect() as conn:
                await conn.execute(select(1))
        except Exception:
            return False
        return True

    async def upgrade(self, revision: str = "head") -> str | None:
        """Run the migrations up to ``revision``; return the revision reached."""

        def run(connection: Connection) -> None:
            cfg = alembic_config()
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, revision)

        async with self._writing(), self.engine.begin() as conn:
            await conn.run_sync(run)
        return await self.current_revision()

    async def current_revision(self) -> str | None:
        async with self.engine.connect() as conn:
            return await conn.run_sync(
                lambda c: MigrationContext.configure(c).get_current_revision()
            )

    async def migrated(self) -> bool:
        """True when the database is at the newest migration this code knows."""
        return await self.current_revision() == head_revision()

    @asynccontextmanager
    async def _writing(self) -> AsyncIterator[None]:
        if self._write_lock is None:
            yield
            return
        async with self._write_lock:
            yield

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """One write transaction: committed at the end, rolled back whole on any error.

        A unique or foreign-key clash that the operation did not turn into its own
        error surfaces as `Conflict`.
        """
        async with self._writing(), self._sessions() as session:
            try:
                async with session.begin():
                    yield session
            except IntegrityError as exc:
                raise Conflict("the change conflicts with stored data") from exc

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A read-only session (no lock; WAL lets readers run beside the writer)."""
        async with self._sessions() as session:
            yield session
