"""runs: an optional time limit per run, the current attempt's deadline, and since when
a queued run has been blocked at the front of the line

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import launchyard.server.tables

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch_op:
        batch_op.add_column(sa.Column("time_limit_s", sa.Float(), nullable=True))
        batch_op.add_column(
            sa.Column("deadline_at", launchyard.server.tables.UTCDateTime(), nullable=True)
        )
        batch_op.add_column(
            sa.Column("blocked_since", launchyard.server.tables.UTCDateTime(), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch_op:
        batch_op.drop_column("blocked_since")
        batch_op.drop_column("deadline_at")
        batch_op.drop_column("time_limit_s")
