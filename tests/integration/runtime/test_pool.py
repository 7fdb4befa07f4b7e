"""The bridge pool: several platform connections in one runtime, each with its own shards,
bridge worker, prices and reconciler; one of them a simulator in its own process, reached
through its HTTP adapter like any real platform; and a connection whose events are pushed to the
ingestion endpoint."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from aiohttp import ClientSession, web

from actors.plans import DEFAULT_PLAN
from actors.runtime import Runtime, RuntimeConfig
from api.app import create_app
from api.ingest import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    IngestConfig,
    Ingestion,
    add_ingestion,
    sign,
)
from bridge.adapters.simulated import SimulatedPlatform
from bridge.connections import EmbeddedConnection, SimulatedConnection, push_secrets
from bridge.platform import ServerConfig
from bridge.simulator import SimulatorConfig, SimulatorReport
from ledger.database import create_engine
from ledger.inbox import Inbox
from tests.conftest import eventually
from tests.database import truncate_ledger
from tests.processes import simulate

pytestmark = [pytest.mark.usefixtures("ray_session"), pytest.mark.postgres]

TS = 1_772_442_000_000_000_000


def quiet(server: str) -> SimulatorConfig:
    return SimulatorConfig(server=server, ticks_per_second=0.0, trades_per_trader_per_minute=0.0)


def message(**body: object) -> bytes:
    return msgspec.json.encode(body)


def buy_eurusd(account_id: str, prefix: str) -> list[bytes]:
    """`account_id` buys 10 lots at 1.0851."""
    return [
        message(type="tick", event_id=f"{prefix}:1", ts_ns=TS + 1, symbol="EURUSD", bid=1.0850,
                ask=1.0851),
        message(type="deal", event_id=f"{prefix}:2", ts_ns=TS + 2, account_id=account_id,
                deal_id=900, position_id=900, symbol="EURUSD", entry="in", side="buy",
                volume=10.0, price=1.0851),
    ]  # fmt: skip


def crash(prefix: str) -> list[bytes]:
    """The bid falls to 1.0790: 10 lots bought at 1.0851 lose 6,100, past the 5,000 limit."""
    return [
        message(type="tick", event_id=f"{prefix}:3", ts_ns=TS + 3, symbol="EURUSD", bid=1.0790,
                ask=1.0791),
    ]  # fmt: skip


@pytest.fixture
async def platform_process() -> AsyncIterator[str]:
    async with simulate(
        "--server", "pool-c", "--accounts", "3", "--ticks-per-second", "0",
        "--trades-per-minute", "0",
    ) as server:  # fmt: skip
        yield server.url


@pytest.fixture
async def runtime(migrated_postgres_url: str, platform_process: str) -> AsyncIterator[Runtime]:
    await truncate_ledger(migrated_postgres_url)
    config = RuntimeConfig(
        database_url=migrated_postgres_url,
        shards=1,
        plan=DEFAULT_PLAN,
        connections=(
            EmbeddedConnection(name="pool-a", simulator=quiet("pool-a")),
            EmbeddedConnection(
                name="pool-b",
                shards=2,
                simulator=quiet("pool-b"),
                server=ServerConfig(requests_per_second=20.0),
                bridge={"requests_per_second": 20.0, "burst": 5},
            ),
            SimulatedConnection(name="pool-c", base_url=platform_process),
        ),
    )
    runtime = Runtime(config)
    await runtime.start(["a-1", "a-2"], "pool-a")
    await runtime.host(["b-1", "b-2"], "pool-b")
    await runtime.host(["acc-0", "acc-1", "acc-2"], "pool-c")
    yield runtime
    await runtime.close()


async def test_pool_when_started_then_each_connection_has_its_own_actors_and_reconciler(
    runtime: Runtime,
) -> None:
    health = await runtime.health()

    assert health.status == "ok"
    assert sorted(a.name for a in health.actors) == [
        "pool-a/bridge", "pool-a/hub", "pool-a/platform", "pool-a/reconciler", "pool-a/shard-0",
        "pool-b/bridge", "pool-b/platform", "pool-b/reconciler", "pool-b/shard-0",
        "pool-b/shard-1",
        "pool-c/bridge", "pool-c/reconciler", "pool-c/shard-0",
    ]  # fmt: skip
    stats = await runtime.stats()
    assert [b.connection for b in stats.bridges] == ["pool-a", "pool-b", "pool-c"]
    assert stats.accounts == 7
    for account_id in ("a-2", "b-1", "acc-2"):
        view = await runtime.account(account_id)
        assert view is not None
        assert view.account_id == account_id
    assert await runtime.account("nobody") is None

    passes = await runtime.reconcile()

    assert {name: (p.accounts, p.errors, p.mismatches) for name, p in passes.items()} == {
        "pool-a": (2, 0, []),
        "pool-b": (2, 0, []),
        "pool-c": (3, 0, []),  # asked over HTTP, through the simulated adapter
    }


async def test_pool_when_one_server_crashes_then_only_its_accounts_breach_and_freeze_there(
    runtime: Runtime, platform_process: str
) -> None:
    a, b = runtime.cell("pool-a").server, runtime.cell("pool-b").server
    # The same position on two servers; only pool-a's price falls. Were prices shared across
    # connections, b-1 would breach too.
    await b.inject.remote(buy_eurusd("b-1", "b"))
    await a.inject.remote(buy_eurusd("a-1", "a") + crash("a"))
    async with SimulatedPlatform(platform_process) as c:
        await c.inject(buy_eurusd("acc-0", "c") + crash("c"))

        async def disabled_on_c() -> list[str]:
            report: SimulatorReport = await c.report()
            return report.disabled

        # The freeze went to the server of the account's own connection, over HTTP.
        assert await eventually(disabled_on_c, lambda d: d == ["acc-0"]) == ["acc-0"]

    async def frozen() -> list[str]:
        return await runtime.frozen()

    assert await eventually(frozen, lambda f: f == ["a-1", "acc-0"]) == ["a-1", "acc-0"]
    assert await runtime.stop()
    report = await runtime.simulator_report()  # the embedded simulators, together
    assert report.disabled == ["a-1"]
    assert await runtime.breached() == ["a-1", "acc-0"]
    b1 = await runtime.account("b-1")
    assert b1 is not None
    assert (b1.status, b1.frozen) == ("active", False)
    assert b1.equity == pytest.approx(100_000.0 - 100.0)  # the spread only, at pool-b's price


PUSH_SECRET = "test-push-secret-not-a-real-one"


async def relay(server: Any, url: str, answers: list[int]) -> None:
    """The platform's push side: hand everything the simulator makes to the ingestion
    endpoint, signed, again until it is taken (as a webhook sender retries)."""
    async with ClientSession() as session:
        while True:
            batch: list[bytes] = await server.fetch.remote(1_000)
            while batch:
                body = b"[" + b",".join(batch) + b"]"
                timestamp = str(int(time.time()))
                headers = {
                    TIMESTAMP_HEADER: timestamp,
                    SIGNATURE_HEADER: sign(PUSH_SECRET.encode(), timestamp, body),
                    "Content-Type": "application/json",
                }
                async with session.post(url, data=body, headers=headers) as response:
                    answers.append(response.status)
                    if response.status == 200:
                        batch = []
            await asyncio.sleep(0.02)


async def test_pool_when_a_connection_is_pushed_then_its_events_come_through_ingestion(
    migrated_postgres_url: str,
) -> None:
    await truncate_ledger(migrated_postgres_url)
    connection = EmbeddedConnection(
        name="push-a", simulator=quiet("push-a"), pushed=True, push_secret=PUSH_SECRET
    )
    config = RuntimeConfig(
        database_url=migrated_postgres_url, shards=1, plan=DEFAULT_PLAN, connections=(connection,)
    )
    runtime = Runtime(config)
    engine = create_engine(migrated_postgres_url)
    app = create_app(runtime, engine)
    add_ingestion(
        app, Ingestion(IngestConfig(secrets=push_secrets(config.connections)), Inbox(engine))
    )
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    answers: list[int] = []
    await runtime.start(["p-1", "p-2"])
    server = runtime.cell().server
    pushing = asyncio.create_task(
        relay(server, f"http://{host}:{port}/ingest/v1/push-a/events", answers)
    )
    try:
        await server.inject.remote(buy_eurusd("p-1", "p") + crash("p"))

        async def frozen() -> list[str]:
            return await runtime.frozen()

        # The freeze went to the platform; its confirmation came back pushed, too.
        assert await eventually(frozen, lambda f: f == ["p-1"]) == ["p-1"]
        assert (await runtime.simulator_report()).disabled == ["p-1"]
        assert await Inbox(engine).count("push-a") == 4  # tick, deal, tick, trading disabled
        assert set(answers) == {200}
        assert await runtime.breached() == ["p-1"]
    finally:
        pushing.cancel()
        await asyncio.gather(pushing, return_exceptions=True)
        await runtime.close()
        await runner.cleanup()
        await engine.dispose()
