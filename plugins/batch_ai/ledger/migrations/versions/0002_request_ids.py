"""Provider request ids, per attempt.

The request id of each attempt's answer on its audit row, and the latest on the record.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("batch_ai_records", sa.Column("provider_request_id", sa.String(200), nullable=True))
    op.add_column("batch_ai_audit", sa.Column("request_id", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("batch_ai_audit") as batch:
        batch.drop_column("request_id")
    with op.batch_alter_table("batch_ai_records") as batch:
        batch.drop_column("provider_request_id")
