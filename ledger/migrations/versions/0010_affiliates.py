"""Affiliates: partners and their referral codes, versioned commission plans, touches and
attributions, the sale events commissions accrue from (purchases backfilled), commission lines,
monthly referred volumes, weekly payouts and daily statements; and a scope on API tokens (a
partner's token sees only its own affiliate); the alert rule for an affiliate reconciliation
difference.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-25
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_RULE = "ar_affiliate_reconciliation"


def upgrade() -> None:
    op.create_table(
        "affiliates",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("email", sa.Text(), nullable=False),
        sa.Column("parent_id", sa.Text(), nullable=True),
        sa.Column("plan_id", sa.Text(), nullable=False),
        sa.Column("trader_id", sa.Text(), nullable=True),
        sa.Column("payout_rail", sa.Text(), nullable=True),
        sa.Column("payout_destination", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("created_ns", sa.BigInteger(), nullable=False),
        sa.Column("updated_ns", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_affiliates_parent", "affiliates", ["parent_id"])
    op.create_table(
        "affiliate_codes",
        sa.Column("code", sa.Text(), primary_key=True),
        sa.Column("affiliate_id", sa.Text(), nullable=False),
        sa.Column("created_ns", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_affiliate_codes_affiliate", "affiliate_codes", ["affiliate_id"])
    op.create_table(
        "commission_plans",
        sa.Column("plan_id", sa.Text(), primary_key=True),
        sa.Column("version", sa.Integer(), primary_key=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("effective_ns", sa.BigInteger(), nullable=False),
        sa.Column("created_ns", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
    )
    op.create_table(
        "affiliate_touches",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("trader_id", sa.Text(), nullable=False),
        sa.Column("affiliate_id", sa.Text(), nullable=False),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("ts_ns", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_affiliate_touches_trader", "affiliate_touches", ["trader_id", "ts_ns"])
    op.create_table(
        "affiliate_attributions",
        sa.Column("trader_id", sa.Text(), primary_key=True),
        sa.Column("affiliate_id", sa.Text(), nullable=True),
        sa.Column("code", sa.Text(), nullable=True),
        sa.Column("touched_ns", sa.BigInteger(), nullable=True),
        sa.Column("excluded", sa.Text(), nullable=True),
        sa.Column("decided_ns", sa.BigInteger(), nullable=False),
    )
    op.create_index(
        "ix_affiliate_attributions_affiliate", "affiliate_attributions", ["affiliate_id"]
    )
    op.create_table(
        "sale_events",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("purchase_id", sa.Text(), nullable=False),
        sa.Column("trader_id", sa.Text(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("ts_ns", sa.BigInteger(), nullable=False),
        sa.Column("recorded_ns", sa.BigInteger(), nullable=False),
        sa.Column("accrued_ns", sa.BigInteger(), nullable=True),
        sa.UniqueConstraint("event_id", name="uq_sale_events_event"),
    )
    op.create_index("ix_sale_events_pending", "sale_events", ["accrued_ns", "seq"])
    op.create_index("ix_sale_events_purchase", "sale_events", ["purchase_id"])
    op.create_table(
        "affiliate_lines",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("affiliate_id", sa.Text(), nullable=False),
        sa.Column("trader_id", sa.Text(), nullable=False),
        sa.Column("purchase_id", sa.Text(), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("basis", sa.BigInteger(), nullable=False),
        sa.Column("rate_bp", sa.Integer(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("plan_id", sa.Text(), nullable=False),
        sa.Column("plan_version", sa.Integer(), nullable=False),
        sa.Column("reverses", sa.Text(), nullable=True),
        sa.Column("ts_ns", sa.BigInteger(), nullable=False),
        sa.Column("day", sa.Text(), nullable=False),
    )
    op.create_index("ix_affiliate_lines_affiliate_day", "affiliate_lines", ["affiliate_id", "day"])
    op.create_index("ix_affiliate_lines_purchase", "affiliate_lines", ["purchase_id"])
    op.create_index("ix_affiliate_lines_day", "affiliate_lines", ["day"])
    op.create_table(
        "affiliate_volumes",
        sa.Column("affiliate_id", sa.Text(), primary_key=True),
        sa.Column("month", sa.Text(), primary_key=True),
        sa.Column("currency", sa.Text(), primary_key=True),
        sa.Column("volume", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_affiliate_volumes_month", "affiliate_volumes", ["month"])
    op.create_table(
        "affiliate_payouts",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("run_id", sa.Text(), nullable=False),
        sa.Column("affiliate_id", sa.Text(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("rail", sa.Text(), nullable=False),
        sa.Column("destination", sa.Text(), nullable=False),
        sa.Column("ts_ns", sa.BigInteger(), nullable=False),
        sa.Column("day", sa.Text(), nullable=False),
    )
    op.create_index(
        "ix_affiliate_payouts_affiliate_day", "affiliate_payouts", ["affiliate_id", "day"]
    )
    op.create_index("ix_affiliate_payouts_run", "affiliate_payouts", ["run_id"])
    op.create_table(
        "affiliate_statements",
        sa.Column("affiliate_id", sa.Text(), primary_key=True),
        sa.Column("day", sa.Text(), primary_key=True),
        sa.Column("currency", sa.Text(), primary_key=True),
        sa.Column("opening", sa.BigInteger(), nullable=False),
        sa.Column("earned", sa.BigInteger(), nullable=False),
        sa.Column("clawed", sa.BigInteger(), nullable=False),
        sa.Column("paid", sa.BigInteger(), nullable=False),
        sa.Column("closing", sa.BigInteger(), nullable=False),
        sa.Column("lines", sa.Integer(), nullable=False),
        sa.Column("created_ns", sa.BigInteger(), nullable=False),
    )
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("scope", sa.Text(), nullable=True))
    # The purchases made before: accrued like any other (an affiliate is credited only if the
    # trader was referred within the window before its first purchase).
    op.execute(
        "INSERT INTO sale_events (event_id, kind, purchase_id, trader_id, amount, currency, "
        "ts_ns, recorded_ns) SELECT 'purchase:' || id, 'purchase', id, trader_id, amount_minor, "
        "currency, created_ns, created_ns FROM purchases ORDER BY created_ns, id"
    )
    _seed_rule()


def _seed_rule() -> None:
    now = time.time_ns()
    rules = sa.table(
        "alert_rules",
        *(sa.column(name, sa.Text()) for name in ("id", "name", "severity", "condition")),
        sa.column("enabled", sa.Integer()),
        sa.column("created_ns", sa.BigInteger()),
        sa.column("updated_ns", sa.BigInteger()),
    )
    op.bulk_insert(
        rules,
        [
            {
                "id": _RULE,
                "name": "Affiliate commissions differ from the books",
                "severity": "critical",
                "enabled": 1,
                "condition": '{"type":"affiliate_reconciliation"}',
                "created_ns": now,
                "updated_ns": now,
            }
        ],
    )


def downgrade() -> None:
    op.execute(sa.text("DELETE FROM alert_rules WHERE id = :id").bindparams(id=_RULE))
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("scope")
    op.drop_table("affiliate_statements")
    op.drop_table("affiliate_payouts")
    op.drop_table("affiliate_volumes")
    op.drop_table("affiliate_lines")
    op.drop_table("sale_events")
    op.drop_table("affiliate_attributions")
    op.drop_table("affiliate_touches")
    op.drop_table("commission_plans")
    op.drop_table("affiliate_codes")
    op.drop_table("affiliates")
