"""The bridge worker feeding real shard actors that journal to a real database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest

from actors.plans import DEFAULT_PLAN
from actors.router import Router
from actors.shard_actor import RemoteAccountShard
from bridge.platform import RemoteSimulatorServer, SimulatorConnection
from bridge.simulator import SimulatorConfig
from bridge.worker import RemoteBridgeWorker, WorkerConfig
from ledger.database import create_engine
from ledger.journal import Journal

pytestmark = pytest.mark.usefixtures("ray_session")

ACCOUNTS = ["acct-a", "acct-b", "acct-c"]


def deal(event_id: str, account_id: str, deal_id: int, **fields: Any) -> bytes:
    body = {
        "type": "deal",
        "event_id": event_id,
        "ts_ns": 1_772_442_000_000_000_000 + deal_id,
        "account_id": account_id,
        "deal_id": deal_id,
        "position_id": deal_id,
        "symbol": "EURUSD",
        "entry": "in",
        "side": "buy",
        "volume": 1.0,
        "price": 1.085,
        "commission": -3.5,
    }
    body.update(fields)
    return msgspec.json.encode(body)


class Wiring(msgspec.Struct, kw_only=True):
    shards: list[Any]
    worker: Any
    router: Router


@pytest.fixture
async def wiring(database_url: str) -> AsyncIterator[Wiring]:
    router = Router(2)
    shards = [RemoteAccountShard.remote(i, database_url) for i in range(2)]
    quiet = SimulatorConfig(ticks_per_second=0.0, trades_per_trader_per_minute=0.0)
    server = RemoteSimulatorServer.remote(quiet)
    worker = RemoteBridgeWorker.remote(
        WorkerConfig(connection="test"), SimulatorConnection(server), shards, router
    )
    await asyncio.gather(*(s.attach.remote(worker) for s in shards))
    for account_id in ACCOUNTS:
        await shards[router.shard_of(account_id)].register.remote([(account_id, DEFAULT_PLAN)])
    yield Wiring(shards=shards, worker=worker, router=router)
    for actor in [*shards, worker, server]:
        ray_kill(actor)


def ray_kill(actor: Any) -> None:
    import ray

    ray.kill(actor)


async def test_ingest_when_one_message_is_malformed_then_it_alone_is_rejected(
    wiring: Wiring, database_url: str
) -> None:
    batch = [
        deal("e1", "acct-a", 1),
        deal("e2", "acct-b", 2, volume=-1.0),
        deal("e3", "acct-c", 3),
    ]

    report = await wiring.worker.ingest.remote(batch)

    assert report.received == 3
    assert report.applied == 2
    assert [r.index for r in report.rejected] == [1]
    assert "$.volume" in report.rejected[0].error
    views = {a: await shard_of(wiring, a).account.remote(a) for a in ACCOUNTS}
    assert views["acct-a"].open_positions == 1
    assert views["acct-a"].balance == pytest.approx(DEFAULT_PLAN.initial_balance - 3.5)
    assert views["acct-b"].open_positions == 0
    assert views["acct-c"].open_positions == 1


async def test_ingest_when_batch_is_retried_then_nothing_applies_twice(
    wiring: Wiring, database_url: str
) -> None:
    batch = [deal("e1", "acct-a", 1), deal("e2", "acct-a", 2)]

    first = await wiring.worker.ingest.remote(batch)
    again = await wiring.worker.ingest.remote(batch)

    assert (first.applied, again.applied, again.duplicates) == (2, 0, 2)
    view = await shard_of(wiring, "acct-a").account.remote("acct-a")
    assert view.open_positions == 2
    assert view.balance == pytest.approx(DEFAULT_PLAN.initial_balance - 7.0)


async def test_ingested_deals_are_journaled_once_in_the_database(
    wiring: Wiring, database_url: str
) -> None:
    batch = [deal("e1", "acct-a", 1), deal("e2", "acct-b", 2), b'{"type": "deal"}']
    await wiring.worker.ingest.remote(batch)
    await wiring.worker.ingest.remote(batch[:2])

    await asyncio.gather(*(s.flush.remote() for s in wiring.shards))

    engine = create_engine(database_url)
    try:
        entries = await Journal(engine).read()
    finally:
        await engine.dispose()
    assert sorted(e.event_id for e in entries) == ["e1", "e2"]
    assert {e.kind for e in entries} == {"deal"}


def shard_of(wiring: Wiring, account_id: str) -> Any:
    return wiring.shards[wiring.router.shard_of(account_id)]
