"""The audit trail: an append-only, hash-chained record of every state-changing call.

Each record's `hash` is the SHA-256 of the previous record's hash and its own fields, so changing,
removing or reordering any record breaks every hash after it (`verify`). One row, `audit_head`,
holds the chain's end; a writer updates it in the same transaction as its records, which
serialises writers and keeps the chain from forking. The chain cannot tell a truncated tail from
a shorter history by itself: `verify` reports the head hash so it can be kept elsewhere (a
ticket, a log shipper) and compared later.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import msgspec
from sqlalchemy import Select, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.schema import audit_head, audit_log

GENESIS = "0" * 64
"""What the first record chains to."""


class AuditRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One change: who (token name and role), what (`action` on a target), the target's state
    before and after (JSON values), and the request that made it."""

    actor: str
    role: str
    action: str
    target_type: str
    target_id: str
    trader_id: str | None = None
    before: Any = None
    after: Any = None
    request_id: str


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    """A record as stored, with its place in the chain."""

    seq: int
    ts_ns: int
    actor: str
    role: str
    action: str
    target_type: str
    target_id: str
    trader_id: str | None
    before: Any
    after: Any
    request_id: str
    prev_hash: str
    hash: str


class ChainReport(msgspec.Struct, frozen=True, kw_only=True):
    """What `verify` found: `ok`, how many records it checked, the head, and the first break."""

    ok: bool
    records: int
    head_seq: int
    head_hash: str
    broken_at: int | None = None
    problem: str | None = None


def canonical(value: Any) -> str | None:
    """The one JSON text a value is hashed as (keys sorted, no spaces); None stays None."""
    if value is None:
        return None
    return msgspec.json.encode(value, order="sorted").decode()


def chain_hash(prev_hash: str, seq: int, ts_ns: int, row: dict[str, Any]) -> str:
    """The hash of one record: its predecessor's hash, its place and time, and its fields as
    stored (`before` and `after` as their canonical JSON text)."""
    fields = [prev_hash, seq, ts_ns, *(row[name] for name in _HASHED)]
    return hashlib.sha256(msgspec.json.encode(fields)).hexdigest()


_HASHED = (
    "actor",
    "role",
    "action",
    "target_type",
    "target_id",
    "trader_id",
    "before",
    "after",
    "request_id",
)


async def append(conn: AsyncConnection, records: Sequence[AuditRecord]) -> list[int]:
    """Chain `records` onto the trail inside the caller's transaction; returns their seqs.

    The no-op UPDATE comes first: it takes the head row's lock (PostgreSQL) or the database's
    write lock (SQLite) before the head is read, so two writers never chain to the same record.
    """
    if not records:
        return []
    await conn.execute(update(audit_head).where(audit_head.c.id == 1).values(seq=audit_head.c.seq))
    head = (await conn.execute(select(audit_head.c.seq, audit_head.c.hash))).one()
    seq, prev = int(head.seq), str(head.hash)
    ts_ns = time.time_ns()
    rows = []
    for record in records:
        seq += 1
        row = _row(record)
        digest = chain_hash(prev, seq, ts_ns, row)
        rows.append({**row, "seq": seq, "ts_ns": ts_ns, "prev_hash": prev, "hash": digest})
        prev = digest
    await conn.execute(audit_log.insert(), rows)
    await conn.execute(update(audit_head).where(audit_head.c.id == 1).values(seq=seq, hash=prev))
    return [row["seq"] for row in rows]


def _row(record: AuditRecord) -> dict[str, Any]:
    fields = msgspec.structs.asdict(record)
    fields["before"] = canonical(record.before)
    fields["after"] = canonical(record.after)
    return fields


async def read(engine: AsyncEngine, query: Select[Any], limit: int) -> list[AuditEntry]:
    """Entries matching `query` (a select over `audit_log`), newest first, at most `limit`."""
    async with engine.connect() as conn:
        rows = (await conn.execute(query.order_by(audit_log.c.seq.desc()).limit(limit))).all()
    return [entry_of(row._mapping) for row in rows]


def entry_of(row: Any) -> AuditEntry:
    """An `audit_log` row as an entry, its JSON decoded."""
    values = dict(row)
    for name in ("before", "after"):
        values[name] = None if values[name] is None else msgspec.json.decode(values[name])
    return AuditEntry(**values)


async def verify(engine: AsyncEngine, chunk: int = 5_000) -> ChainReport:
    """Walk the whole chain in order and recompute every hash; the first break is reported."""
    prev, expected_seq, count = GENESIS, 1, 0
    async for row in _rows(engine, chunk):
        problem = _check(row, prev, expected_seq)
        if problem is not None:
            return await _report(engine, count, broken_at=int(row["seq"]), problem=problem)
        prev, expected_seq, count = row["hash"], expected_seq + 1, count + 1
    report = await _report(engine, count)
    if report.head_seq != count or report.head_hash != prev:
        problem = f"the head says seq {report.head_seq}, the chain ends at {count}"
        return msgspec.structs.replace(report, ok=False, broken_at=count + 1, problem=problem)
    return report


def _check(row: dict[str, Any], prev: str, expected_seq: int) -> str | None:
    seq = int(row["seq"])
    if seq != expected_seq:
        return f"record {expected_seq} is missing (found {seq})"
    if row["prev_hash"] != prev:
        return f"record {seq} does not chain to record {seq - 1}"
    if chain_hash(prev, seq, int(row["ts_ns"]), row) != row["hash"]:
        return f"record {seq} was changed after it was written"
    return None


async def _rows(engine: AsyncEngine, chunk: int) -> AsyncIterator[dict[str, Any]]:
    after = 0
    while True:
        query = select(audit_log).where(audit_log.c.seq > after).order_by(audit_log.c.seq)
        async with engine.connect() as conn:
            rows = (await conn.execute(query.limit(chunk))).mappings().all()
        for row in rows:
            yield dict(row)
        if len(rows) < chunk:
            return
        after = int(rows[-1]["seq"])


async def _report(engine: AsyncEngine, count: int, **broken: Any) -> ChainReport:
    async with engine.connect() as conn:
        head = (await conn.execute(select(audit_head.c.seq, audit_head.c.hash))).one()
    ok = not broken
    return ChainReport(
        ok=ok, records=count, head_seq=int(head.seq), head_hash=str(head.hash), **broken
    )
