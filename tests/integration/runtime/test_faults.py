"""The same market twice, once over a clean connection and once over a faulty one: every account
must end the same.

The simulated server runs on a manual clock: the test moves its market two minutes on at once
(`run_for`), so both runs see the same deals, ticks and news whatever the faults do to their
timing. The faulty server answers 429 (its limit is below the bridge's), 503s, drops connections
after carrying a request out, hands events over twice and out of order, and adds latency; the
bridge must retry, dedupe and reorder nothing it should not, and apply every balance operation
once.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

from actors.plans import DEFAULT_PLAN
from actors.runtime import Runtime, RuntimeConfig
from actors.shard import AccountView
from bridge.circuit import BackoffConfig
from bridge.codec import encode_batch
from bridge.commands import OperateBalance
from bridge.connections import EmbeddedConnection
from bridge.events import BalanceKind
from bridge.platform import DONE, AccountState, Faults, ServerConfig
from bridge.simulator import NewsJump, SimulatorConfig, SimulatorReport
from bridge.worker import BridgeStats
from ledger.database import create_engine, upgrade
from ledger.journal import Journal
from tests.database import run_async, truncate_ledger

pytestmark = [pytest.mark.usefixtures("ray_session"), pytest.mark.postgres]

ACCOUNTS = [f"f-{i:02d}" for i in range(40)]
MARKET = SimulatorConfig(
    server="chaos",
    seed=11,
    ticks_per_second=4.0,
    trades_per_trader_per_minute=20.0,
    reckless_fraction=0.3,
    news=(NewsJump(at_s=50.0, symbol="EURUSD", move=-0.004),),
)
FAULTS = Faults(
    seed=5, latency_ms=(0.0, 2.0), unavailable=0.1, dropped=0.1, duplicated=0.2, reordered=0.2
)
# Quick retries: the test is about outcomes, not about waiting politely.
BACKOFF = BackoffConfig(base_s=0.005, max_s=0.05, threshold=5, open_for_s=0.1)
DEPOSITS = [
    OperateBalance(
        command_id=f"top-up:{a}", account_id=a, kind=BalanceKind.DEPOSIT, amount_cents=250_000
    )
    for a in ACCOUNTS[:8]
]


class Outcome(msgspec.Struct, kw_only=True):
    views: dict[str, AccountView]
    platform: dict[str, AccountState]
    report: SimulatorReport
    breached: list[str]
    frozen: list[str]
    journal: dict[str, list[tuple[str, str]]]  # account -> (kind, event id), confirmations apart
    bridge: BridgeStats


async def run(database_url: str, server: ServerConfig) -> Outcome:
    config = RuntimeConfig(
        database_url=database_url,
        shards=2,
        plan=DEFAULT_PLAN,
        connections=(
            EmbeddedConnection(
                name="chaos",
                simulator=MARKET,
                server=server,
                bridge={"backoff": BACKOFF, "retry_interval_s": 0.01, "request_timeout_s": 2.0},
            ),
        ),
    )
    runtime = Runtime(config)
    await runtime.start(ACCOUNTS)
    cell = runtime.cell()
    try:
        codes = await cell.worker.execute.remote(encode_batch(DEPOSITS))
        assert codes == [DONE] * len(DEPOSITS)
        assert await cell.server.run_for.remote(120.0) > 3_000
        assert await runtime.settle(120.0), "the run did not settle"
        reconciled = (await runtime.reconcile())["chaos"]  # through the faults too
        assert (reconciled.accounts, reconciled.errors, reconciled.mismatches) == (40, 0, [])
        views = {a: await runtime.account(a) for a in ACCOUNTS}
        # Asked through the bridge, faults and rate limit included.
        states = [cell.worker.account_state.remote(a) for a in ACCOUNTS]
        platform = dict(zip(ACCOUNTS, await asyncio.gather(*states), strict=True))
        outcome = Outcome(
            views={a: v for a, v in views.items() if v is not None},
            platform=platform,
            report=await runtime.simulator_report(),
            breached=await runtime.breached(),
            frozen=await runtime.frozen(),
            journal={},
            bridge=(await runtime.stats()).bridges[0],
        )
        await runtime.stop()
    finally:
        await runtime.close()
    engine = create_engine(database_url)
    try:
        journal = Journal(engine)
        for account_id in ACCOUNTS:
            rows = await journal.read(account_id=account_id)
            # A freeze retried after a lost answer is confirmed again, each time under a new
            # event id: the confirmations are compared as a set below, not one by one.
            outcome.journal[account_id] = [
                (r.kind, r.event_id) for r in rows if r.kind != "trading_disabled"
            ]
    finally:
        await engine.dispose()
    return outcome


def comparable(view: AccountView) -> dict[str, Any]:
    """Everything the account holds, but how many events it counted: a freeze confirmed twice
    (its answer was lost, so it was sent again) is one more event, and changes nothing else."""
    fields = msgspec.structs.asdict(view)
    del fields["version"]
    return fields


async def test_run_when_platform_faults_then_every_account_ends_as_in_a_clean_run(
    fresh_postgres_url: str, migrated_postgres_url: str
) -> None:
    await upgrade(fresh_postgres_url)
    clean = await run(fresh_postgres_url, ServerConfig(manual_clock=True))
    run_async(truncate_ledger(migrated_postgres_url))
    faulty = await run(
        migrated_postgres_url,
        ServerConfig(manual_clock=True, requests_per_second=10.0, burst=1, faults=FAULTS),
    )

    # The faults happened (else this test proves nothing).
    assert faulty.bridge.duplicates > 0
    assert faulty.bridge.rate_limited > 0
    assert faulty.bridge.command_failures > 0
    assert faulty.report.rate_limited > 0
    assert clean.bridge.duplicates == clean.bridge.command_failures == 0

    # The market was the same and it breached accounts, some of them by the news gap.
    assert faulty.report.deals == clean.report.deals > 1_000
    assert 3 <= len(clean.breached) < len(ACCOUNTS)

    # Every account ends the same, on our side and on the platform's.
    assert set(faulty.views) == set(clean.views) == set(ACCOUNTS)
    for account_id in ACCOUNTS:
        assert comparable(faulty.views[account_id]) == comparable(clean.views[account_id])
    assert faulty.platform == clean.platform
    assert faulty.journal == clean.journal
    assert (faulty.breached, faulty.frozen) == (clean.breached, clean.frozen)
    assert clean.breached == clean.frozen
    assert faulty.report.disabled == clean.report.disabled == clean.breached
    assert faulty.report.crossed == clean.report.crossed

    # The top-ups were carried out once each, though requests were lost and sent again.
    for command in DEPOSITS:
        kinds = [kind for kind, _ in faulty.journal[command.account_id]]
        assert kinds.count("balance") == 1, command.account_id
