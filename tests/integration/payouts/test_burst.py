"""A Friday: 3,000 payout requests sent at once over HTTP (resubmissions with the same key,
two keys at once from the same account), the payout supervisor killed in the middle of one
run. Exactly one payout per key and per account's period, and the same decisions as the run
without the kill. How fast they are decided is measured by `python -m loadtests payouts`."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict

import pytest
import ray
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from actors.payments import PayoutPolicy, ProviderConfig
from actors.payouts import PayoutConfig
from actors.runtime import Runtime
from api.auth import Role
from ledger import books
from ledger.schema import payouts
from loadtests.funded import Answers, Burst, Trader, friday, seed
from tests.api import serve
from tests.conftest import eventually
from tests.integration.payouts.conftest import start_supervisor

pytestmark = [pytest.mark.usefixtures("ray_session"), pytest.mark.postgres]

BURST = Burst()  # 2,000 accounts, 500 keys resent, 500 accounts asked twice: 3,000 requests
ACCOUNTS, RESENT, TWICE = BURST.accounts, BURST.resent, BURST.twice
KILL_AFTER = 300  # answers before the supervisor is killed, in the second run

# Payments stay in flight for the whole test: the platform balances (and so the decisions of
# the second run) stay as seeded.
SLOW = PayoutConfig(
    policy=PayoutPolicy(retry_s=60.0),
    provider=ProviderConfig(min_latency_s=600.0, max_latency_s=600.0, failure_rate=0.0),
)


async def outcomes(engine: AsyncEngine) -> dict[str, Counter[str]]:
    """Per account, how many of its payouts were decided each way."""
    found: dict[str, Counter[str]] = defaultdict(Counter)
    async with engine.connect() as conn:
        for row in await conn.execute(select(payouts.c.account_id, payouts.c.status)):
            status = "approved" if row.status in ("approved", "sent") else row.status
            found[row.account_id][status] += 1
    return found


async def check_run(engine: AsyncEngine, answers: Answers) -> dict[str, Counter[str]]:
    answered = answers.by_key
    assert len(BURST.requests()) == 3_000
    assert len(answered) == ACCOUNTS + TWICE  # every key answered...
    assert all(len(ids) == 1 for ids in answered.values())  # ...always with the same payout
    assert answers.replayed >= RESENT  # of two requests under a key, one at most made it
    async with engine.connect() as conn:
        count = await conn.scalar(select(func.count()).select_from(payouts))
        report = await books.reconcile(conn)
    assert count == ACCOUNTS + TWICE  # one payout per key, none more
    assert report.ok, report
    found = await outcomes(engine)
    for index in range(ACCOUNTS):
        expected = (
            {"approved": 1, "rejected": 1} if RESENT <= index < RESENT + TWICE else {"approved": 1}
        )
        assert found[f"acc-b-{index}"] == expected, (index, found[f"acc-b-{index}"])
    return found


async def test_a_friday_burst_pays_once_per_key_and_period_and_survives_a_kill(
    engine: AsyncEngine, runtime: Runtime, migrated_postgres_url: str
) -> None:
    await seed(
        engine,
        runtime,
        [Trader(trader_id=f"b-{i}", account_id=f"acc-b-{i}") for i in range(ACCOUNTS)],
    )
    await wait_until_traded(runtime)
    supervisor = start_supervisor(migrated_postgres_url, runtime, SLOW)
    async with serve(engine, runtime, payouts=supervisor) as api:
        quiet = await friday(api.url, api.tokens[Role.OPERATIONS], BURST, "calm")
    without_kill = await check_run(engine, quiet)
    assert quiet.replayed == RESENT  # and only the second of a key is marked a replay
    await supervisor.close.remote()
    ray.kill(supervisor, no_restart=True)

    # Again from scratch, the supervisor killed once 300 requests were answered.
    async with engine.begin() as conn:
        await conn.execute(text("TRUNCATE payouts, ledger_transfers, ledger_accounts"))
    supervisor = start_supervisor(migrated_postgres_url, runtime, SLOW)
    pid = (await supervisor.ping.remote()).pid
    async with serve(engine, runtime, payouts=supervisor) as api:
        token = api.tokens[Role.OPERATIONS]
        killed = await friday(api.url, token, BURST, "kill", kill=supervisor, kill_after=KILL_AFTER)
    assert KILL_AFTER <= killed.at_kill < len(BURST.requests())  # killed mid-burst
    assert (await supervisor.ping.remote()).pid != pid  # and restarted by Ray
    assert await check_run(engine, killed) == without_kill
    await supervisor.close.remote()
    ray.kill(supervisor)


async def wait_until_traded(runtime: Runtime) -> None:
    """Until every account's injected trades reached its shard."""

    async def balances() -> list[int]:
        found = await asyncio.gather(*(s.money.remote() for s in runtime.shards))
        return [m.balance for part in found for m in part.values()]

    await eventually(
        balances, lambda b: len(b) == ACCOUNTS and set(b) == {1_090_000}, timeout_s=60.0
    )
