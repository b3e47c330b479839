"""Consumer credentials encrypted at rest, and the check of the key they use.

The values are moved into ``consumers.credentials`` at the first start after this
migration (the key comes from the settings, which a migration does not see); see
``ConsumerStore.seal_plaintext``.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("consumers") as batch:
        batch.add_column(sa.Column("credentials", sa.Text, nullable=True))
    op.create_table(
        "key_check",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("token", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("key_check")
    with op.batch_alter_table("consumers") as batch:
        batch.drop_column("credentials")
