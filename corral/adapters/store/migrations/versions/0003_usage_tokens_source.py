"""usage.tokens_source: how a row's token counts were had.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07

"reported" (the backend's answer said), "tokenized" (the backend's tokenizer counted
what its answer did not report) or "estimated" (about 4 characters a token); NULL
when a request got no counts at all, and for rows written before this column.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("usage") as batch:
        batch.add_column(sa.Column("tokens_source", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("usage") as batch:
        batch.drop_column("tokens_source")
