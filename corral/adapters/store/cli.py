"""``corral db``: the store's operator commands."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Annotated

import typer
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from corral.adapters.store.db import Store
from corral.adapters.store.request_audit import purge_request_audit
from corral.config.base import default_data_dir
from corral.core.errors import CorralError

__all__ = ["app", "default_data_dir", "default_database_url"]

app = typer.Typer(
    name="db",
    help="The database: users, keys, usage and audit (SQLite by default, or PostgreSQL).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def db() -> None:
    """The database: users, keys, usage and audit (SQLite by default, or PostgreSQL)."""


def default_database_url() -> str:
    return f"sqlite+aiosqlite:///{default_data_dir() / 'corral.db'}"


async def _upgrade(url: str) -> str | None:
    store = await Store.open(url)
    try:
        return await store.upgrade()
    finally:
        await store.close()


DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="CORRAL_DATABASE_URL",
        help="sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER@HOST/DB "
        "(default: corral.db in the data directory).",
        show_default=False,
    ),
]


def _shown(command: str, url: str) -> str:
    """The URL as printed (no password); exit 2 when it is no database URL."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError as exc:
        typer.echo(f"corral db {command}: not a database URL: {url!r}", err=True)
        raise typer.Exit(2) from exc


@app.command()
def upgrade(database_url: DatabaseUrl = None) -> None:
    """Apply every pending migration (the gateway also does this when it starts)."""
    url = database_url or default_database_url()
    shown = _shown("upgrade", url)
    try:
        revision = asyncio.run(_upgrade(url))
    except (CorralError, SQLAlchemyError, OSError) as exc:
        typer.echo(f"corral db upgrade: {shown}: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"{shown} is at revision {revision}")


async def _purge(url: str, days: float) -> int:
    store = await Store.open(url)
    try:
        await store.upgrade()
        return await purge_request_audit(store, datetime.now(UTC) - timedelta(days=days))
    finally:
        await store.close()


@app.command()
def purge(
    older_than_days: Annotated[
        float,
        typer.Option(
            "--older-than-days",
            min=0,
            help="Delete request audit rows older than this many days (the gateway's own "
            "purge uses audit.retention_days, default 30).",
        ),
    ] = 30.0,
    database_url: DatabaseUrl = None,
) -> None:
    """Delete request audit rows (prompts, answers, metadata) past a retention period now.

    Admin events and usage rows are kept. A running gateway does this itself every
    audit.purge_interval_s; this is for an operator who wants it done at once.
    """
    url = database_url or default_database_url()
    shown = _shown("purge", url)
    try:
        gone = asyncio.run(_purge(url, older_than_days))
    except (CorralError, SQLAlchemyError, OSError) as exc:
        typer.echo(f"corral db purge: {shown}: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"{shown}: deleted {gone} request audit rows older than {older_than_days:g} days")
