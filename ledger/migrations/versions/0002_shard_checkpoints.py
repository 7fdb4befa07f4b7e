"""Shard checkpoints: which shard a snapshot belongs to, and each shard's own recovery point.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add `account_snapshots.shard` (indexed) and the `shard_checkpoints` table."""
    with op.batch_alter_table("account_snapshots") as batch:
        batch.add_column(sa.Column("shard", sa.Text(), nullable=True))
    op.create_index("ix_account_snapshots_shard", "account_snapshots", ["shard"])
    op.create_table(
        "shard_checkpoints",
        sa.Column("shard", sa.Text(), primary_key=True),
        sa.Column("state", sa.LargeBinary(), nullable=False),
        sa.Column("updated_ns", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    """Drop the checkpoint table and the snapshot column."""
    op.drop_table("shard_checkpoints")
    op.drop_index("ix_account_snapshots_shard", table_name="account_snapshots")
    with op.batch_alter_table("account_snapshots") as batch:
        batch.drop_column("shard")
