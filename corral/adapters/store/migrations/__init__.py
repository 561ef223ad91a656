"""Alembic migrations for the store (run by `Store.upgrade` and `corral db upgrade`)."""
