"""Consumers and their per-worker statistics.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "consumers",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("queue", sa.String(255), nullable=False, index=True),
        sa.Column("target_url", sa.String(2048), nullable=False),
        sa.Column("method", sa.String(8), nullable=False),
        sa.Column("headers", sa.JSON, nullable=False),
        sa.Column("timeout", sa.Float, nullable=False),
        sa.Column("concurrency", sa.Integer, nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("initial_delay", sa.Float, nullable=False),
        sa.Column("max_delay", sa.Float, nullable=False),
        sa.Column("retry_on", sa.JSON, nullable=False),
        sa.Column("signing_secret", sa.String(255), nullable=True),
        sa.Column("rate_limit", sa.Float, nullable=True),
        sa.Column("ordered", sa.Boolean, nullable=False),
        sa.Column("circuit_threshold", sa.Integer, nullable=False),
        sa.Column("circuit_cooldown", sa.Float, nullable=False),
        sa.Column("dead_letter_queue", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "consumer_stats",
        sa.Column("worker_id", sa.String(64), primary_key=True),
        sa.Column(
            "consumer_id",
            sa.String(32),
            sa.ForeignKey("consumers.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("delivered", sa.BigInteger, nullable=False),
        sa.Column("failed", sa.BigInteger, nullable=False),
        sa.Column("retried", sa.BigInteger, nullable=False),
        sa.Column("dead_lettered", sa.BigInteger, nullable=False),
        sa.Column("in_flight", sa.BigInteger, nullable=False),
        sa.Column("circuit", sa.String(16), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("last_error_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("latency_p50_ms", sa.Float, nullable=True),
        sa.Column("latency_p99_ms", sa.Float, nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("consumer_stats")
    op.drop_table("consumers")
