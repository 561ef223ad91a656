"""Request audit: one row per request when ``audit.content`` is metadata or full.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23

Written out in full, like 0001: a migration is history. Runs unchanged on SQLite and
PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "request_audit",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user_name", sa.String(128), nullable=True),
        sa.Column("key_prefix", sa.String(16), nullable=True),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("dialect", sa.String(16), nullable=False),
        sa.Column("backend", sa.String(128), nullable=True),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=True),
        sa.Column("completion_tokens", sa.Integer(), nullable=True),
        sa.Column("ttft_ms", sa.Float(), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("error", sa.String(512), nullable=True),
        sa.Column("level", sa.String(8), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=True),
        sa.Column("response", sa.Text(), nullable=True),
        sa.Column("truncated", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_request_audit"),
        sa.UniqueConstraint("request_id", name="uq_request_audit_request_id"),
        sa.CheckConstraint("level IN ('metadata', 'full')", name="ck_request_audit_level"),
    )
    op.create_index("ix_request_audit_time", "request_audit", ["time"])
    op.create_index("ix_request_audit_user_name_time", "request_audit", ["user_name", "time"])


def downgrade() -> None:
    op.drop_table("request_audit")  # its indexes go with it
