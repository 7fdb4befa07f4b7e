"""Tables of the ledger, as SQLAlchemy Core metadata (the migrations are the source of truth)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
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
