"""The journal on both databases: round trips, idempotent appends, large COPY batches."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.journal import Journal, JournalEntry, JournalRecord


def _record(n: int, *, account_id: str | None = "acc-1", kind: str = "deal") -> JournalRecord:
    return JournalRecord(
        event_id=f"evt-{n}",
        account_id=account_id,
        kind=kind,
        ts_ns=1_700_000_000_000_000_000 + n,
        payload=bytes([n % 256, 0, 255]) + f"payload-{n}".encode(),
    )


def _as_records(entries: list[JournalEntry]) -> list[JournalRecord]:
    return [
        JournalRecord(
            event_id=e.event_id,
            account_id=e.account_id,
            kind=e.kind,
            ts_ns=e.ts_ns,
            payload=e.payload,
        )
        for e in entries
    ]


async def test_append_when_records_new_then_read_returns_them_in_order(engine: AsyncEngine) -> None:
    journal = Journal(engine)
    records = [_record(1), _record(2, account_id=None, kind="tick"), _record(3)]
    assert await journal.append(records) == 3
    entries = await journal.read()
    assert _as_records(entries) == records
    assert [e.seq for e in entries] == sorted(e.seq for e in entries)
    assert all(e.recorded_ns > 0 for e in entries)


async def test_append_when_payload_binary_then_bytes_round_trip(engine: AsyncEngine) -> None:
    journal = Journal(engine)
    payload = bytes(range(256)) * 4
    record = JournalRecord(event_id="bin", account_id="a", kind="deal", ts_ns=1, payload=payload)
    await journal.append([record])
    (entry,) = await journal.read()
    assert entry.payload == payload
    assert isinstance(entry.payload, bytes)


async def test_append_when_batch_repeated_then_nothing_inserted(engine: AsyncEngine) -> None:
    journal = Journal(engine)
    records = [_record(n) for n in range(10)]
    assert await journal.append(records) == 10
    assert await journal.append(records) == 0
    assert await journal.count() == 10


async def test_append_when_event_id_repeats_in_batch_then_row_inserted_once(
    engine: AsyncEngine,
) -> None:
    journal = Journal(engine)
    assert await journal.append([_record(1), _record(2), _record(1)]) == 2
    assert [e.event_id for e in await journal.read()] == ["evt-1", "evt-2"]


async def test_append_when_batch_partly_known_then_only_new_rows_inserted(
    engine: AsyncEngine,
) -> None:
    journal = Journal(engine)
    await journal.append([_record(1), _record(2)])
    assert await journal.append([_record(2), _record(3)]) == 1
    assert [e.event_id for e in await journal.read()] == ["evt-1", "evt-2", "evt-3"]


async def test_append_when_empty_then_zero(engine: AsyncEngine) -> None:
    journal = Journal(engine)
    assert await journal.append([]) == 0
    assert await journal.max_seq() == 0


async def test_read_when_filtered_then_account_after_seq_and_limit_apply(
    engine: AsyncEngine,
) -> None:
    journal = Journal(engine)
    await journal.append([_record(n, account_id=f"acc-{n % 2}") for n in range(10)])
    mine = await journal.read(account_id="acc-1")
    assert [e.event_id for e in mine] == [f"evt-{n}" for n in (1, 3, 5, 7, 9)]
    later = await journal.read(account_id="acc-1", after_seq=mine[1].seq, limit=2)
    assert [e.event_id for e in later] == ["evt-5", "evt-7"]


async def test_count_when_kind_given_then_only_that_kind(engine: AsyncEngine) -> None:
    journal = Journal(engine)
    await journal.append([_record(1), _record(2, kind="rule_breached"), _record(3)])
    assert await journal.count() == 3
    assert await journal.count("deal") == 2
    assert await journal.count("rule_breached") == 1
    assert await journal.count("absent") == 0


async def test_max_seq_when_appended_then_highest_seq(engine: AsyncEngine) -> None:
    journal = Journal(engine)
    await journal.append([_record(n) for n in range(5)])
    entries = await journal.read()
    assert await journal.max_seq() == entries[-1].seq


async def test_append_when_successive_batches_then_seq_keeps_growing(engine: AsyncEngine) -> None:
    journal = Journal(engine)
    await journal.append([_record(1), _record(2)])
    await journal.append([_record(3), _record(1)])
    seqs = [e.seq for e in await journal.read()]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == 3


@pytest.mark.parametrize("size", [20_000])
async def test_append_when_large_batch_then_every_record_lands(
    engine: AsyncEngine, size: int
) -> None:
    journal = Journal(engine)
    records = [_record(n, account_id=f"acc-{n % 100}") for n in range(size)]
    assert await journal.append(records) == size
    assert await journal.count() == size
    entries = await journal.read(limit=size)
    assert [e.event_id for e in entries] == [r.event_id for r in records]
    assert await journal.append(records[::2]) == 0
