"""Tables of the ledger, as SQLAlchemy Core metadata (the migrations are the source of truth)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# SQLite only autoincrements an INTEGER PRIMARY KEY (the rowid alias), never a BIGINT one.
_SeqType = BigInteger().with_variant(Integer, "sqlite")

journal = Table(
    "journal",
    metadata,
    Column("seq", _SeqType, primary_key=True, autoincrement=True),
    Column("event_id", Text, nullable=False),
    Column("account_id", Text, nullable=True),
    Column("kind", Text, nullable=False),
    Column("ts_ns", BigInteger, nullable=False),
    Column("recorded_ns", BigInteger, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    UniqueConstraint("event_id", name="uq_journal_event_id"),
    Index("ix_journal_account_id", "account_id"),
    Index("ix_journal_account_ts", "account_id", "ts_ns"),
)
"""Append-only log of encoded events: `seq` is the global order, `event_id` makes retries no-ops."""

account_snapshots = Table(
    "account_snapshots",
    metadata,
    Column("account_id", Text, primary_key=True),
    Column("version", BigInteger, nullable=False),
    Column("ts_ns", BigInteger, nullable=False),
    Column("state", LargeBinary, nullable=False),
    Column("updated_ns", BigInteger, nullable=False),
    Column("shard", Text, nullable=True),
    Index("ix_account_snapshots_shard", "shard"),
)
"""Latest encoded state per account; `version` counts its state changes; `shard` hosts it."""

shard_checkpoints = Table(
    "shard_checkpoints",
    metadata,
    Column("shard", Text, primary_key=True),
    Column("state", LargeBinary, nullable=False),
    Column("updated_ns", BigInteger, nullable=False),
)
"""Each shard's recovery point (encoded by the shard: price book, delivery cursors, freezes in
flight); written in the same transaction as the snapshots it goes with."""

ingest_inbox = Table(
    "ingest_inbox",
    metadata,
    Column("seq", _SeqType, primary_key=True, autoincrement=True),
    Column("connection", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("received_ns", BigInteger, nullable=False),
    UniqueConstraint("connection", "event_id", name="uq_ingest_inbox_event"),
)
"""Events a platform pushed to us, stored before we answer it; `seq` orders them for the bridge."""

ingest_cursors = Table(
    "ingest_cursors",
    metadata,
    Column("connection", Text, primary_key=True),
    Column("seq", BigInteger, nullable=False),
)
"""Per connection, the last inbox `seq` the bridge delivered to the shards."""

# -- the operators' side (admin API): who may act, what they did, and what they manage ----------

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("token_hash", Text, nullable=False),
    Column("created_ns", BigInteger, nullable=False),
    Column("revoked_ns", BigInteger, nullable=True),
    Column("scope", Text, nullable=True),  # `affiliate:<id>` for a partner's token
    UniqueConstraint("token_hash", name="uq_api_tokens_hash"),
)
"""Bearer tokens, stored only as their SHA-256; the token itself is shown once, at creation."""

audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", _SeqType, primary_key=True, autoincrement=False),
    Column("ts_ns", BigInteger, nullable=False),
    Column("actor", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("target_type", Text, nullable=False),
    Column("target_id", Text, nullable=False),
    Column("trader_id", Text, nullable=True),
    Column("before", Text, nullable=True),
    Column("after", Text, nullable=True),
    Column("request_id", Text, nullable=False),
    Column("prev_hash", Text, nullable=False),
    Column("hash", Text, nullable=False),
    Index("ix_audit_log_target", "target_type", "target_id"),
    Index("ix_audit_log_trader", "trader_id", "ts_ns"),
    Index("ix_audit_log_actor", "actor"),
)
"""Append-only record of every state-changing call; each row's `hash` covers the previous one's."""

audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("hash", Text, nullable=False),
)
"""One row: the chain's last `seq` and `hash`. Writers update it in their transaction, which
serialises them, so the chain never forks."""

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("principal", Text, primary_key=True),
    Column("key", Text, primary_key=True),
    Column("route", Text, nullable=False),
    Column("body_hash", Text, nullable=False),
    Column("status", Integer, nullable=True),
    Column("response", LargeBinary, nullable=True),
    Column("created_ns", BigInteger, nullable=False),
)
"""First answer per (token, `Idempotency-Key`); `status` is null while the first call runs."""

plans = Table(
    "plans",
    metadata,
    Column("plan_id", Text, primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("body", Text, nullable=False),
    Column("digest", Text, nullable=False),
    Column("created_ns", BigInteger, nullable=False),
    Column("created_by", Text, nullable=False),
)
"""Every version of every plan, as JSON; a version is never changed once written."""

traders = Table(
    "traders",
    metadata,
    Column("id", Text, primary_key=True),
    Column("email", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("country", Text, nullable=False),
    Column("language", Text, nullable=False),
    Column("timezone", Text, nullable=False),
    Column("source", Text, nullable=False),
    Column("campaign", Text, nullable=True),
    Column("affiliate_code", Text, nullable=True),
    Column("rep_id", Text, nullable=True),
    Column("created_ns", BigInteger, nullable=False),
    UniqueConstraint("email", name="uq_traders_email"),
    Index("ix_traders_rep", "rep_id", "created_ns"),
    Index("ix_traders_source", "source"),
)

sales_reps = Table(
    "sales_reps",
    metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("email", Text, nullable=False),
    Column("daily_capacity", Integer, nullable=False),
    Column("active", Integer, nullable=False),
    Column("created_ns", BigInteger, nullable=False),
)
"""Sales reps new traders are routed to; `daily_capacity` caps the leads a rep gets a UTC day."""

lead_rules = Table(
    "lead_rules",
    metadata,
    Column("id", Text, primary_key=True),
    Column("priority", Integer, nullable=False),
    Column("languages", Text, nullable=False),
    Column("timezones", Text, nullable=False),
    Column("rep_ids", Text, nullable=False),
    Column("turn", BigInteger, nullable=False),
    Column("created_ns", BigInteger, nullable=False),
)
"""Lead routing: the first rule (lowest `priority`) whose languages and time-zone prefixes match
a new trader picks among its reps round-robin (`turn` counts the leads it has placed)."""

purchases = Table(
    "purchases",
    metadata,
    Column("id", Text, primary_key=True),
    Column("trader_id", Text, nullable=False),
    Column("plan_id", Text, nullable=False),
    Column("plan_version", Integer, nullable=False),
    Column("payment_reference", Text, nullable=False),
    Column("amount_minor", BigInteger, nullable=False),
    Column("currency", Text, nullable=False),
    Column("country", Text, nullable=False),
    Column("account_id", Text, nullable=False),
    Column("created_ns", BigInteger, nullable=False),
    UniqueConstraint("payment_reference", name="uq_purchases_payment_reference"),
    Index("ix_purchases_trader", "trader_id"),
    Index("ix_purchases_country_time", "country", "created_ns"),
)
"""Challenge purchases (fees in minor units); `country` is the trader's at the time, for
jurisdiction reports."""

accounts = Table(
    "accounts",
    metadata,
    Column("id", Text, primary_key=True),
    Column("trader_id", Text, nullable=False),
    Column("purchase_id", Text, nullable=False),
    Column("plan_id", Text, nullable=False),
    Column("plan_version", Integer, nullable=False),
    Column("phase", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("connection", Text, nullable=False),
    Column("platform_login", Text, nullable=True),
    Column("failed_rule", Text, nullable=True),
    Column("reason", Text, nullable=True),
    Column("attempts", Integer, nullable=False),
    Column("previous_id", Text, nullable=True),
    Column("created_ns", BigInteger, nullable=False),
    Column("updated_ns", BigInteger, nullable=False),
    Index("ix_accounts_trader", "trader_id"),
    Index("ix_accounts_status", "status"),
    Index("ix_accounts_plan", "plan_id"),
)
"""The registry of sold accounts: which trader, plan version and phase, and where it stands
(`pending`, `active`, `provisioning_failed`, `frozen`, `failed`, `passed`)."""

followers = Table(
    "followers",
    metadata,
    Column("name", Text, primary_key=True),
    Column("seq", BigInteger, nullable=False),
)
"""Per reader of the journal (the registry follower), the last `seq` it has handled."""

# -- the risk view: alert rules, raised alerts, the economic calendar ------------------------------

alert_rules = Table(
    "alert_rules",
    metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("severity", Text, nullable=False),
    Column("enabled", Integer, nullable=False),
    Column("condition", Text, nullable=False),
    Column("created_ns", BigInteger, nullable=False),
    Column("updated_ns", BigInteger, nullable=False),
)
"""Risk alert rules (`actors/alerts.py`); `condition` is the rule's JSON condition."""

alerts = Table(
    "alerts",
    metadata,
    Column("id", Text, primary_key=True),
    Column("rule_id", Text, nullable=False),
    Column("rule_name", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("severity", Text, nullable=False),
    Column("key", Text, nullable=False),
    Column("account_id", Text, nullable=True),
    Column("trader_id", Text, nullable=True),
    Column("subject", Text, nullable=False),
    Column("message", Text, nullable=False),
    Column("value", Float, nullable=False),
    Column("threshold", Float, nullable=False),
    Column("raised_ns", BigInteger, nullable=False),
    Column("acknowledged_ns", BigInteger, nullable=True),
    Column("acknowledged_by", Text, nullable=True),
    Column("note", Text, nullable=True),
    Index("ix_alerts_raised", "raised_ns"),
    Index("ix_alerts_account", "account_id", "raised_ns"),
)
"""Alerts the risk hub raised, and who acknowledged each (also in the audit trail)."""

calendar_events = Table(
    "calendar_events",
    metadata,
    Column("id", Text, primary_key=True),
    Column("currency", Text, nullable=False),
    Column("impact", Text, nullable=False),
    Column("title", Text, nullable=False),
    Column("ts_ns", BigInteger, nullable=False),
    Column("created_ns", BigInteger, nullable=False),
    UniqueConstraint("currency", "ts_ns", "title", name="uq_calendar_release"),
    Index("ix_calendar_ts", "ts_ns"),
)
"""The economic calendar loaded through the API: releases by currency, impact and time."""

ledger_accounts = Table(
    "ledger_accounts",
    metadata,
    Column("id", Text, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("currency", Text, nullable=False),
    Column("name", Text, nullable=False),
    Column("debits_posted", BigInteger, nullable=False),
    Column("credits_posted", BigInteger, nullable=False),
    Column("debits_pending", BigInteger, nullable=False),
    Column("credits_pending", BigInteger, nullable=False),
    Column("created_ns", BigInteger, nullable=False),
)
"""The books' accounts, each with its running totals in minor units (derived from
`ledger_transfers`, and checked against them by `ledger.books.reconcile`)."""

ledger_transfers = Table(
    "ledger_transfers",
    metadata,
    Column("id", Text, primary_key=True),
    Column("kind", Text, nullable=False),
    Column("debit_account", Text, nullable=False),
    Column("credit_account", Text, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", Text, nullable=False),
    Column("pending_id", Text, nullable=True, unique=True),
    Column("reference", Text, nullable=False),
    Column("ts_ns", BigInteger, nullable=False),
    Index("ix_ledger_transfers_debit", "debit_account"),
    Index("ix_ledger_transfers_credit", "credit_account"),
)
"""Every transfer, immutable (append-only on PostgreSQL). `id` is the idempotency key. A
`pending` transfer is resolved by one `post_pending` or `void_pending` transfer naming it in
`pending_id` (unique, so never twice)."""

# -- payouts and the KYC tier they need ----------------------------------------------------------

payouts = Table(
    "payouts",
    metadata,
    Column("id", Text, primary_key=True),
    Column("request_key", Text, nullable=False),
    Column("trader_id", Text, nullable=False),
    Column("account_id", Text, nullable=False),
    Column("period", Integer, nullable=False),
    Column("currency", Text, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("gross", BigInteger, nullable=False),
    Column("split_pct", Float, nullable=False),
    Column("status", Text, nullable=False),
    Column("reasons", Text, nullable=False),
    Column("checks", Text, nullable=False),
    Column("destination", Text, nullable=False),
    Column("device", Text, nullable=False),
    Column("ip", Text, nullable=False),
    Column("country", Text, nullable=False),
    Column("rail", Text, nullable=True),
    Column("fee", BigInteger, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("provider_ref", Text, nullable=True),
    Column("reset", Integer, nullable=False),
    Column("created_ns", BigInteger, nullable=False),
    Column("updated_ns", BigInteger, nullable=False),
    UniqueConstraint("request_key", name="uq_payouts_request_key"),
    Index("ix_payouts_status", "status", "created_ns"),
    Index("ix_payouts_trader", "trader_id", "created_ns"),
    Index("ix_payouts_destination", "destination"),
    Index("ix_payouts_device", "device"),
    Index("ix_payouts_ip", "ip"),
)
"""Payout requests (`actors/payouts.py`): `request_key` is the caller's idempotency key; amounts
in minor units (`amount` to the trader, `gross` the profit it draws from the platform account,
`fee` the rail's); `checks` the checklist as JSON; `reasons` the failed checks; `reset` 1 once
the platform balance was reduced. At most one payout per account and `period` is not
`rejected` (a partial unique index, in the migration)."""

kyc_tiers = Table(
    "kyc_tiers",
    metadata,
    Column("trader_id", Text, primary_key=True),
    Column("tier", Text, nullable=False),
    Column("requested", Text, nullable=True),
    Column("updated_ns", BigInteger, nullable=False),
    Column("dob", Text, nullable=True),
    Column("country", Text, nullable=True),
    Column("requested_ns", BigInteger, nullable=True),
    Column("deadline_ns", BigInteger, nullable=True),
    Column("reminders_sent", Integer, nullable=True),
    Column("escalated_ns", BigInteger, nullable=True),
)
"""Each trader's KYC case (`ledger/kyc.py`): the verified tier (`none`, `light`, `full`,
`enhanced`), the tier asked for if an escalation is open with its deadline, reminders sent and
when it escalated, and the identity fields screened (date of birth, country)."""

kyc_hits = Table(
    "kyc_hits",
    metadata,
    Column("id", Text, primary_key=True),
    Column("trader_id", Text, nullable=False),
    Column("uid", Text, nullable=False),
    Column("list_name", Text, nullable=False),
    Column("listed_name", Text, nullable=False),
    Column("score", Float, nullable=False),
    Column("reasons", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("created_ns", BigInteger, nullable=False),
    Column("decided_ns", BigInteger, nullable=True),
    Column("decided_by", Text, nullable=True),
    Column("reason", Text, nullable=True),
    Index("ix_kyc_hits_trader", "trader_id"),
    Index("ix_kyc_hits_status", "status", "created_ns"),
)
"""Sanctions/PEP screening hits (`trader:uid`): open until compliance clears (a false match) or
confirms them; an open or confirmed hit counts as no verification (payouts held)."""

kyc_verifications = Table(
    "kyc_verifications",
    metadata,
    Column("provider_ref", Text, primary_key=True),
    Column("trader_id", Text, nullable=False),
    Column("tier", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("reason", Text, nullable=True),
    Column("occurred_ns", BigInteger, nullable=False),
    Column("updated_ns", BigInteger, nullable=False),
    Index("ix_kyc_verifications_trader", "trader_id"),
)
"""Document verifications at the provider: its reference, the tier verified, the latest outcome
by the provider's clock (`pending`, `approved`, `rejected`, `resubmission_requested`)."""

kyc_lists = Table(
    "kyc_lists",
    metadata,
    Column("id", _SeqType, primary_key=True, autoincrement=True),
    Column("loaded_ns", BigInteger, nullable=False),
    Column("entries", Integer, nullable=False),
    Column("digest", Text, nullable=False),
    Column("payload", LargeBinary, nullable=False),
)
"""Every sanctions/PEP list set the KYC supervisor loaded (msgpack of its entries, sha256
`digest`); the newest is the one in force, and a restarted supervisor screens against it."""

affiliates = Table(
    "affiliates",
    metadata,
    Column("id", Text, primary_key=True),
    Column("name", Text, nullable=False),
    Column("email", Text, nullable=False),
    Column("parent_id", Text, nullable=True),
    Column("plan_id", Text, nullable=False),
    Column("trader_id", Text, nullable=True),
    Column("payout_rail", Text, nullable=True),
    Column("payout_destination", Text, nullable=True),
    Column("status", Text, nullable=False),
    Column("created_ns", BigInteger, nullable=False),
    Column("updated_ns", BigInteger, nullable=False),
    Index("ix_affiliates_parent", "parent_id"),
)
"""Affiliates (partners): a commission plan, an optional parent (sub-affiliates earn it an
override), the affiliate's own trader record if it trades too, and where it is paid."""

affiliate_codes = Table(
    "affiliate_codes",
    metadata,
    Column("code", Text, primary_key=True),
    Column("affiliate_id", Text, nullable=False),
    Column("created_ns", BigInteger, nullable=False),
    Index("ix_affiliate_codes_affiliate", "affiliate_id"),
)
"""Referral codes (in links and at signup), each an affiliate's."""

commission_plans = Table(
    "commission_plans",
    metadata,
    Column("plan_id", Text, primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("body", Text, nullable=False),
    Column("effective_ns", BigInteger, nullable=False),
    Column("created_ns", BigInteger, nullable=False),
    Column("created_by", Text, nullable=False),
)
"""Every version of every commission plan (`actors/commissions.py: CommissionPlan`, JSON); a
purchase is commissioned under the version in force (the latest `effective_ns` at or before
it)."""

affiliate_touches = Table(
    "affiliate_touches",
    metadata,
    Column("id", _SeqType, primary_key=True, autoincrement=True),
    Column("trader_id", Text, nullable=False),
    Column("affiliate_id", Text, nullable=False),
    Column("code", Text, nullable=False),
    Column("ts_ns", BigInteger, nullable=False),
    Index("ix_affiliate_touches_trader", "trader_id", "ts_ns"),
)
"""Referral links a trader followed (the code given at signup counts as one too)."""

affiliate_attributions = Table(
    "affiliate_attributions",
    metadata,
    Column("trader_id", Text, primary_key=True),
    Column("affiliate_id", Text, nullable=True),
    Column("code", Text, nullable=True),
    Column("touched_ns", BigInteger, nullable=True),
    Column("excluded", Text, nullable=True),
    Column("decided_ns", BigInteger, nullable=False),
    Index("ix_affiliate_attributions_affiliate", "affiliate_id"),
)
"""Who referred a trader, decided at its first purchase (no affiliate: organic);
`excluded` names a fraud signal (the referral earns nothing)."""

sale_events = Table(
    "sale_events",
    metadata,
    Column("seq", _SeqType, primary_key=True, autoincrement=True),
    Column("event_id", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("purchase_id", Text, nullable=False),
    Column("trader_id", Text, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", Text, nullable=False),
    Column("reason", Text, nullable=True),
    Column("ts_ns", BigInteger, nullable=False),
    Column("recorded_ns", BigInteger, nullable=False),
    Column("accrued_ns", BigInteger, nullable=True),
    UniqueConstraint("event_id", name="uq_sale_events_event"),
    Index("ix_sale_events_purchase", "purchase_id"),
    Index("ix_sale_events_pending", "accrued_ns", "seq"),
)
"""Purchases, refunds and chargebacks of challenges, in the order recorded: what the
affiliate supervisor accrues commissions from (`event_id` makes a retry apply once;
`accrued_ns` is set in the batch that accrued it)."""

affiliate_lines = Table(
    "affiliate_lines",
    metadata,
    Column("id", Text, primary_key=True),
    Column("affiliate_id", Text, nullable=False),
    Column("trader_id", Text, nullable=False),
    Column("purchase_id", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("kind", Text, nullable=False),
    Column("level", Integer, nullable=False),
    Column("basis", BigInteger, nullable=False),
    Column("rate_bp", Integer, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", Text, nullable=False),
    Column("plan_id", Text, nullable=False),
    Column("plan_version", Integer, nullable=False),
    Column("reverses", Text, nullable=True),
    Column("ts_ns", BigInteger, nullable=False),
    Column("day", Text, nullable=False),
    Index("ix_affiliate_lines_affiliate_day", "affiliate_id", "day"),
    Index("ix_affiliate_lines_day", "day"),
    Index("ix_affiliate_lines_purchase", "purchase_id"),
)
"""Commission lines: earned (commission, cpa, override) positive, taken back (clawback)
negative, in minor units; `day` is the sale's UTC date."""

affiliate_volumes = Table(
    "affiliate_volumes",
    metadata,
    Column("affiliate_id", Text, primary_key=True),
    Column("month", Text, primary_key=True),
    Column("currency", Text, primary_key=True),
    Column("volume", BigInteger, nullable=False),
    Index("ix_affiliate_volumes_month", "month"),
)
"""Each affiliate's referred purchase volume by calendar month (UTC): what its tier is."""

affiliate_payouts = Table(
    "affiliate_payouts",
    metadata,
    Column("id", Text, primary_key=True),
    Column("run_id", Text, nullable=False),
    Column("affiliate_id", Text, nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", Text, nullable=False),
    Column("rail", Text, nullable=False),
    Column("destination", Text, nullable=False),
    Column("ts_ns", BigInteger, nullable=False),
    Column("day", Text, nullable=False),
    Index("ix_affiliate_payouts_affiliate_day", "affiliate_id", "day"),
    Index("ix_affiliate_payouts_run", "run_id"),
)
"""Weekly payouts to affiliates (`run:affiliate:currency`): each is a ledger transfer from the
affiliate's payable account to cash on its rail."""

affiliate_statements = Table(
    "affiliate_statements",
    metadata,
    Column("affiliate_id", Text, primary_key=True),
    Column("day", Text, primary_key=True),
    Column("currency", Text, primary_key=True),
    Column("opening", BigInteger, nullable=False),
    Column("earned", BigInteger, nullable=False),
    Column("clawed", BigInteger, nullable=False),
    Column("paid", BigInteger, nullable=False),
    Column("closing", BigInteger, nullable=False),
    Column("lines", Integer, nullable=False),
    Column("created_ns", BigInteger, nullable=False),
)
"""The daily statement run's output: each affiliate's day, opening to closing balance."""
