"""Reconciliation against the platform: an event the platform never delivered is found.
(That accounts which agree are left alone, through faults, is `test_faults.py`.)"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from actors.plans import DEFAULT_PLAN
from actors.reconcile import ReconcileConfig
from actors.runtime import Runtime, RuntimeConfig
from actors.supervisor import Health
from bridge.codec import encode_batch
from bridge.commands import OperateBalance
from bridge.connections import EmbeddedConnection
from bridge.events import BalanceKind
from bridge.platform import DONE, Faults, ServerConfig
from bridge.simulator import SimulatorConfig
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
