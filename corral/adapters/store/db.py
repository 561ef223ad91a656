"""The store's connection: engine, migrations, transactions.

One `Store` per process, held by the app object. SQLite (the default, a file in the
data directory) gets WAL, a busy timeout, foreign keys, and a single writer: write
transactions take an asyncio lock so two coroutines never fight over the file's one
write lock. PostgreSQL gets a pre-pinged pool and concurrent writers.

A SQLite file also has a direct writer (`Store.write_direct`): one plain driver
connection in a thread of its own, for the usage ledger's batches. Through the async
engine every statement, its cursor, the commit and the connection's return each cross
to aiosqlite's thread and back (about 1 ms of CPU a transaction here, whatever its
size); the direct writer runs a whole transaction in one crossing, with statements
compiled once (`SqliteStatement`).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Table, event, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.dml import Insert

from corral.core.errors import BadRequest, Conflict

__all__ = [
    "MAX_PAGE",
    "MIGRATIONS",
    "SqliteStatement",
    "Store",
    "alembic_config",
    "check_page",
    "head_revision",
]

T = TypeVar("T")

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
MAX_PAGE = 1000

# The only SQL text in the store: connection settings and transaction control that
# SQLite offers no other way to reach. Fixed literals, never built from input.
_SQLITE_PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA foreign_keys=ON", "PRAGMA synchronous=NORMAL")
_SQLITE_BEGIN = "BEGIN"
_SQLITE_BEGIN_WRITE = "BEGIN IMMEDIATE"
_SQLITE_COMMIT = "COMMIT"
_SQLITE_ROLLBACK = "ROLLBACK"
_BUSY_TIMEOUT_S = 30


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


class SqliteStatement:
    """An INSERT (or upsert) compiled once for SQLite's driver, for `Store.write_direct`.

    `params` turns row dicts into the driver's tuples through the columns' own bind
    processors (timestamps, JSON), so a row is stored exactly as the async engine would
    store it; `run` executes them all in one ``executemany``.
    """

    __slots__ = ("_steps", "sql")

    def __init__(self, statement: Insert, table: Table, columns: Iterable[str]) -> None:
        dialect = sqlite.dialect()
        compiled = statement.compile(dialect=dialect, column_keys=list(columns))
        self.sql = compiled.string
        names = compiled.positiontup or []
        self._steps = [
            (name, table.c[name].type.dialect_impl(dialect).bind_processor(dialect))
            for name in names
        ]

    def params(self, rows: Iterable[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
        steps = self._steps
        return [
            tuple(row[name] if convert is None else convert(row[name]) for name, convert in steps)
            for row in rows
        ]

    def run(self, connection: sqlite3.Connection, params: list[tuple[Any, ...]]) -> int:
        """Execute for every tuple; the rows changed (for ON CONFLICT DO NOTHING: added)."""
        if not params:
            return 0
        return connection.executemany(self.sql, params).rowcount


class _DirectWriter:
    """One driver connection to a SQLite file, used only from its own thread."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="corral-sqlite")
        self._connection: sqlite3.Connection | None = None

    def transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        connection = self._connection
        if connection is None:
            connection = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
            _on_sqlite_connect(connection, None)
            self._connection = connection
        connection.execute(_SQLITE_BEGIN_WRITE)
        try:
            result = work(connection)
            connection.execute(_SQLITE_COMMIT)
        except BaseException:
            if connection.in_transaction:
                connection.execute(_SQLITE_ROLLBACK)
            raise
        return result

    def close(self) -> None:
        def close_connection() -> None:
            if self._connection is not None:
                self._connection.close()
                self._connection = None

        self.thread.submit(close_connection).result()
        self.thread.shutdown(wait=True)


class Store:
    """An open database: `open`, then `upgrade`, then transactions; `close` at the end."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        # One writer per SQLite file (STYLE.md #7); PostgreSQL locks rows itself.
        self._write_lock: asyncio.Lock | None = asyncio.Lock() if self.is_sqlite else None
        database = engine.url.database or ""
        file_backed = self.is_sqlite and database not in ("", ":memory:")
        self._direct_path = database if file_backed and not database.startswith("file:") else None
        self._direct: _DirectWriter | None = None

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
            args.setdefault("timeout", _BUSY_TIMEOUT_S)  # the driver's busy timeout
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
        if self._direct is not None:
            direct, self._direct = self._direct, None
            await asyncio.to_thread(direct.close)
        await self.engine.dispose()

    @property
    def direct_writes(self) -> bool:
        """True when `write_direct` is open to callers: a SQLite file (not in memory)."""
        return self._direct_path is not None

    async def write_direct(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in one write transaction on the direct writer's connection, in its
        thread: committed when it returns, rolled back whole when it raises (a unique or
        foreign-key clash surfaces as `Conflict`, as in `write`). Only where
        `direct_writes` is true. Holds the store's write lock until the transaction is
        over, even when the caller is cancelled meanwhile."""
        if self._direct_path is None:
            raise RuntimeError("write_direct needs a SQLite file")
        if self._direct is None:
            self._direct = _DirectWriter(self._direct_path)
        direct = self._direct
        async with self._writing():
            done = asyncio.get_running_loop().run_in_executor(
                direct.thread, direct.transaction, work
            )
            try:
                return await asyncio.shield(done)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await done  # the transaction ends (either way) before the lock goes
                raise
            except sqlite3.IntegrityError as exc:
                raise Conflict("the change conflicts with stored data") from exc

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
