"""Journal and account snapshots.

Revision ID: 0001
Revises:
Create Date: 2025-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# SQLite only autoincrements an INTEGER PRIMARY KEY (the rowid alias), never a BIGINT one.
_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create the append-only journal and the per-account snapshot table."""
    op.create_table(
        "journal",
        sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("account_id", sa.Text(), nullable=True),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("ts_ns", sa.BigInteger(), nullable=False),
        sa.Column("recorded_ns", sa.BigInteger(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.UniqueConstraint("event_id", name="uq_journal_event_id"),
    )
    op.create_index("ix_journal_account_id", "journal", ["account_id"])
    op.create_table(
        "account_snapshots",
        sa.Column("account_id", sa.Text(), primary_key=True),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("ts_ns", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.LargeBinary(), nullable=False),
        sa.Column("updated_ns", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    """Drop both tables."""
    op.drop_table("account_snapshots")
    op.drop_index("ix_journal_account_id", table_name="journal")
    op.drop_table("journal")
