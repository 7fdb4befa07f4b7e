"""Payouts (one row per request, its checks and where it stands) and each trader's KYC tier.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the tables. One payout per account and period unless rejected: a partial
    unique index (PostgreSQL and SQLite both have them)."""
    op.create_table(
        "payouts",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("request_key", sa.Text(), nullable=False),
        sa.Column("trader_id", sa.Text(), nullable=False),
        sa.Column("account_id", sa.Text(), nullable=False),
        sa.Column("period", sa.Integer(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("gross", sa.BigInteger(), nullable=False),
        sa.Column("split_pct", sa.Float(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("reasons", sa.Text(), nullable=False),
        sa.Column("checks", sa.Text(), nullable=False),
        sa.Column("destination", sa.Text(), nullable=False),
        sa.Column("device", sa.Text(), nullable=False),
        sa.Column("ip", sa.Text(), nullable=False),
        sa.Column("country", sa.Text(), nullable=False),
        sa.Column("rail", sa.Text(), nullable=True),
        sa.Column("fee", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("provider_ref", sa.Text(), nullable=True),
        sa.Column("reset", sa.Integer(), nullable=False),
        sa.Column("created_ns", sa.BigInteger(), nullable=False),
        sa.Column("updated_ns", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("request_key", name="uq_payouts_request_key"),
    )
    op.create_index(
        "uq_payouts_account_period",
        "payouts",
        ["account_id", "period"],
        unique=True,
        postgresql_where=sa.text("status <> 'rejected'"),
        sqlite_where=sa.text("status <> 'rejected'"),
    )
    op.create_index("ix_payouts_status", "payouts", ["status", "created_ns"])
    op.create_index("ix_payouts_trader", "payouts", ["trader_id", "created_ns"])
    op.create_index("ix_payouts_destination", "payouts", ["destination"])
    op.create_index("ix_payouts_device", "payouts", ["device"])
    op.create_index("ix_payouts_ip", "payouts", ["ip"])
    op.create_table(
        "kyc_tiers",
        sa.Column("trader_id", sa.Text(), primary_key=True),
        sa.Column("tier", sa.Text(), nullable=False),
        sa.Column("requested", sa.Text(), nullable=True),
        sa.Column("updated_ns", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    """Drop them."""
    op.drop_table("kyc_tiers")
    for name in ("ix_payouts_ip", "ix_payouts_device", "ix_payouts_destination"):
        op.drop_index(name, "payouts")
    op.drop_index("ix_payouts_trader", "payouts")
    op.drop_index("ix_payouts_status", "payouts")
    op.drop_index("uq_payouts_account_period", "payouts")
    op.drop_table("payouts")
