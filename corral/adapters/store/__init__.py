"""The store: identity, keys, backends, usage, quota and audit in SQL.

One schema on SQLite (the default, a file in the data directory) and PostgreSQL,
migrated by Alembic. `Store` is the connection; the operations live in small
modules (`users`, `keys`, `backends`, `ledger`, `quota`, `audit`, and `audited` for
changes recorded with their audit event), each operation
one transaction, taking and returning the plain values of `records`.
"""

from __future__ import annotations

from corral.adapters.store.db import Store

__all__ = ["Store"]
