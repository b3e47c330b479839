"""The attempt log: one row per delivery attempt, written by the workers in batches.

No foreign key to ``consumers``: a batch written after its consumer was deleted must
not fail, and the rows age out like the others.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "attempts",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
        ),
        sa.Column("consumer_id", sa.String(32), nullable=False),
        sa.Column("consumer", sa.String(200), nullable=False),
        sa.Column("message_id", sa.String(255), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("duration_ms", sa.Float, nullable=False),
        sa.Column("status", sa.Integer, nullable=True),
        sa.Column("error", sa.String(64), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("response", sa.Text, nullable=True),
        sa.Column("worker", sa.String(64), nullable=False),
    )
    op.create_index("ix_attempts_consumer_at", "attempts", ["consumer_id", "at"])
    op.create_index("ix_attempts_message_id", "attempts", ["message_id"])
    op.create_index("ix_attempts_at", "attempts", ["at"])


def downgrade() -> None:
    op.drop_table("attempts")
