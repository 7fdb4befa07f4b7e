"""Push ingestion end to end: a real HTTP server, the inbox on a real database, and a bridge
worker delivering the inbox to a shard core (the account entities that apply the events)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest
from aiohttp import ClientSession, web
from sqlalchemy.ext.asyncio import AsyncEngine

from actors.plans import DEFAULT_PLAN
from actors.shard import ShardCore
from actors.shard_actor import Ack
from api.app import create_app
from api.ingest import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    IngestConfig,
    Ingestion,
    add_ingestion,
    sign,
)
from bridge.codec import decode_event_batch
from bridge.commands import AnyPlatformCommand
from bridge.pushed import PushedEvents
from bridge.worker import BridgeWorker, WorkerConfig
from ledger.inbox import Inbox
from tests.conftest import eventually
from tests.unit.bridge.test_worker_retries import OneShard

SECRET = b"test-secret-not-a-real-one"
T0 = 1_772_442_000 * 1_000_000_000


def deposit(n: int, amount: float = 100_000.0, deal_id: int | None = None) -> dict[str, Any]:
    return {"type": "balance", "event_id": f"p:{n}", "ts_ns": T0 + n, "account_id": "acc-1",
            "deal_id": deal_id or n, "kind": "deposit", "amount": amount}  # fmt: skip


class NoSupervisor:
    async def account(self, account_id: str) -> None:
        return None

    async def stats(self) -> None:
        return None

    async def health(self) -> None:
        return None


@pytest.fixture
async def server(engine: AsyncEngine) -> AsyncIterator[tuple[str, Inbox]]:
    inbox = Inbox(engine)
    app = create_app(NoSupervisor(), engine)  # type: ignore[arg-type]
    add_ingestion(app, Ingestion(IngestConfig(secrets={"mt5-a": SECRET}), inbox))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}/ingest/v1/mt5-a/events", inbox
    finally:
        await runner.cleanup()


async def post(
    url: str, body: bytes, *, secret: bytes = SECRET, at: float | None = None,
    content_type: str = "application/json", signature: str | None = None,
) -> tuple[int, Any]:  # fmt: skip
    timestamp = str(int(time.time() if at is None else at))
    headers = {
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: signature or sign(secret, timestamp, body),
        "Content-Type": content_type,
    }
    async with ClientSession() as session, session.post(url, data=body, headers=headers) as r:
        return r.status, await r.json(content_type=None)


async def test_ingest_when_signature_is_wrong_then_401_and_nothing_is_stored(server: Any) -> None:
    url, inbox = server
    status, body = await post(url, msgspec.json.encode([deposit(1)]), secret=b"other")
    assert (status, body["title"]) == (401, "Bad signature")
    assert await inbox.count("mt5-a") == 0


async def test_ingest_when_timestamp_is_stale_then_401_naming_the_skew(server: Any) -> None:
    url, inbox = server
    status, body = await post(url, msgspec.json.encode([deposit(1)]), at=time.time() - 900)
    assert (status, body["title"]) == (401, "Stale request")
    assert "tolerance is 300 s" in body["detail"]
    assert await inbox.count("mt5-a") == 0


async def test_ingest_when_request_is_replayed_then_409_and_applied_once(server: Any) -> None:
    url, inbox = server
    payload = msgspec.json.encode([deposit(1)])
    timestamp = str(int(time.time()))
    signature = sign(SECRET, timestamp, payload)
    first = await post(url, payload, at=float(timestamp), signature=signature)
    again = await post(url, payload, at=float(timestamp), signature=signature)
    assert (first[0], first[1]["accepted"]) == (200, 1)
    assert (again[0], again[1]["title"]) == (409, "Replayed request")
    assert await inbox.count("mt5-a") == 1


async def test_ingest_when_connection_is_unknown_then_404(server: Any) -> None:
    url, _ = server
    status, body = await post(url.replace("mt5-a", "nope"), b"[]")
    assert (status, body["title"]) == (404, "Unknown connection")


async def test_ingest_when_body_is_not_an_array_then_400_problem(server: Any) -> None:
    url, _ = server
    status, body = await post(url, b'{"type": "balance"}')
    assert (status, body["title"]) == (400, "Malformed body")


async def test_ingest_when_one_event_is_malformed_then_it_alone_is_rejected_naming_the_field(
    server: Any,
) -> None:
    url, inbox = server
    bad = deposit(2) | {"amount": "lots"}
    status, body = await post(url, msgspec.json.encode([deposit(1), bad, deposit(3)]))
    assert status == 200
    assert [(r["index"], r["status"]) for r in body["results"]] == [
        (0, "accepted"), (1, "rejected"), (2, "accepted"),
    ]  # fmt: skip
    assert "amount" in body["results"][1]["reason"]
    assert await inbox.count("mt5-a") == 2


async def test_ingest_when_msgpack_batch_repeats_event_ids_then_each_is_stored_once(
    server: Any,
) -> None:
    url, inbox = server
    events = [deposit(1), deposit(1), deposit(2)]
    status, body = await post(
        url, msgspec.msgpack.encode(events), content_type="application/msgpack"
    )
    assert status == 200
    assert [r["status"] for r in body["results"]] == ["accepted", "duplicate", "accepted"]
    status, body = await post(url, msgspec.json.encode([deposit(2), deposit(3)]))
    assert [r["status"] for r in body["results"]] == ["duplicate", "accepted"]
    assert await inbox.count("mt5-a") == 3


class CoreShard:
    """The shard as the bridge sees it, applying deliveries to a real `ShardCore`."""

    def __init__(self) -> None:
        self.core = ShardCore(0)
        self.core.register([("acc-1", DEFAULT_PLAN)])
        self.applied = 0
        self.apply_batch = SimpleNamespace(remote=self._apply)

    async def _apply(self, payload: bytes, source: str, seq: int) -> Ack:
        if seq == self.applied + 1:
            self.core.apply(decode_event_batch(payload))
            self.applied = seq
        return Ack(self.applied, self.applied)


class NoCommands:
    async def execute(self, commands: Sequence[AnyPlatformCommand]) -> list[int]:
        return [0 for _ in commands]


async def test_ingest_when_pushed_twice_with_duplicate_deal_ids_then_applied_once_in_order(
    server: Any, database_url: str
) -> None:
    url, inbox = server
    first = [deposit(1, 1_000.0), deposit(2, 500.0)]
    retry = [deposit(2, 500.0), deposit(3, 500.0, deal_id=2)]  # a new event id, a repeated deal
    assert (await post(url, msgspec.json.encode(first)))[0] == 200
    assert (await post(url, msgspec.json.encode(retry)))[0] == 200

    shard = CoreShard()
    pushed = PushedEvents("mt5-a", database_url, NoCommands())  # type: ignore[arg-type]
    config = WorkerConfig(connection="mt5-a", poll_interval_s=0.01)
    worker: Any = BridgeWorker(config, pushed, [shard], OneShard())
    head = await inbox.head("mt5-a")
    await worker.start()
    try:
        await eventually(lambda: inbox.cursor("mt5-a"), lambda seq: seq == head, timeout_s=10)
    finally:
        for task in worker.tasks:
            task.cancel()
        await asyncio.gather(*worker.tasks, return_exceptions=True)
    account = shard.core.accounts["acc-1"]
    assert account.balance == 10_150_000  # the plan's 100,000, then 1,000 and 500 once (cents)
    assert account.last_deal_id == 2
    assert shard.core.stats.events == 3  # every stored event delivered once, none lost

    # A restarted bridge resumes after the recorded cursor: nothing is delivered again.
    again = PushedEvents("mt5-a", database_url, NoCommands())  # type: ignore[arg-type]
    assert await again.fetch(100) == []


async def test_ingest_when_signature_has_non_ascii_characters_then_401_not_500(
    server: Any,
) -> None:
    url, _ = server
    status, body = await post(url, b"[]", signature="sha256=\u00e9t\u00e9")
    assert (status, body["title"]) == (401, "Bad signature")


class UncheckpointedShard(CoreShard):
    """Applies every delivery but never has a checkpoint that holds one."""

    async def _apply(self, payload: bytes, source: str, seq: int) -> Ack:
        ack = await super()._apply(payload, source, seq)
        return Ack(ack.applied, 0)


async def test_pushed_when_applied_but_not_checkpointed_then_cursor_stays_and_restart_replays(
    server: Any, database_url: str
) -> None:
    url, inbox = server
    assert (await post(url, msgspec.json.encode([deposit(1), deposit(2)])))[0] == 200
    shard = UncheckpointedShard()
    pushed = PushedEvents("mt5-a", database_url, NoCommands())  # type: ignore[arg-type]
    worker: Any = BridgeWorker(
        WorkerConfig(connection="mt5-a", poll_interval_s=0.01), pushed, [shard], OneShard()
    )
    await worker.start()
    try:
        await eventually(lambda: asyncio.sleep(0, shard.core.stats.events), lambda n: n == 2)
        await asyncio.sleep(0.1)  # several more fetches: none may move the cursor
    finally:
        for task in worker.tasks:
            task.cancel()
        await asyncio.gather(*worker.tasks, return_exceptions=True)
    assert await inbox.cursor("mt5-a") == 0
    # Worker and shard lost together: a new bridge hands both events over again.
    again = PushedEvents("mt5-a", database_url, NoCommands())  # type: ignore[arg-type]
    assert len(await again.fetch(100)) == 2
