"""The sanctions and PEP lists in force, kept so a restarted KYC supervisor screens against the
lists it last loaded (and an audit can tell which lists a screening used); and the default
alert rule for a KYC case past its deadline.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_RULE = "ar_kyc_overdue"


def upgrade() -> None:
    op.create_table(
        "kyc_lists",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("loaded_ns", sa.BigInteger(), nullable=False),
        sa.Column("entries", sa.Integer(), nullable=False),
        sa.Column("digest", sa.Text(), nullable=False),  # sha256 of `payload`
        sa.Column("payload", sa.LargeBinary(), nullable=False),  # msgpack list of ListEntry
    )
    now = time.time_ns()
    rules = sa.table(
        "alert_rules",
        sa.column("id", sa.Text()),
        sa.column("name", sa.Text()),
        sa.column("severity", sa.Text()),
        sa.column("enabled", sa.Integer()),
        sa.column("condition", sa.Text()),
        sa.column("created_ns", sa.BigInteger()),
        sa.column("updated_ns", sa.BigInteger()),
    )
    op.bulk_insert(
        rules,
        [
            {
                "id": _RULE,
                "name": "KYC not verified by its deadline",
                "severity": "warning",
                "enabled": 1,
                "condition": '{"type":"kyc_overdue"}',
                "created_ns": now,
                "updated_ns": now,
            }
        ],
    )


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM alert_rules WHERE id = :id").bindparams(id=_RULE))
    op.drop_table("kyc_lists")
