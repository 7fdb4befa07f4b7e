"""The risk view's tables: alert rules (seeded with the defaults), raised alerts, and the economic
calendar.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import msgspec
import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the tables; seed the default alert rules."""
    from actors.alerts import DEFAULT_RULES

    rules = op.create_table(
        "alert_rules",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("severity", sa.Text(), nullable=False),
        sa.Column("enabled", sa.Integer(), nullable=False),
        sa.Column("condition", sa.Text(), nullable=False),
        sa.Column("created_ns", sa.BigInteger(), nullable=False),
        sa.Column("updated_ns", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "alerts",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("rule_id", sa.Text(), nullable=False),
        sa.Column("rule_name", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("severity", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("account_id", sa.Text(), nullable=True),
        sa.Column("trader_id", sa.Text(), nullable=True),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("raised_ns", sa.BigInteger(), nullable=False),
        sa.Column("acknowledged_ns", sa.BigInteger(), nullable=True),
        sa.Column("acknowledged_by", sa.Text(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
    )
    op.create_index("ix_alerts_raised", "alerts", ["raised_ns"])
    op.create_index("ix_alerts_account", "alerts", ["account_id", "raised_ns"])
    op.create_table(
        "calendar_events",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column("currency", sa.Text(), nullable=False),
        sa.Column("impact", sa.Text(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("ts_ns", sa.BigInteger(), nullable=False),
        sa.Column("created_ns", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("currency", "ts_ns", "title", name="uq_calendar_release"),
    )
    op.create_index("ix_calendar_ts", "calendar_events", ["ts_ns"])
    now = time.time_ns()
    op.bulk_insert(
        rules,
        [
            {
                "id": rule.id,
                "name": rule.name,
                "severity": rule.severity,
                "enabled": 1,
                "condition": msgspec.json.encode(rule.condition).decode(),
                "created_ns": now,
                "updated_ns": now,
            }
            for rule in DEFAULT_RULES
        ],
    )


def downgrade() -> None:
    """Drop them."""
    op.drop_table("calendar_events")
    op.drop_table("alerts")
    op.drop_table("alert_rules")
