"""The push-ingestion inbox: events a platform pushed, stored before the push is answered.

Each connection's events are numbered by `seq` in the order they were stored; the bridge reads
them in that order after its cursor. Writers of one connection are serialised (an advisory lock
on PostgreSQL, SQLite serialises writers anyway), so `seq` order is commit order and a reader
never passes a row that commits later with a smaller `seq`. An event id stored before is not
stored again: a platform's retry is answered as a duplicate and applied once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.database import dialect_insert, is_sqlite
from ledger.schema import ingest_cursors, ingest_inbox


class Inbox:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def accept(self, connection: str, events: Sequence[tuple[str, bytes]]) -> set[str]:
        """Store (event id, payload) pairs not stored before, in one transaction; returns the
        ids newly stored (the rest were duplicates). Durable when it returns."""
        if not events:
            return set()
        received_ns = time.time_ns()
        rows = [
            {"connection": connection, "event_id": event_id, "payload": payload,
             "received_ns": received_ns}
            for event_id, payload in events
        ]  # fmt: skip
        insert = (
            dialect_insert(self._engine, ingest_inbox)
            .on_conflict_do_nothing(index_elements=["connection", "event_id"])
            .returning(ingest_inbox.c.event_id)
        )
        async with self._engine.begin() as conn:
            if not is_sqlite(self._engine):
                await conn.execute(
                    text("SELECT pg_advisory_xact_lock(hashtext(:name))"),
                    {"name": f"ingest_inbox:{connection}"},
                )
            result = await conn.execute(insert, rows)
            return {row[0] for row in result}

    async def read(self, connection: str, after_seq: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to `limit` (seq, payload) of `connection` after `after_seq`, in seq order."""
        query = (
            select(ingest_inbox.c.seq, ingest_inbox.c.payload)
            .where(ingest_inbox.c.connection == connection, ingest_inbox.c.seq > after_seq)
            .order_by(ingest_inbox.c.seq)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            return [(row.seq, bytes(row.payload)) for row in await conn.execute(query)]

    async def cursor(self, connection: str) -> int:
        """The last seq the bridge delivered for `connection` (0: none yet)."""
        query = select(ingest_cursors.c.seq).where(ingest_cursors.c.connection == connection)
        async with self._engine.connect() as conn:
            found = (await conn.execute(query)).scalar_one_or_none()
        return 0 if found is None else int(found)

    async def advance(self, connection: str, seq: int) -> None:
        """Record that everything up to `seq` was delivered; a cursor never moves back."""
        insert = dialect_insert(self._engine, ingest_cursors).values(connection=connection, seq=seq)
        upsert = insert.on_conflict_do_update(
            index_elements=[ingest_cursors.c.connection],
            set_={"seq": func.max(ingest_cursors.c.seq, insert.excluded.seq)}
            if is_sqlite(self._engine)
            else {"seq": func.greatest(ingest_cursors.c.seq, insert.excluded.seq)},
        )
        async with self._engine.begin() as conn:
            await conn.execute(upsert)

    async def head(self, connection: str) -> int:
        """The last seq stored for `connection` (0: none); `head - cursor` is the bridge's lag.
        Sequence numbers have gaps (a duplicate still draws one on PostgreSQL)."""
        query = select(func.coalesce(func.max(ingest_inbox.c.seq), 0)).where(
            ingest_inbox.c.connection == connection
        )
        async with self._engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def count(self, connection: str) -> int:
        query = select(func.count()).where(ingest_inbox.c.connection == connection)
        async with self._engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())
