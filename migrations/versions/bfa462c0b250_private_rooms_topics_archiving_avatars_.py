"""private rooms, topics, archiving, avatars, room invitation links

Revision ID: bfa462c0b250
Revises: a606f2d86f00
Create Date: 2026-12-06 00:31:53.887943

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "bfa462c0b250"
down_revision = "a606f2d86f00"
branch_labels = None
depends_on = None


def upgrade():
    # Plain ADD COLUMNs, never a batch copy of ``rooms``: on SQLite that would drop and recreate
    # the table that memberships and messages cascade from.
    op.add_column(
        "invitations",
        sa.Column("makes_accounts", sa.Boolean(), server_default=sa.true(), nullable=False),
    )
    op.add_column("rooms", sa.Column("created_by", sa.Integer(), nullable=True))
    op.add_column("rooms", sa.Column("topic", sa.Text(), server_default="", nullable=False))
    op.add_column("rooms", sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("users", sa.Column("avatar", sa.String(length=96), nullable=True))


def downgrade():
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("avatar")
    with op.batch_alter_table("rooms", schema=None) as batch_op:
        batch_op.drop_column("archived_at")
        batch_op.drop_column("topic")
        batch_op.drop_column("created_by")
    with op.batch_alter_table("invitations", schema=None) as batch_op:
        batch_op.drop_column("makes_accounts")
