"""Statistics history: every few seconds one worker records each consumer's totals and
each queue's figures, kept 15 minutes (see ``workerrmq.store.history``).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stats_samples",
        sa.Column("at", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("step", sa.Float, nullable=False),
        sa.Column("worker", sa.String(64), nullable=False),
        sa.Column("consumers", sa.Text, nullable=False),
        sa.Column("queues", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("stats_samples")
