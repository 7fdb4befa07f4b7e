"""Push ingestion: the inbox of pushed events and each connection's delivery cursor.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create `ingest_inbox` (unique per connection and event id) and `ingest_cursors`."""
    op.create_table(
        "ingest_inbox",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("connection", sa.Text(), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("received_ns", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("connection", "event_id", name="uq_ingest_inbox_event"),
    )
    op.create_table(
        "ingest_cursors",
        sa.Column("connection", sa.Text(), primary_key=True),
        sa.Column("seq", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    """Drop both tables."""
    op.drop_table("ingest_cursors")
    op.drop_table("ingest_inbox")
