"""KYC cases: each tier asked for with its deadline, reminders and escalation, the identity
fields of the light tier, sanctions/PEP screening hits for compliance's review, and the
document verifications at the provider (its reference and latest outcome; never a document).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CASE_COLUMNS = (
    ("dob", sa.Text()),
    ("country", sa.Text()),
    ("requested_ns", sa.BigInteger()),
    ("deadline_ns", sa.BigInteger()),
    ("reminders_sent", sa.Integer()),
    ("escalated_ns", sa.BigInteger()),
)


def upgrade() -> None:
    with op.batch_alter_table("kyc_tiers") as batch:
        for name, kind in _CASE_COLUMNS:
            batch.add_column(sa.Column(name, kind, nullable=True))
    op.create_table(
        "kyc_hits",
        sa.Column("id", sa.Text(), primary_key=True),  # trader:list uid
        sa.Column("trader_id", sa.Text(), nullable=False),
        sa.Column("uid", sa.Text(), nullable=False),
        sa.Column("list_name", sa.Text(), nullable=False),
        sa.Column("listed_name", sa.Text(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("reasons", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),  # open, cleared, confirmed
        sa.Column("created_ns", sa.BigInteger(), nullable=False),
        sa.Column("decided_ns", sa.BigInteger(), nullable=True),
        sa.Column("decided_by", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
    )
    op.create_index("ix_kyc_hits_trader", "kyc_hits", ["trader_id"])
    op.create_index("ix_kyc_hits_status", "kyc_hits", ["status", "created_ns"])
    op.create_table(
        "kyc_verifications",
        sa.Column("provider_ref", sa.Text(), primary_key=True),
        sa.Column("trader_id", sa.Text(), nullable=False),
        sa.Column("tier", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("occurred_ns", sa.BigInteger(), nullable=False),
        sa.Column("updated_ns", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_kyc_verifications_trader", "kyc_verifications", ["trader_id"])


def downgrade() -> None:
    op.drop_table("kyc_verifications")
    op.drop_table("kyc_hits")
    with op.batch_alter_table("kyc_tiers") as batch:
        for name, _ in reversed(_CASE_COLUMNS):
            batch.drop_column(name)
