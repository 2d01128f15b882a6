"""indexes for a queue's and a job's runs, newest first

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_runs_queue_seq", "runs", ["queue_id", "seq"])
    op.create_index("ix_runs_job_seq", "runs", ["job_id", "seq"])


def downgrade() -> None:
    op.drop_index("ix_runs_job_seq", table_name="runs")
    op.drop_index("ix_runs_queue_seq", table_name="runs")
