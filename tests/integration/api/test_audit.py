"""The audit trail: `GET /api/v1/audit` (filters, pagination) and `GET /api/v1/audit/verify` on both
databases; tampering found by `verify`; the PostgreSQL trigger and concurrent writers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from api.auth import Role
from ledger import audit
from ledger.audit import AuditRecord
from ledger.database import create_engine, upgrade
from ledger.schema import audit_head, audit_log
from tests.api import Api, serve
from tests.database import truncate_ledger

HOUR_NS = 3_600 * 1_000_000_000
T0 = 1_735_689_600 * 1_000_000_000  # 2025-01-01T00:00:00Z
PLAN = {"id": "p1", "name": "Starter", "initial_balance": 100_000, "phases": [{"name": "one"}]}

RECORDS = [
    AuditRecord(actor="alice", role="risk", action="account.freeze", target_type="account",
                target_id="A1", trader_id="T1", before={"status": "active"},
                after={"status": "frozen", "reason": "hedging"}, request_id="req-1"),
    AuditRecord(actor="bob", role="operations", action="plan.version", target_type="plan",
                target_id="P1", after={"version": 1}, request_id="req-2"),
    AuditRecord(actor="alice", role="operations", action="trader.create", target_type="trader",
                target_id="T2", trader_id="T2", after={"email": "t2@example.com"},
                request_id="req-3"),
]  # fmt: skip


# ---- helpers ------------------------------------------------------------------------------


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The audit trail's clock, one hour per reading from 2025-01-01T00:00Z (the readings are
    kept, so a test knows each record's time)."""
    readings: list[int] = []

    def time_ns() -> int:
        readings.append(T0 + len(readings) * HOUR_NS)
        return readings[-1]

    monkeypatch.setattr(audit, "time", SimpleNamespace(time_ns=time_ns))
    return readings


async def append_each(engine: AsyncEngine, records: list[AuditRecord]) -> None:
    """Each record in its own transaction, as separate calls would write them."""
    for record in records:
        async with engine.begin() as conn:
            await audit.append(conn, [record])


def numbered(n: int) -> list[AuditRecord]:
    return [
        AuditRecord(actor="ops", role="operations", action="plan.version", target_type="plan",
                    target_id=f"P{i}", after={"i": i}, request_id=f"req-{i}")
        for i in range(1, n + 1)
    ]  # fmt: skip


async def seqs(api: Api, **params: str) -> list[int]:
    status, body = await api.call("GET", "/api/v1/audit", role=Role.COMPLIANCE, params=params)
    assert status == 200, body
    return [item["seq"] for item in body["items"]]


async def verify(api: Api) -> dict[str, Any]:
    status, body = await api.call("GET", "/api/v1/audit/verify", role=Role.RISK)
    assert status == 200, body
    assert isinstance(body, dict)
    return body


@pytest.fixture
async def sqlite_engine(sqlite_url: str) -> AsyncIterator[AsyncEngine]:
    await upgrade(sqlite_url)
    engine = create_engine(sqlite_url)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
async def pg_engine(migrated_postgres_url: str) -> AsyncIterator[AsyncEngine]:
    await truncate_ledger(migrated_postgres_url)
    engine = create_engine(migrated_postgres_url)
    try:
        yield engine
    finally:
        await engine.dispose()


# ---- listing ------------------------------------------------------------------------------


async def test_audit_when_records_appended_then_listed_newest_first_with_chain_and_values(
    engine: AsyncEngine, clock: list[int]
) -> None:
    await append_each(engine, RECORDS)

    async with serve(engine) as api:
        status, body = await api.call("GET", "/api/v1/audit", role=Role.COMPLIANCE)

    assert status == 200
    assert body["next_cursor"] is None
    newest, middle, first = body["items"]
    assert [newest["seq"], middle["seq"], first["seq"]] == [3, 2, 1]
    assert first == {
        "seq": 1,
        "ts": "2025-01-01T00:00:00Z",
        "ts_ns": T0,
        "actor": "alice",
        "role": "risk",
        "action": "account.freeze",
        "target_type": "account",
        "target_id": "A1",
        "trader_id": "T1",
        "before": {"status": "active"},
        "after": {"status": "frozen", "reason": "hedging"},
        "request_id": "req-1",
        "prev_hash": audit.GENESIS,
        "hash": first["hash"],
    }
    assert middle["before"] is None
    assert middle["trader_id"] is None
    assert newest["ts"] == "2025-01-01T02:00:00Z"
    assert (newest["prev_hash"], middle["prev_hash"]) == (middle["hash"], first["hash"])


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"actor": "alice"}, [3, 1]),
        ({"role": "operations"}, [3, 2]),
        ({"action": "plan.version"}, [2]),
        ({"target_type": "account", "target_id": "A1"}, [1]),
        ({"target_type": "trader"}, [3]),
        ({"trader_id": "T2"}, [3]),
        ({"request_id": "req-2"}, [2]),
        ({"actor": "alice", "role": "risk"}, [1]),
        ({"actor": "carol"}, []),
    ],
    ids=lambda value: ",".join(value) if isinstance(value, dict) else None,
)
async def test_audit_when_filtered_then_only_matching_records(
    engine: AsyncEngine, clock: list[int], params: dict[str, str], expected: list[int]
) -> None:
    await append_each(engine, RECORDS)

    async with serve(engine) as api:
        assert await seqs(api, **params) == expected


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"since": "2025-01-01T01:00:00Z"}, [3, 2]),
        ({"until": "2025-01-01T01:00:00Z"}, [1]),
        ({"since": "2025-01-01T00:30:00Z", "until": "2025-01-01T02:00:00Z"}, [2]),
        ({"since": "2025-01-01T02:00:00+01:00"}, [3, 2]),
        ({"since": "2025-01-01T01:00:00"}, [3, 2]),
        ({"since": "2025-01-01T01:00:00.000001Z"}, [3]),
        ({"since": "2025-01-01T02:00:00.000001Z"}, []),
        ({"until": "2025-01-01T00:00:00.000001Z", "actor": "alice"}, [1]),
        ({"since": "0001-01-01T00:00:00+05:00", "until": "9999-12-31T23:59:59Z"}, [3, 2, 1]),
    ],
    ids=[
        "since-inclusive",
        "until-exclusive",
        "window",
        "offset",
        "naive-is-utc",
        "since-just-after",
        "after-the-last",
        "with-actor",
        "extreme-years",
    ],
)
async def test_audit_when_time_window_given_then_since_inclusive_until_exclusive(
    engine: AsyncEngine, clock: list[int], params: dict[str, str], expected: list[int]
) -> None:
    await append_each(engine, RECORDS)

    async with serve(engine) as api:
        assert await seqs(api, **params) == expected


async def test_audit_when_paged_then_keyset_pages_are_stable_while_records_are_added(
    engine: AsyncEngine,
) -> None:
    await append_each(engine, numbered(5))

    async with serve(engine) as api:
        status, first = await api.call("GET", "/api/v1/audit", params={"limit": "2"})
        await append_each(engine, numbered(1))  # seq 6, newer than every page
        _, second = await api.call(
            "GET", "/api/v1/audit", params={"limit": "2", "cursor": first["next_cursor"]}
        )
        _, last = await api.call(
            "GET", "/api/v1/audit", params={"limit": "2", "cursor": second["next_cursor"]}
        )

    assert status == 200
    assert [i["seq"] for i in first["items"]] == [5, 4]
    assert [i["seq"] for i in second["items"]] == [3, 2]
    assert [i["seq"] for i in last["items"]] == [1]
    assert last["next_cursor"] is None


async def test_audit_when_paged_with_filter_then_cursor_keeps_to_the_filter(
    engine: AsyncEngine, clock: list[int]
) -> None:
    await append_each(engine, [*RECORDS, *RECORDS])  # alice at 1, 3, 4, 6

    async with serve(engine) as api:
        _, first = await api.call("GET", "/api/v1/audit", params={"actor": "alice", "limit": "3"})
        _, rest = await api.call(
            "GET",
            "/api/v1/audit",
            params={"actor": "alice", "limit": "3", "cursor": first["next_cursor"]},
        )

    assert [i["seq"] for i in first["items"]] == [6, 4, 3]
    assert [i["seq"] for i in rest["items"]] == [1]
    assert rest["next_cursor"] is None


async def test_audit_when_plans_posted_then_their_versions_are_recorded_with_request_and_state(
    engine: AsyncEngine,
) -> None:
    async with serve(engine) as api:
        created, _ = await api.call(
            "POST",
            "/api/v1/plans",
            role=Role.OPERATIONS,
            json=PLAN,
            headers={"X-Request-Id": "req-plan-1"},
        )
        changed, _ = await api.call(
            "POST", "/api/v1/plans", role=Role.ADMIN, json={**PLAN, "name": "Starter 2"}
        )
        _, by_request = await api.call(
            "GET", "/api/v1/audit", role=Role.RISK, params={"request_id": "req-plan-1"}
        )
        _, by_target = await api.call(
            "GET", "/api/v1/audit", params={"target_type": "plan", "target_id": "p1"}
        )

    assert (created, changed) == (201, 201)
    (record,) = by_request["items"]
    assert (record["actor"], record["role"], record["action"]) == (
        "operations",
        "operations",
        "plan.version",
    )
    assert (record["target_type"], record["target_id"]) == ("plan", "p1")
    assert record["before"] is None
    assert record["after"]["version"] == 1
    second, first = by_target["items"]
    assert first == record
    assert (second["actor"], second["role"]) == ("admin", "admin")
    assert second["before"] == {"version": 1}
    assert second["after"]["version"] == 2


@pytest.mark.parametrize(
    ("params", "status", "field"),
    [
        ({"colour": "red"}, 422, "query.colour"),
        ({"role": "janitor"}, 422, "query.role"),
        ({"since": "yesterday"}, 422, "query.since"),
        ({"since": "2025-01-02T00:00:00Z", "until": "2025-01-01T00:00:00Z"}, 422, "query.until"),
        ({"actor": ""}, 422, "query.actor"),
        ({"target_id": "a\x00b"}, 422, "query.target_id"),
        ({"limit": "0"}, 422, "query.limit"),
        ({"cursor": "not-a-cursor"}, 400, "query.cursor"),
    ],
    ids=["unknown", "role", "since", "until-before-since", "empty", "nul", "limit", "cursor"],
)
async def test_audit_when_query_invalid_then_problem_names_the_field(
    engine: AsyncEngine, params: dict[str, str], status: int, field: str
) -> None:
    async with serve(engine) as api:
        got, body = await api.call("GET", "/api/v1/audit", params=params)

    assert got == status
    assert [error["field"] for error in body["errors"]] == [field]


@pytest.mark.parametrize("path", ["/api/v1/audit", "/api/v1/audit/verify"])
async def test_audit_when_role_lacks_audit_read_then_403_and_without_token_401(
    engine: AsyncEngine, path: str
) -> None:
    async with serve(engine) as api:
        allowed = [r for r in Role if (await api.call("GET", path, role=r))[0] == 200]
        anonymous, _ = await api.call("GET", path, role=None)
        support, body = await api.call("GET", path, role=Role.SUPPORT)

    assert allowed == [Role.ADMIN, Role.RISK, Role.COMPLIANCE]
    assert anonymous == 401
    assert support == 403
    assert "audit:read" in body["detail"]


# ---- verify -------------------------------------------------------------------------------


async def test_verify_when_chain_untouched_then_ok_with_the_newest_hash_as_head(
    engine: AsyncEngine,
) -> None:
    await append_each(engine, numbered(3))

    async with serve(engine) as api:
        report = await verify(api)
        _, page = await api.call("GET", "/api/v1/audit", params={"limit": "1"})

    assert report == {
        "ok": True,
        "records": 3,
        "head_seq": 3,
        "head_hash": page["items"][0]["hash"],
        "broken_at": None,
        "problem": None,
    }


async def test_verify_when_empty_then_ok_with_genesis_head(engine: AsyncEngine) -> None:
    async with serve(engine) as api:
        report = await verify(api)

    assert (report["ok"], report["records"], report["head_hash"]) == (True, 0, audit.GENESIS)


async def test_verify_when_a_rows_after_changed_on_sqlite_then_that_seq_is_reported(
    sqlite_engine: AsyncEngine,
) -> None:
    await append_each(sqlite_engine, numbered(4))
    async with sqlite_engine.begin() as conn:
        await conn.execute(update(audit_log).where(audit_log.c.seq == 2).values(after='{"i":200}'))

    async with serve(sqlite_engine) as api:
        report = await verify(api)

    assert report["ok"] is False
    assert report["broken_at"] == 2
    assert report["records"] == 1
    assert report["problem"] == "record 2 was changed after it was written"


async def test_verify_when_a_middle_row_deleted_on_sqlite_then_it_is_reported_missing(
    sqlite_engine: AsyncEngine,
) -> None:
    await append_each(sqlite_engine, numbered(4))
    async with sqlite_engine.begin() as conn:
        await conn.execute(delete(audit_log).where(audit_log.c.seq == 2))

    report = await audit.verify(sqlite_engine)

    assert (report.ok, report.broken_at) == (False, 3)
    assert report.problem == "record 2 is missing (found 3)"


async def test_verify_when_a_row_relinked_on_sqlite_then_the_break_in_the_chain_is_reported(
    sqlite_engine: AsyncEngine,
) -> None:
    await append_each(sqlite_engine, numbered(3))
    async with sqlite_engine.begin() as conn:
        await conn.execute(
            update(audit_log).where(audit_log.c.seq == 3).values(prev_hash=audit.GENESIS)
        )

    report = await audit.verify(sqlite_engine)

    assert (report.ok, report.broken_at) == (False, 3)
    assert report.problem == "record 3 does not chain to record 2"


async def test_verify_when_tail_deleted_but_head_kept_then_the_head_mismatch_is_reported(
    sqlite_engine: AsyncEngine,
) -> None:
    await append_each(sqlite_engine, numbered(4))
    async with sqlite_engine.begin() as conn:
        await conn.execute(delete(audit_log).where(audit_log.c.seq > 2))

    report = await audit.verify(sqlite_engine)

    assert (report.ok, report.records, report.broken_at) == (False, 2, 3)
    assert report.problem == "the head says seq 4, the chain ends at 2"


async def test_verify_when_tail_deleted_and_head_rewound_then_only_a_kept_head_shows_it(
    sqlite_engine: AsyncEngine,
) -> None:
    await append_each(sqlite_engine, numbered(4))
    kept = await audit.verify(sqlite_engine)
    async with sqlite_engine.begin() as conn:
        second = (await conn.execute(select(audit_log.c.hash).where(audit_log.c.seq == 2))).one()
        await conn.execute(delete(audit_log).where(audit_log.c.seq > 2))
        await conn.execute(update(audit_head).values(seq=2, hash=second.hash))

    report = await audit.verify(sqlite_engine)

    assert report.ok  # the documented limit: the chain alone cannot tell
    assert (report.head_seq, report.head_hash) != (kept.head_seq, kept.head_hash)


# ---- PostgreSQL: the trigger and concurrent writers ------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_log SET after = '{\"i\": 200}' WHERE seq = 2",
        "DELETE FROM audit_log WHERE seq = 2",
    ],
    ids=["update", "delete"],
)
async def test_postgres_when_audit_row_updated_or_deleted_then_trigger_refuses(
    pg_engine: AsyncEngine, statement: str
) -> None:
    await append_each(pg_engine, numbered(3))

    with pytest.raises(DBAPIError, match="audit_log is append-only"):
        async with pg_engine.begin() as conn:
            await conn.execute(text(statement))

    assert (await audit.verify(pg_engine)).ok


@pytest.mark.postgres
async def test_postgres_when_trigger_disabled_and_row_changed_then_verify_reports_that_seq(
    pg_engine: AsyncEngine,
) -> None:
    await append_each(pg_engine, numbered(4))

    # One transaction: no other connection ever sees the trigger disabled, and it is back on
    # whatever happens (a failure rolls the ALTERs back too).
    async with pg_engine.begin() as conn:
        await conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only"))
        await conn.execute(update(audit_log).where(audit_log.c.seq == 3).values(after='{"i":300}'))
        await conn.execute(text("ALTER TABLE audit_log ENABLE TRIGGER audit_log_append_only"))

    report = await audit.verify(pg_engine)

    assert (report.ok, report.broken_at, report.records) == (False, 3, 2)
    assert report.problem == "record 3 was changed after it was written"
    with pytest.raises(DBAPIError, match="audit_log is append-only"):
        async with pg_engine.begin() as conn:
            await conn.execute(text("DELETE FROM audit_log WHERE seq = 3"))


@pytest.mark.postgres
async def test_postgres_when_twenty_connections_append_at_once_then_chain_of_twenty_is_intact(
    migrated_postgres_url: str,
) -> None:
    await truncate_ledger(migrated_postgres_url)
    writers = 20
    engine = create_async_engine(migrated_postgres_url, pool_size=writers, max_overflow=0)
    ready = asyncio.Barrier(writers)

    async def write(record: AuditRecord) -> list[int]:
        async with engine.connect() as conn:  # its own connection, opened here
            await ready.wait()  # every connection open before any appends
            async with conn.begin():
                return await audit.append(conn, [record])

    try:
        written = await asyncio.gather(*(write(r) for r in numbered(writers)))
        report = await audit.verify(engine)
        entries = await audit.read(engine, select(audit_log), writers + 1)
    finally:
        await engine.dispose()

    assert sorted(seq for seqs in written for seq in seqs) == list(range(1, writers + 1))
    assert (report.ok, report.records, report.head_seq) == (True, writers, writers)
    assert sorted(e.target_id for e in entries) == sorted(f"P{i}" for i in range(1, 21))
