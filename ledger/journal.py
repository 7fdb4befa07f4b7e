"""The journal: an append-only, idempotent log of encoded events in one global order."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import msgspec
from sqlalchemy import BigInteger, LargeBinary, Select, Text, column, func, literal, select, table
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.database import dialect_insert, is_sqlite
from ledger.schema import journal

# Per-session scratch table for COPY; emptied at every commit, so a pooled connection reuses it.
_STAGING = table(
    "journal_staging",
    column("ord", BigInteger),
    column("event_id", Text),
    column("account_id", Text),
    column("kind", Text),
    column("ts_ns", BigInteger),
    column("payload", LargeBinary),
)
_STAGING_DDL = (
    "CREATE TEMP TABLE IF NOT EXISTS journal_staging (ord bigint, event_id text, "
    "account_id text, kind text, ts_ns bigint, payload bytea) ON COMMIT DELETE ROWS"
)
_STAGED_COLUMNS = ("ord", "event_id", "account_id", "kind", "ts_ns", "payload")
_COPIED_COLUMNS = ("event_id", "account_id", "kind", "ts_ns", "payload")


class JournalRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One encoded event to append; `kind` is the event's tag, `event_id` makes it idempotent."""

    event_id: str
    account_id: str | None
    kind: str
    ts_ns: int
    payload: bytes


class JournalEntry(JournalRecord, frozen=True, kw_only=True):
    """A record as stored: its place in the global order and when it was written."""

    seq: int
    recorded_ns: int


class Journal:
    """Append and read the journal on PostgreSQL (COPY) or SQLite (INSERT)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def append(self, records: Sequence[JournalRecord]) -> int:
        """Append records in order; return how many were new (known event ids are skipped)."""
        unique = _first_of_each_event_id(records)
        if not unique:
            return 0
        recorded_ns = time.time_ns()
        async with self._engine.begin() as conn:
            if is_sqlite(self._engine):
                return await self._insert(conn, unique, recorded_ns)
            return await self._copy(conn, unique, recorded_ns)

    async def read(
        self, *, account_id: str | None = None, after_seq: int = 0, limit: int = 10_000
    ) -> list[JournalEntry]:
        """Entries with `seq > after_seq` in seq order, optionally of one account only."""
        query = select(journal).where(journal.c.seq > after_seq)
        if account_id is not None:
            query = query.where(journal.c.account_id == account_id)
        query = query.order_by(journal.c.seq).limit(limit)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [_entry(row) for row in rows]

    async def has(self, event_ids: Sequence[str], chunk: int = 1_000) -> set[str]:
        """Which of `event_ids` the journal holds."""
        found: set[str] = set()
        ids = list(dict.fromkeys(event_ids))
        async with self._engine.connect() as conn:
            for start in range(0, len(ids), chunk):
                query = select(journal.c.event_id).where(
                    journal.c.event_id.in_(ids[start : start + chunk])
                )
                found.update((await conn.execute(query)).scalars())
        return found

    async def count(self, kind: str | None = None) -> int:
        """How many entries the journal holds, optionally of one kind."""
        query: Select[int] = select(func.count()).select_from(journal)
        if kind is not None:
            query = query.where(journal.c.kind == kind)
        return await self._scalar(query)

    async def max_seq(self) -> int:
        """The highest seq written so far, 0 when the journal is empty."""
        return await self._scalar(select(func.coalesce(func.max(journal.c.seq), 0)))

    async def _scalar(self, query: Select[int]) -> int:
        async with self._engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def _insert(
        self, conn: AsyncConnection, records: list[JournalRecord], recorded_ns: int
    ) -> int:
        rows = [_row(record, recorded_ns) for record in records]
        statement = dialect_insert(self._engine, journal).on_conflict_do_nothing(
            index_elements=[journal.c.event_id]
        )
        result = await conn.execute(statement, rows)
        return result.rowcount

    async def _copy(
        self, conn: AsyncConnection, records: list[JournalRecord], recorded_ns: int
    ) -> int:
        # Running the DDL through SQLAlchemy first also opens the transaction on the driver
        # connection, so the COPY below and the INSERT after it commit (or fail) together.
        await conn.exec_driver_sql(_STAGING_DDL)
        raw: Any = (await conn.get_raw_connection()).driver_connection
        await raw.copy_records_to_table(
            "journal_staging", records=_staged(records), columns=_STAGED_COLUMNS
        )
        result = await conn.execute(_insert_from_staging(self._engine, recorded_ns))
        return result.rowcount


def _first_of_each_event_id(records: Sequence[JournalRecord]) -> list[JournalRecord]:
    # A repeated id inside one batch is a retry too: keep its first occurrence only.
    seen: set[str] = set()
    unique: list[JournalRecord] = []
    for record in records:
        if record.event_id not in seen:
            seen.add(record.event_id)
            unique.append(record)
    return unique


def _staged(records: list[JournalRecord]) -> list[tuple[Any, ...]]:
    return [
        (ord_, r.event_id, r.account_id, r.kind, r.ts_ns, r.payload)
        for ord_, r in enumerate(records)
    ]


def _insert_from_staging(engine: AsyncEngine, recorded_ns: int) -> Any:
    staged = select(
        *(_STAGING.c[name] for name in _COPIED_COLUMNS),
        literal(recorded_ns, BigInteger).label("recorded_ns"),
    ).order_by(_STAGING.c.ord)
    return (
        dialect_insert(engine, journal)
        .from_select([*_COPIED_COLUMNS, "recorded_ns"], staged)
        .on_conflict_do_nothing(index_elements=[journal.c.event_id])
    )


def _row(record: JournalRecord, recorded_ns: int) -> dict[str, Any]:
    return {
        "event_id": record.event_id,
        "account_id": record.account_id,
        "kind": record.kind,
        "ts_ns": record.ts_ns,
        "recorded_ns": recorded_ns,
        "payload": record.payload,
    }


def _entry(row: Any) -> JournalEntry:
    return JournalEntry(
        seq=row["seq"],
        event_id=row["event_id"],
        account_id=row["account_id"],
        kind=row["kind"],
        ts_ns=row["ts_ns"],
        recorded_ns=row["recorded_ns"],
        payload=bytes(row["payload"]),
    )
