"""The double-entry books on a migrated database (PostgreSQL and SQLite): transfers, idempotent
replays, two-phase transfers, refusals by reason, reconciliation, and concurrency."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.books import (
    Kind,
    LedgerAccount,
    LedgerError,
    balances,
    chart,
    open_accounts,
    post_pending,
    reconcile,
    transfer,
    void_pending,
)
from ledger.database import create_engine
from ledger.schema import ledger_accounts
from tests.database import run_async, truncate_ledger

CASH = "cash:card:USD"
FEES = "fees:revenue:USD"
PAYABLE = "payouts:payable:USD"
EXPENSE = "payouts:expense:USD"


async def opened(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await open_accounts(conn, chart("USD") + chart("EUR"))


async def refused(
    engine: AsyncEngine, code: str, call: Callable[[AsyncConnection], Awaitable[Any]]
) -> None:
    with pytest.raises(LedgerError) as caught:
        async with engine.begin() as conn:
            await call(conn)
    assert caught.value.code == code


async def test_a_fee_moves_cash_and_revenue_and_a_replay_changes_nothing(
    engine: AsyncEngine,
) -> None:
    await opened(engine)
    async with engine.begin() as conn:
        assert await transfer(conn, "fee-1", CASH, FEES, 9_900, reference="purchase p1") == (
            "created"
        )
    async with engine.begin() as conn:
        assert await transfer(conn, "fee-1", CASH, FEES, 9_900, reference="purchase p1") == (
            "exists"
        )
        found = await balances(conn, [CASH, FEES])
    assert found[CASH].posted == 9_900  # an asset: debits less credits
    assert found[FEES].posted == 9_900  # revenue: credits less debits
    await refused(engine, "id_conflict", lambda c: transfer(c, "fee-1", CASH, FEES, 1))


async def test_refusals_name_what_was_wrong_and_change_nothing(engine: AsyncEngine) -> None:
    await opened(engine)
    await refused(engine, "invalid_amount", lambda c: transfer(c, "t", CASH, FEES, 0))
    await refused(engine, "invalid_amount", lambda c: transfer(c, "t", CASH, FEES, 1.5))  # type: ignore[arg-type]
    await refused(engine, "same_account", lambda c: transfer(c, "t", CASH, CASH, 1))
    await refused(engine, "no_such_account", lambda c: transfer(c, "t", CASH, "nope", 1))
    await refused(
        engine, "currency_mismatch", lambda c: transfer(c, "t", CASH, "fees:revenue:EUR", 1)
    )
    await refused(engine, "invalid_id", lambda c: transfer(c, "", CASH, FEES, 1))
    async with engine.connect() as conn:
        report = await reconcile(conn)
    assert report.transfers == 0
    assert report.ok


async def test_a_pending_payout_posted_in_part_releases_the_rest_once(engine: AsyncEngine) -> None:
    await opened(engine)
    async with engine.begin() as conn:
        await transfer(conn, "accrue", EXPENSE, PAYABLE, 50_000)
        await transfer(conn, "send", PAYABLE, CASH, 50_000, pending=True)
        held = await balances(conn, [PAYABLE, CASH])
    assert held[PAYABLE].posted == 50_000
    assert held[PAYABLE].pending == -50_000  # what posting it would take off
    assert held[CASH].pending == -50_000
    async with engine.begin() as conn:
        assert await post_pending(conn, "settle", "send", 49_000) == "created"
    async with engine.begin() as conn:
        assert await post_pending(conn, "settle", "send", 49_000) == "exists"
        after = await balances(conn, [PAYABLE, CASH])
    assert after[PAYABLE].posted == 1_000
    assert after[PAYABLE].pending == 0
    assert after[CASH].posted == -49_000
    await refused(engine, "pending_resolved", lambda c: void_pending(c, "undo", "send"))
    await refused(engine, "pending_resolved", lambda c: post_pending(c, "again", "send"))
    await refused(engine, "no_such_pending", lambda c: post_pending(c, "x", "accrue"))
    async with engine.begin() as conn:
        await transfer(conn, "send-2", PAYABLE, CASH, 1_000, pending=True)
    await refused(engine, "invalid_amount", lambda c: post_pending(c, "x", "send-2", 1_001))
    async with engine.begin() as conn:
        assert await void_pending(conn, "failed", "send-2") == "created"
        report = await reconcile(conn)
    assert report.ok
    assert report.debits_posted == report.credits_posted == {"USD": 99_000, "EUR": 0}
    assert report.debits_pending == report.credits_pending == {"USD": 0, "EUR": 0}


async def test_reconcile_finds_a_running_total_that_drifted(engine: AsyncEngine) -> None:
    await opened(engine)
    async with engine.begin() as conn:
        await transfer(conn, "fee", CASH, FEES, 100)
        await conn.execute(
            update(ledger_accounts)
            .where(ledger_accounts.c.id == FEES)
            .values(credits_posted=ledger_accounts.c.credits_posted + 1)
        )
        report = await reconcile(conn)
    assert not report.ok
    assert [(m.account, m.total, m.kept, m.derived) for m in report.mismatches] == [
        (FEES, "credits_posted", 101, 100)
    ]


async def test_an_account_reopened_differently_is_refused(engine: AsyncEngine) -> None:
    await opened(engine)
    async with engine.begin() as conn:
        assert await open_accounts(conn, chart("USD")) == []  # already open: nothing to do
    wrong = [LedgerAccount(id=CASH, kind=Kind.ASSET, currency="EUR", name="Cash")]
    await refused(engine, "account_conflict", lambda c: open_accounts(c, wrong))


@pytest.mark.postgres
def test_transfers_are_append_only_and_one_id_applies_once_under_concurrency(
    migrated_postgres_url: str,
) -> None:
    run_async(truncate_ledger(migrated_postgres_url))
    run_async(_concurrently(migrated_postgres_url))


async def _concurrently(url: str) -> None:
    engine = create_engine(url)
    try:
        await opened(engine)

        async def once(n: int) -> str:
            async with engine.begin() as conn:
                return await transfer(conn, f"fee-{n % 5}", CASH, FEES, 1_000)

        outcomes = await asyncio.gather(*(once(n) for n in range(40)))
        assert outcomes.count("created") == 5
        assert outcomes.count("exists") == 35
        async with engine.begin() as conn:
            assert (await balances(conn, [CASH]))[CASH].posted == 5_000
            assert (await reconcile(conn)).ok
        with pytest.raises(DBAPIError, match="append-only"):
            async with engine.begin() as conn:
                await conn.execute(text("UPDATE ledger_transfers SET amount = 1"))
    finally:
        await engine.dispose()
