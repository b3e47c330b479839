"""Each consumer's health: when its trouble started, whether it is degraded, and which
change was last notified (see ``workerrmq.store.health``).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "consumer_health",
        sa.Column(
            "consumer_id",
            sa.String(32),
            sa.ForeignKey("consumers.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("health", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(500), nullable=True),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("circuit_open_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_mark", sa.BigInteger, nullable=True),
        sa.Column("dead_letters", sa.BigInteger, nullable=False),
        sa.Column("dead_letters_grew_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("notified", sa.String(16), nullable=False),
        sa.Column("notify_claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("version", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("consumer_health")
