"""The double-entry books: ledger accounts with their running totals, and immutable transfers.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the tables; on PostgreSQL, transfers refuse UPDATE and DELETE."""
    op.create_table(
        "ledger_accounts",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("debits_posted", sa.BigInteger(), nullable=False),
        sa.Column("credits_posted", sa.BigInteger(), nullable=False),
        sa.Column("debits_pending", sa.BigInteger(), nullable=False),
        sa.Column("credits_pending", sa.BigInteger(), nullable=False),
        sa.Column("created_ns", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "ledger_transfers",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("debit_account", sa.Text(), nullable=False),
        sa.Column("credit_account", sa.Text(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("pending_id", sa.Text(), nullable=True, unique=True),
        sa.Column("reference", sa.Text(), nullable=False),
        sa.Column("ts_ns", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_ledger_transfers_debit", "ledger_transfers", ["debit_account"])
    op.create_index("ix_ledger_transfers_credit", "ledger_transfers", ["credit_account"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_FORBID_CHANGES)
        op.execute(
            "CREATE TRIGGER ledger_transfers_append_only BEFORE UPDATE OR DELETE ON "
            "ledger_transfers FOR EACH ROW EXECUTE FUNCTION ledger_transfers_append_only()"
        )


_FORBID_CHANGES = """
CREATE FUNCTION ledger_transfers_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger_transfers is append-only';
END $$
"""


def downgrade() -> None:
    """Drop them."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER ledger_transfers_append_only ON ledger_transfers")
        op.execute("DROP FUNCTION ledger_transfers_append_only()")
    op.drop_index("ix_ledger_transfers_credit", "ledger_transfers")
    op.drop_index("ix_ledger_transfers_debit", "ledger_transfers")
    op.drop_table("ledger_transfers")
    op.drop_table("ledger_accounts")
