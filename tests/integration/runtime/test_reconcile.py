"""Reconciliation against the platform: an event the platform never delivered is found.
(That accounts which agree are left alone, through faults, is `test_faults.py`.)"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from actors.plans import DEFAULT_PLAN
from actors.reconcile import ReconcileConfig
from actors.runtime import Runtime, RuntimeConfig
from actors.supervisor import Health
from bridge.codec import decode_messages, encode_batch
from bridge.commands import OperateBalance
from bridge.connections import EmbeddedConnection
from bridge.events import BalanceKind
from bridge.platform import DONE, Faults, ServerConfig
from bridge.simulator import SIM_EPOCH_NS, SimulatorConfig
from ledger.database import create_engine
from ledger.journal import Journal
from tests.conftest import eventually

pytestmark = pytest.mark.usefixtures("ray_session")

QUIET = SimulatorConfig(server="rec", ticks_per_second=0.0, trades_per_trader_per_minute=0.0)


@pytest.fixture
async def runtime(database_url: str) -> AsyncIterator[Runtime]:
    config = RuntimeConfig(
        database_url=database_url,
        shards=2,
        plan=DEFAULT_PLAN,
        connections=(
            # Every event the platform makes is lost on its way to us.
            EmbeddedConnection(
                name="rec", simulator=QUIET, server=ServerConfig(faults=Faults(lost=1.0))
            ),
        ),
        reconcile=ReconcileConfig(interval_s=3600.0, recheck_after_s=0.05),
    )
    runtime = Runtime(config)
    await runtime.start(["r-1", "r-2", "r-3"])
    yield runtime
    await runtime.close()


async def test_reconcile_when_a_deposit_event_was_lost_then_mismatch_journaled_and_reported(
    runtime: Runtime, database_url: str
) -> None:
    deposit = OperateBalance(
        command_id="dep-1", account_id="r-2", kind=BalanceKind.DEPOSIT, amount_cents=100_000
    )
    assert await runtime.cell().worker.execute.remote(encode_batch([deposit])) == [DONE]

    report = (await runtime.reconcile())["rec"]

    assert report.rechecked == 1
    [found] = report.mismatches
    assert found.account_id == "r-2"
    assert (found.balance, found.platform_balance) == (10_000_000, 10_100_000)
    assert found.detail == (
        "balance differs by +1000.00; equity differs by +1000.00 (tolerance 252.50)"
    )
    assert (await runtime.reconciliation())["rec"].differing == [found]
    engine = create_engine(database_url)
    try:
        kinds = [e.kind for e in await Journal(engine).read(account_id="r-2")]
    finally:
        await engine.dispose()
    assert kinds == ["reconciliation_mismatch"]

    async def reconciler() -> Health:
        return await runtime.health()

    health = await eventually(reconciler, lambda h: h.status == "degraded")
    [state] = [a for a in health.actors if a.kind == "reconciler"]
    assert (state.state, state.detail) == ("degraded", "1 account differs from the platform")


async def test_end_of_day_when_a_lost_withdrawal_crossed_a_limit_then_the_verdict_is_missed(
    runtime: Runtime, database_url: str
) -> None:
    cell = runtime.cell()
    # 10,000.00 out of 100,000.00 leaves each account flat at its static floor: a max loss.
    withdrawals = [
        OperateBalance(
            command_id=f"out-{a}", account_id=a, kind=BalanceKind.WITHDRAWAL, amount_cents=1_000_000
        )
        for a in ("r-1", "r-2")
    ]
    assert await cell.worker.execute.remote(encode_batch(withdrawals)) == [DONE, DONE]
    # The stream lost both; r-2's is delivered after all (as the platform's history has it).
    recorded = await cell.worker.history.remote("r-2", 0)
    await cell.worker.ingest.remote(recorded)
    await eventually(runtime.breached, lambda b: b == ["r-2"])

    async def journaled_r2() -> list[str]:
        engine = create_engine(database_url)
        try:
            return [e.event_id for e in await Journal(engine).read(account_id="r-2")]
        finally:
            await engine.dispose()

    [withdrawal_r2] = decode_messages(recorded)[0]
    await eventually(journaled_r2, lambda ids: withdrawal_r2.event_id in ids)

    until_ns = SIM_EPOCH_NS + 86_400 * 1_000_000_000
    report = (await runtime.end_of_day(until_ns))["rec"]

    assert (report.accounts, report.errors, report.unchecked, report.moving) == (3, 0, 0, 0)
    assert report.new_findings == 1
    assert report.verdicts == {"missed": 1, "confirmed": 1, "clean": 1}
    [finding] = report.findings
    assert finding.account_id == "r-1"
    assert finding.verdict == "missed"
    assert finding.proof is not None
    assert (finding.proof.rule, finding.proof.equity, finding.proof.floor) == (
        "max_loss",
        90_000.0,
        90_000.0,
    )
    assert finding.missing == [finding.proof.event_id]  # the withdrawal we never applied

    health = await eventually(runtime.health, lambda h: h.status == "degraded")
    [state] = [a for a in health.actors if a.kind == "reconciler"]
    assert state.detail == "1 verdict(s) not confirmed by the end-of-day replay"

    # Journaled once, however often it is found again; the health view shows only new ones.
    again = (await runtime.end_of_day(until_ns + 86_400 * 1_000_000_000))["rec"]
    assert (again.findings, again.new_findings) == (report.findings, 0)
    engine = create_engine(database_url)
    try:
        kinds = [e.kind for e in await Journal(engine).read(account_id="r-1")]
    finally:
        await engine.dispose()
    assert kinds == ["verdict_unconfirmed"]
    await eventually(runtime.health, lambda h: h.status == "ok")
