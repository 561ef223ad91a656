"""``corral db``: the store's operator commands."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from corral.adapters.store.db import Store
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


@app.command()
def upgrade(
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            envvar="CORRAL_DATABASE_URL",
            help="sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER@HOST/DB "
            "(default: corral.db in the data directory).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Apply every pending migration (the gateway also does this when it starts)."""
    url = database_url or default_database_url()
    try:
        shown = make_url(url).render_as_string(hide_password=True)
    except ArgumentError as exc:
        typer.echo(f"corral db upgrade: not a database URL: {url!r}", err=True)
        raise typer.Exit(2) from exc
    try:
        revision = asyncio.run(_upgrade(url))
    except (CorralError, SQLAlchemyError, OSError) as exc:
        typer.echo(f"corral db upgrade: {shown}: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"{shown} is at revision {revision}")
