"""Subscription fields of a consumer: source, filter, format, ce_source, auth, reply, batch,
degraded_after, and the end of a rotated signing secret's grace period; the statistics
counters of filters and replies.

``auth`` holds the object as shown (secrets as ``***``); the object itself and the previous
signing secret are sealed in ``credentials``, next to the others.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


#: New counters of consumer_stats: messages a filter dropped or failed on, replies published.
STATS_COUNTERS = ("filtered", "filter_errors", "replies", "replies_unroutable")


def upgrade() -> None:
    with op.batch_alter_table("consumer_stats") as batch:
        for counter in STATS_COUNTERS:
            batch.add_column(sa.Column(counter, sa.BigInteger, nullable=False, server_default="0"))
    with op.batch_alter_table("consumers") as batch:
        batch.add_column(sa.Column("source", sa.JSON, nullable=True))
        batch.add_column(sa.Column("filter", sa.Text, nullable=True))
        batch.add_column(sa.Column("format", sa.String(32), nullable=False, server_default="raw"))
        batch.add_column(sa.Column("ce_source", sa.String(2048), nullable=True))
        batch.add_column(sa.Column("auth", sa.JSON, nullable=True))
        batch.add_column(sa.Column("reply", sa.Boolean, nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("batch", sa.JSON, nullable=True))
        batch.add_column(sa.Column("degraded_after", sa.Float, nullable=False, server_default="300"))
        batch.add_column(
            sa.Column("signing_secret_previous_until", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("consumer_stats") as batch:
        for counter in reversed(STATS_COUNTERS):
            batch.drop_column(counter)
    with op.batch_alter_table("consumers") as batch:
        for column in (
            "signing_secret_previous_until",
            "degraded_after",
            "batch",
            "reply",
            "auth",
            "ce_source",
            "format",
            "filter",
            "source",
        ):
            batch.drop_column(column)
