"""Alembic's entry point, run inside `Store.upgrade` on a connection it hands over.

There is no alembic.ini and no URL here: the store opens the engine (with its pragmas
and pool) and passes a connection in ``config.attributes["connection"]``.
"""

from __future__ import annotations

from alembic import context

from corral.adapters.store.schema import metadata


def run() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through Store.upgrade or `corral db upgrade`")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things; batch mode copies the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


run()
