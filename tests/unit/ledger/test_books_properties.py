"""Property tests of the books (hypothesis): any sequence of transfers, pending transfers, posts,
voids and replays gives the outcome a plain model predicts, leaves debits equal to credits and
the running totals equal to what the transfers say, and a replay never changes a balance."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from ledger.books import (
    Balance,
    LedgerError,
    balances,
    chart,
    open_accounts,
    post_pending,
    reconcile,
    transfer,
    void_pending,
)
from ledger.schema import ledger_accounts, ledger_transfers

ACCOUNTS = [a.id for a in chart("USD")][:5]
IDS = [f"t{n}" for n in range(6)]  # few ids, so ids collide and replays happen
# Posts and voids mostly take their own ids (so one pending transfer meets several), sometimes
# a transfer's.
RESOLVING = [f"r{n}" for n in range(6)] + IDS[:2]

amounts = st.integers(min_value=1, max_value=500)
ops = st.one_of(
    st.tuples(
        st.just("transfer"),
        st.sampled_from(IDS),
        st.sampled_from(ACCOUNTS),
        st.sampled_from(ACCOUNTS),
        amounts,
        st.booleans(),
    ),
    st.tuples(
        st.just("post"), st.sampled_from(RESOLVING), st.sampled_from(IDS), st.none() | amounts
    ),
    st.tuples(st.just("void"), st.sampled_from(RESOLVING), st.sampled_from(IDS)),
    st.tuples(st.just("replay"), st.integers(min_value=0, max_value=200)),
)


@dataclass
class Model:
    """What the books should hold: each id's transfer, and which pending ones are resolved."""

    transfers: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    resolved: set[str] = field(default_factory=set)
    totals: dict[tuple[str, str], int] = field(default_factory=dict)

    def expect(self, op: tuple[Any, ...]) -> str:
        """The outcome ("created", "exists" or an error code), applying it if created."""
        if op[0] == "transfer":
            _, id, debit, credit, amount, pending = op
            if debit == credit:
                return "same_account"
            kind = "pending" if pending else "posted"
            wanted: tuple[Any, ...] = (kind, debit, credit, amount, None)
            side = "pending" if pending else "posted"
            changes = {(debit, f"debits_{side}"): amount, (credit, f"credits_{side}"): amount}
            return self._apply(id, wanted, changes)
        _, id, pending_id, *rest = op
        held = self.transfers.get(pending_id)
        if held is None or held[0] != "pending":
            return "no_such_pending"
        _, debit, credit, full, _ = held
        if op[0] == "post":
            amount = full if rest[0] is None else rest[0]
            if amount > full:
                return "invalid_amount"
            wanted = ("post_pending", debit, credit, amount, pending_id)
        else:
            amount = full
            wanted = ("void_pending", debit, credit, amount, pending_id)
        if id in self.transfers:
            return "exists" if self.transfers[id] == wanted else "id_conflict"
        if pending_id in self.resolved:
            return "pending_resolved"
        changes = {(debit, "debits_pending"): -full, (credit, "credits_pending"): -full}
        if op[0] == "post":
            changes |= {(debit, "debits_posted"): amount, (credit, "credits_posted"): amount}
        self.resolved.add(pending_id)
        return self._apply(id, wanted, changes)

    def _apply(self, id: str, wanted: tuple[Any, ...], changes: dict[tuple[str, str], int]) -> str:
        if id in self.transfers:
            return "exists" if self.transfers[id] == wanted else "id_conflict"
        self.transfers[id] = wanted
        for key, delta in changes.items():
            self.totals[key] = self.totals.get(key, 0) + delta
        return "created"


async def call(engine: AsyncEngine, op: tuple[Any, ...]) -> str:
    try:
        async with engine.begin() as conn:
            if op[0] == "transfer":
                _, id, debit, credit, amount, pending = op
                return await transfer(conn, id, debit, credit, amount, pending=pending)
            if op[0] == "post":
                return await post_pending(conn, op[1], op[2], op[3])
            return await void_pending(conn, op[1], op[2])
    except LedgerError as error:
        return error.code


async def books() -> AsyncEngine:
    engine = create_async_engine("sqlite+aiosqlite://", poolclass=StaticPool)
    async with engine.begin() as conn:
        await conn.run_sync(
            lambda sync: ledger_accounts.metadata.create_all(
                sync, tables=[ledger_accounts, ledger_transfers]
            )
        )
        await open_accounts(conn, chart("USD"))
    return engine


async def run(sequence: list[tuple[Any, ...]]) -> None:
    engine = await books()
    model = Model()
    applied: list[tuple[Any, ...]] = []  # the ops that were applied (created or existed)
    after: dict[str, Balance] = {}
    try:
        for op in sequence:
            replay = op[0] == "replay"
            if replay:
                if not applied:
                    continue
                op = applied[op[1] % len(applied)]
            async with engine.connect() as conn:
                before = await balances(conn)
            outcome = await call(engine, op)
            assert outcome == model.expect(op), op
            async with engine.connect() as conn:
                after = await balances(conn)
                report = await reconcile(conn)
            assert report.ok, report
            if replay:
                assert outcome == "exists", f"a replay of {op} was not recognised"
                assert after == before, f"a replay of {op} changed a balance"
            elif outcome in ("created", "exists"):
                applied.append(op)
        for account, balance in after.items():
            for name in ("debits_posted", "credits_posted", "debits_pending", "credits_pending"):
                assert getattr(balance, name) == model.totals.get((account, name), 0)
    finally:
        await engine.dispose()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, min_size=1, max_size=40))
def test_any_sequence_balances_and_replays_change_nothing(sequence: list[tuple[Any, ...]]) -> None:
    asyncio.run(run(sequence))
