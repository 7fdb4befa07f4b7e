"""A real runtime (Ray, shards, bridge, the simulated platform) on PostgreSQL, a payout
supervisor actor over it, and the admin API serving both."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import ray
from sqlalchemy.ext.asyncio import AsyncEngine

from actors.payments import PayoutPolicy, ProviderConfig
from actors.payouts import PayoutConfig, start_payouts
from actors.reconcile import ReconcileConfig
from actors.runtime import Runtime, RuntimeConfig
from bridge.connections import EmbeddedConnection
from bridge.simulator import SimulatorConfig
from ledger.database import create_engine
from loadtests.funded import PLAN
from tests.api import Api, serve
from tests.database import run_async, truncate_ledger

FAST = PayoutConfig(
    policy=PayoutPolicy(retry_s=0.1),
    provider=ProviderConfig(min_latency_s=0.01, max_latency_s=0.1, failure_rate=0.0),
    recheck_s=0.2,
)


@pytest.fixture
async def engine(migrated_postgres_url: str) -> AsyncIterator[AsyncEngine]:
    run_async(truncate_ledger(migrated_postgres_url))
    engine = create_engine(migrated_postgres_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def runtime(migrated_postgres_url: str, engine: AsyncEngine) -> AsyncIterator[Runtime]:
    quiet = SimulatorConfig(server="pay", ticks_per_second=0.0, trades_per_trader_per_minute=0.0)
    config = RuntimeConfig(
        database_url=migrated_postgres_url,
        shards=2,
        plan=PLAN,
        connections=(EmbeddedConnection(name="pay", simulator=quiet),),
        reconcile=ReconcileConfig(end_of_day=False),
    )
    runtime = Runtime(config)
    await runtime.start()
    yield runtime
    await runtime.close()


def start_supervisor(url: str, runtime: Runtime, config: PayoutConfig = FAST) -> Any:
    return start_payouts(url, runtime, config)


@pytest.fixture
async def supervisor(migrated_postgres_url: str, runtime: Runtime) -> AsyncIterator[Any]:
    handle = start_supervisor(migrated_postgres_url, runtime)
    await handle.ready.remote()
    yield handle
    await handle.close.remote()
    ray.kill(handle)


@pytest.fixture
async def api(engine: AsyncEngine, runtime: Runtime, supervisor: Any) -> AsyncIterator[Api]:
    async with serve(engine, runtime, payouts=supervisor) as client:
        yield client
