"""The initial schema: identity, backends, usage, quota and audit.

Revision ID: 0001
Revises:
Create Date: 2026-11-22

Written out in full rather than imported from schema.py: a migration is history and
must not change when the models do. Runs unchanged on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _ts(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _id(table: str, big: bool = False) -> list[sa.schema.SchemaItem]:
    return [
        sa.Column("id", BIG_ID if big else sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=f"pk_{table}"),
    ]


def _fk(table: str, column: str, ondelete: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], ["users.id"], name=f"fk_{table}_{column}_users", ondelete=ondelete
    )


def upgrade() -> None:
    op.create_table(
        "groups",
        *_id("groups"),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column("token_budget", sa.BigInteger(), nullable=True),
        sa.Column("budget_period", sa.String(8), nullable=False),
        _ts("created_at"),
        sa.CheckConstraint("weight >= 0", name="ck_groups_weight_nonnegative"),
        sa.CheckConstraint(
            "token_budget IS NULL OR token_budget >= 0", name="ck_groups_budget_nonnegative"
        ),
        sa.CheckConstraint(
            "budget_period IN ('day', 'week', 'month')", name="ck_groups_budget_period"
        ),
        sa.UniqueConstraint("name", name="uq_groups_name"),
    )
    op.create_table(
        "users",
        *_id("users"),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("group_id", sa.Integer(), nullable=True),
        sa.Column("password_hash", sa.String(255), nullable=True),
        sa.Column("max_concurrent", sa.Integer(), nullable=True),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        sa.CheckConstraint("role IN ('admin', 'user')", name="ck_users_role"),
        sa.CheckConstraint(
            "max_concurrent IS NULL OR max_concurrent >= 0",
            name="ck_users_concurrency_nonnegative",
        ),
        sa.ForeignKeyConstraint(
            ["group_id"], ["groups.id"], name="fk_users_group_id_groups", ondelete="SET NULL"
        ),
        sa.UniqueConstraint("name", name="uq_users_name"),
    )
    op.create_index("ix_users_group_id", "users", ["group_id"])
    op.create_table(
        "api_keys",
        *_id("api_keys"),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("allowed_models", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("rpm_limit", sa.Integer(), nullable=True),
        sa.Column("tpm_limit", sa.Integer(), nullable=True),
        _ts("expires_at", nullable=True),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        _ts("revoked_at", nullable=True),
        _ts("created_at"),
        sa.CheckConstraint(
            "rpm_limit IS NULL OR rpm_limit >= 0", name="ck_api_keys_rpm_nonnegative"
        ),
        sa.CheckConstraint(
            "tpm_limit IS NULL OR tpm_limit >= 0", name="ck_api_keys_tpm_nonnegative"
        ),
        _fk("api_keys", "user_id", "CASCADE"),
        sa.UniqueConstraint("digest", name="uq_api_keys_digest"),
        sa.UniqueConstraint("prefix", name="uq_api_keys_prefix"),
    )
    op.create_index("ix_api_keys_user_id", "api_keys", ["user_id"])
    op.create_table(
        "backends",
        *_id("backends"),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=True),
        _ts("created_at"),
        sa.UniqueConstraint("name", name="uq_backends_name"),
    )
    op.create_table(
        "usage",
        *_id("usage", big=True),
        sa.Column("request_id", sa.String(64), nullable=False),
        _ts("time"),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("key_prefix", sa.String(16), nullable=True),
        sa.Column("tenant", sa.String(128), nullable=True),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("backend", sa.String(128), nullable=True),
        sa.Column("dialect_in", sa.String(16), nullable=False),
        sa.Column("dialect_out", sa.String(16), nullable=True),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("tokens_estimated", sa.Boolean(), nullable=False),
        sa.Column("ttft_ms", sa.Float(), nullable=True),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("routing_reason", sa.String(256), nullable=True),
        _fk("usage", "user_id", "SET NULL"),
        sa.UniqueConstraint("request_id", name="uq_usage_request_id"),
    )
    op.create_index("ix_usage_time", "usage", ["time"])
    op.create_index("ix_usage_user_id_time", "usage", ["user_id", "time"])
    op.create_table(
        "quota_overrides",
        *_id("quota_overrides"),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_budget", sa.BigInteger(), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        _ts("updated_at"),
        sa.CheckConstraint(
            "token_budget IS NULL OR token_budget >= 0",
            name="ck_quota_overrides_budget_nonnegative",
        ),
        _fk("quota_overrides", "user_id", "CASCADE"),
        sa.UniqueConstraint("user_id", name="uq_quota_overrides_user_id"),
    )
    op.create_table(
        "quota_periods",
        *_id("quota_periods"),
        sa.Column("user_id", sa.Integer(), nullable=False),
        _ts("period_start"),
        _ts("period_end"),
        sa.Column("used", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("used >= 0", name="ck_quota_periods_used_nonnegative"),
        _fk("quota_periods", "user_id", "CASCADE"),
        sa.UniqueConstraint(
            "user_id", "period_start", name="uq_quota_periods_user_id_period_start"
        ),
    )
    op.create_table(
        "quota_requests",
        *_id("quota_requests"),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("decided_by", sa.Integer(), nullable=True),
        _ts("decided_at", nullable=True),
        _ts("created_at"),
        sa.CheckConstraint("amount > 0", name="ck_quota_requests_amount_positive"),
        sa.CheckConstraint(
            "status IN ('pending', 'approved', 'denied')", name="ck_quota_requests_status"
        ),
        _fk("quota_requests", "user_id", "CASCADE"),
        _fk("quota_requests", "decided_by", "SET NULL"),
    )
    op.create_index("ix_quota_requests_user_id", "quota_requests", ["user_id"])
    op.create_index(
        "ix_quota_requests_status_created_at", "quota_requests", ["status", "created_at"]
    )
    op.create_table(
        "audit_events",
        *_id("audit_events", big=True),
        _ts("time"),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(256), nullable=False),
        sa.Column("before", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("after", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("request_id", sa.String(64), nullable=True),
    )
    op.create_index("ix_audit_events_time", "audit_events", ["time"])
    op.create_index("ix_audit_events_actor_time", "audit_events", ["actor", "time"])
    op.create_index("ix_audit_events_action", "audit_events", ["action"])


def downgrade() -> None:
    for table in (
        "audit_events",
        "quota_requests",
        "quota_periods",
        "quota_overrides",
        "usage",
        "backends",
        "api_keys",
        "users",
        "groups",
    ):
        op.drop_table(table)  # their indexes go with them
