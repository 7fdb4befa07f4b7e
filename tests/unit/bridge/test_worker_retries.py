"""The bridge worker's pull loop keeps a batch it could not deliver and delivers it later."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import msgspec

from bridge.codec import decode_event_batch
from bridge.commands import AnyPlatformCommand
from bridge.events import AnyPlatformEvent
from bridge.worker import BridgeWorker, WorkerConfig
from tests.conftest import eventually


def deal(n: int) -> bytes:
    return msgspec.json.encode(
        {"type": "deal", "event_id": f"e{n}", "ts_ns": n, "account_id": "a", "deal_id": n,
         "position_id": n, "symbol": "EURUSD", "entry": "in", "side": "buy", "volume": 1.0,
         "price": 1.1}
    )  # fmt: skip


class OneBatchPlatform:
    """Hands over one batch, then nothing: what it gave is gone from the platform's queue."""

    def __init__(self, batch: list[bytes]) -> None:
        self.batch = batch

    async def fetch(self, max_events: int) -> list[bytes]:
        batch, self.batch = self.batch, []
        return batch

    async def execute(self, commands: Sequence[AnyPlatformCommand]) -> list[int]:
        return [0 for _ in commands]

    async def provision(self, account_ids: Sequence[str]) -> int:
        return len(account_ids)


class FlakyShard:
    """Fails its first `failures` deliveries, then records what it is given."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.received: list[AnyPlatformEvent] = []
        self.seqs: list[int] = []
        self.apply_batch = SimpleNamespace(remote=self._apply)

    async def _apply(self, payload: bytes, source: str, seq: int) -> int:
        self.seqs.append(seq)
        if self.failures:
            self.failures -= 1
            raise ConnectionError("shard unreachable")
        events = decode_event_batch(payload)
        self.received.extend(events)
        return len(events)


class OneShard:
    shard_count = 1

    def shard_of(self, account_id: str) -> int:
        return 0


async def test_pull_when_delivery_fails_then_same_batch_is_delivered_on_retry() -> None:
    shard = FlakyShard(failures=2)
    config = WorkerConfig(connection="t", poll_interval_s=0.001, retry_interval_s=0.001)
    worker: Any = BridgeWorker(config, OneBatchPlatform([deal(1), deal(2)]), [shard], OneShard())
    await worker.start()
    try:
        await eventually(lambda: asyncio.sleep(0, len(shard.received)), lambda n: n >= 2)
    finally:
        for task in worker.tasks:
            task.cancel()
    assert [e.event_id for e in shard.received] == ["e1", "e2"]
    stats = await worker.stats()
    assert (stats.delivery_retries, stats.applied) == (2, 2)


async def test_ingest_when_batch_repeats_an_event_id_then_it_is_applied_once() -> None:
    shard = FlakyShard(failures=0)
    worker: Any = BridgeWorker(
        WorkerConfig(connection="t"), OneBatchPlatform([]), [shard], OneShard()
    )

    report = await worker.ingest([deal(1), deal(1), deal(2)])

    assert (report.applied, report.duplicates) == (2, 1)
    assert [e.event_id for e in shard.received] == ["e1", "e2"]


async def test_delivery_when_retried_then_it_keeps_its_sequence_number() -> None:
    shard = FlakyShard(failures=1)
    config = WorkerConfig(connection="t", retry_interval_s=0.001)
    worker: Any = BridgeWorker(config, OneBatchPlatform([]), [shard], OneShard())

    await worker.ingest([deal(1)])
    await worker.ingest([deal(2)])

    assert shard.seqs == [1, 1, 2]
