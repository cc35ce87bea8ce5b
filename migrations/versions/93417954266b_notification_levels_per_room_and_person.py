"""notification levels per room and person

Revision ID: 93417954266b
Revises: bfa462c0b250
Create Date: 2026-12-06 01:29:32.058656

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "93417954266b"
down_revision = "bfa462c0b250"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("memberships", sa.Column("notify", sa.String(length=16), nullable=True))


def downgrade():
    with op.batch_alter_table("memberships", schema=None) as batch_op:
        batch_op.drop_column("notify")
