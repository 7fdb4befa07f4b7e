"""The root supervisor watches its actors: the health view follows a crash and the restart."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from actors.plans import DEFAULT_PLAN
from actors.runtime import Runtime, RuntimeConfig
from actors.supervisor import Health
from api.app import create_app
from bridge.connections import EmbeddedConnection
from bridge.simulator import SimulatorConfig
from ledger.database import create_engine
from tests.conftest import eventually

pytestmark = pytest.mark.usefixtures("ray_session")


@pytest.fixture
async def runtime(sqlite_url: str) -> AsyncIterator[Runtime]:
    from ledger.database import upgrade

    await upgrade(sqlite_url)
    quiet = SimulatorConfig(server="sup", ticks_per_second=0.0, trades_per_trader_per_minute=0.0)
    config = RuntimeConfig(
        database_url=sqlite_url,
        shards=2,
        plan=DEFAULT_PLAN,
        connections=(EmbeddedConnection(name="sup", simulator=quiet),),
    )
    runtime = Runtime(config)
    await runtime.start([f"s-{i}" for i in range(20)])
    yield runtime
    await runtime.close()


def by_name(health: Health) -> dict[str, tuple[str, int]]:
    return {a.name: (a.state, a.restarts) for a in health.actors}


async def test_health_when_started_then_every_actor_is_up(runtime: Runtime) -> None:
    health = await runtime.health()

    assert health.status == "ok"
    assert sorted(a.kind for a in health.actors) == [
        "bridge",
        "hub",
        "platform",
        "reconciler",
        "shard",
        "shard",
    ]
    assert all(a.state == "up" and a.pid for a in health.actors)


async def test_health_when_shard_process_killed_then_restart_is_seen_and_accounts_recovered(
    runtime: Runtime,
) -> None:
    before = await runtime.health()
    shard = next(a for a in before.actors if a.name == "sup/shard-0")
    assert shard.pid is not None

    os.kill(shard.pid, signal.SIGKILL)

    after = await eventually(
        runtime.health,
        lambda h: by_name(h)["sup/shard-0"] == ("up", 1),
        timeout_s=60,
    )
    restarted = next(a for a in after.actors if a.name == "sup/shard-0")
    assert restarted.pid != shard.pid
    # Recovered from its checkpoint without being sent anything: every account is back.
    hosted = [v.account_id for s in runtime.shards for v in await s.views.remote()]
    assert sorted(hosted) == sorted(f"s-{i}" for i in range(20))


async def test_health_endpoint_serves_the_supervisor_view(
    runtime: Runtime, sqlite_url: str
) -> None:
    engine = create_engine(sqlite_url)
    runner = web.AppRunner(create_app(runtime, engine))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://{host}:{port}/api/v1/health") as response,
        ):
            body = await response.json()
    finally:
        await runner.cleanup()
        await engine.dispose()

    assert response.status == 200  # public: load balancers ask without a token
    assert body["status"] == "ok"
    assert {a["name"] for a in body["actors"]} == {
        "sup/shard-0", "sup/shard-1", "sup/bridge", "sup/platform", "sup/reconciler", "sup/hub"
    }  # fmt: skip
