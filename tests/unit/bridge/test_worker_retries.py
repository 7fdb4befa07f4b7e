"""The bridge worker's pull loop keeps a batch it could not deliver and delivers it later."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import msgspec

from actors.shard_actor import Ack
from bridge.codec import decode_event_batch, encode_batch
from bridge.commands import AnyPlatformCommand, DisableTrading
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
    """A shard as the bridge sees it: fails its first `failures` deliveries, applies deliveries
    in number order only, checkpoints on request, and can crash back to its last checkpoint."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.received: list[AnyPlatformEvent] = []
        self.seqs: list[int] = []
        self.applied = 0
        self.durable = 0
        self.durable_received = 0
        self.apply_batch = SimpleNamespace(remote=self._apply)
        self.checkpoint = SimpleNamespace(remote=self._checkpoint)

    async def _apply(self, payload: bytes, source: str, seq: int) -> Ack:
        self.seqs.append(seq)
        if self.failures:
            self.failures -= 1
            raise ConnectionError("shard unreachable")
        if seq == self.applied + 1:
            self.received.extend(decode_event_batch(payload))
            self.applied = seq
        return Ack(self.applied, self.durable)

    async def _checkpoint(self) -> dict[str, int]:
        self.durable, self.durable_received = self.applied, len(self.received)
        return {"any": self.durable}

    def crash(self) -> None:
        """Lose everything after the last checkpoint, as a restarted process would."""
        self.applied = self.durable
        del self.received[self.durable_received :]


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


async def test_delivery_when_shard_lost_batches_in_a_crash_then_they_are_delivered_again() -> None:
    shard = FlakyShard(failures=0)
    worker: Any = BridgeWorker(
        WorkerConfig(connection="t"), OneBatchPlatform([]), [shard], OneShard()
    )
    await worker.ingest([deal(1)])
    await shard._checkpoint()
    await worker.ingest([deal(2)])
    await worker.ingest([deal(3)])
    shard.crash()  # back to its checkpoint: e2 and e3 are gone

    await worker.ingest([deal(4)])

    assert [e.event_id for e in shard.received] == ["e1", "e2", "e3", "e4"]
    assert shard.seqs == [1, 2, 3, 4, 2, 3, 4]  # 4 refused (a gap), then 2..4 in order
    assert (await worker.stats()).redelivered == 1


async def test_redeliver_when_shard_recovered_then_it_gets_everything_after_its_checkpoint() -> (
    None
):
    shard = FlakyShard(failures=0)
    worker: Any = BridgeWorker(
        WorkerConfig(connection="t"), OneBatchPlatform([]), [shard], OneShard()
    )
    await worker.ingest([deal(1)])
    await shard._checkpoint()
    await worker.ingest([deal(2)])
    shard.crash()

    kept = await worker.redeliver(0)
    assert not await worker.idle()  # owed to the shard until it has them again
    await asyncio.gather(*worker.redeliveries)

    assert [e.event_id for e in shard.received] == ["e1", "e2"]
    assert kept == 1  # e2's batch stays until a checkpoint holds it
    assert await worker.idle()


async def test_retained_when_shard_checkpoints_then_covered_batches_are_forgotten() -> None:
    shard = FlakyShard(failures=0)
    worker: Any = BridgeWorker(
        WorkerConfig(connection="t"), OneBatchPlatform([]), [shard], OneShard()
    )
    await worker.ingest([deal(1)])
    await worker.ingest([deal(2)])
    assert [seq for seq, _ in worker.retained[0]] == [1, 2]

    await shard._checkpoint()
    await worker.ingest([deal(3)])  # its answer says 2 is durable

    assert [seq for seq, _ in worker.retained[0]] == [3]


async def test_retained_when_over_the_bound_then_shard_is_asked_to_checkpoint() -> None:
    shard = FlakyShard(failures=0)
    config = WorkerConfig(connection="t", max_retained=2)
    worker: Any = BridgeWorker(config, OneBatchPlatform([]), [shard], OneShard())

    for n in range(1, 6):
        await worker.ingest([deal(n)])

    assert shard.durable >= 3
    assert len(worker.retained[0]) <= 3


async def test_submit_when_command_id_seen_before_then_it_is_dropped() -> None:
    worker: Any = BridgeWorker(WorkerConfig(connection="t"), OneBatchPlatform([]), [], OneShard())
    freeze = DisableTrading(
        command_id="freeze:a:e1", account_id="a", reason="daily_loss", caused_by="e1"
    )
    other = DisableTrading(
        command_id="freeze:b:e2", account_id="b", reason="max_loss", caused_by="e2"
    )

    await worker.submit(encode_batch([freeze]))
    await worker.submit(encode_batch([freeze, other]))

    assert worker.unsent == 2
    assert (await worker.stats()).duplicate_commands == 1


class RefusingPlatform(OneBatchPlatform):
    """Answers its first command with a non-zero retcode (not carried out), then 0."""

    def __init__(self) -> None:
        super().__init__([])
        self.codes = [10013]
        self.executed: list[str] = []

    async def execute(self, commands: Sequence[AnyPlatformCommand]) -> list[int]:
        self.executed.extend(c.command_id for c in commands)
        return [self.codes.pop(0) if self.codes else 0 for _ in commands]


async def test_submit_when_platform_did_not_carry_a_command_out_then_a_resend_gets_through() -> (
    None
):
    platform = RefusingPlatform()
    worker: Any = BridgeWorker(WorkerConfig(connection="t"), platform, [], OneShard())
    await worker.start(pull=False)
    freeze = DisableTrading(command_id="freeze:a:e1", account_id="a", reason="x", caused_by="e1")
    try:
        await worker.submit(encode_batch([freeze]))
        await worker.drain()
        await worker.submit(encode_batch([freeze]))  # the shard resends: not confirmed
        await worker.drain()
        await worker.submit(encode_batch([freeze]))  # carried out now: a third is a repeat
        await worker.drain()
    finally:
        for task in worker.tasks:
            task.cancel()

    assert platform.executed == ["freeze:a:e1", "freeze:a:e1"]
    assert (await worker.stats()).duplicate_commands == 1


class RecordingPlatform(OneBatchPlatform):
    """Carries every command out and remembers each request's command ids."""

    def __init__(self) -> None:
        super().__init__([])
        self.requests: list[list[str]] = []

    async def execute(self, commands: Sequence[AnyPlatformCommand]) -> list[int]:
        self.requests.append([c.command_id for c in commands])
        return [0 for _ in commands]


async def test_send_when_commands_arrive_during_the_token_wait_then_they_share_its_request() -> (
    None
):
    platform = RecordingPlatform()
    config = WorkerConfig(connection="t", requests_per_second=5.0, burst=1)
    worker: Any = BridgeWorker(config, platform, [], OneShard())
    freezes = [
        DisableTrading(command_id=f"freeze:{a}", account_id=a, reason="x", caused_by=f"e{a}")
        for a in "abcd"
    ]
    await worker.start(pull=False)
    try:
        await worker.submit(encode_batch(freezes[:1]))  # takes the only token
        await eventually(lambda: asyncio.sleep(0, len(platform.requests)), lambda n: n == 1)
        await worker.submit(encode_batch(freezes[1:2]))  # the sender now waits ~0.2 s
        await asyncio.sleep(0.05)
        await worker.submit(encode_batch(freezes[2:]))  # arrive during that wait
        await worker.drain()
    finally:
        for task in worker.tasks:
            task.cancel()

    assert platform.requests == [["freeze:a"], ["freeze:b", "freeze:c", "freeze:d"]]


class SlowFetchPlatform(OneBatchPlatform):
    """Hands its batch over only when `answer` is set: meanwhile it is in flight, gone from
    the platform's queue and not yet in the worker's hands."""

    def __init__(self, batch: list[bytes]) -> None:
        super().__init__(batch)
        self.asked = asyncio.Event()
        self.answer = asyncio.Event()

    async def fetch(self, max_events: int) -> list[bytes]:
        self.asked.set()
        await self.answer.wait()
        return await super().fetch(max_events)


async def test_idle_when_a_fetched_batch_is_in_flight_then_false() -> None:
    shard = FlakyShard(failures=0)
    platform = SlowFetchPlatform([deal(1)])
    config = WorkerConfig(connection="t", poll_interval_s=0.001)
    worker: Any = BridgeWorker(config, platform, [shard], OneShard())
    await worker.start()
    try:
        await platform.asked.wait()
        assert not await worker.idle()  # a settling runtime must not read the shards yet
        platform.answer.set()
        await eventually(worker.idle, bool)
    finally:
        for task in worker.tasks:
            task.cancel()
    assert [e.event_id for e in shard.received] == ["e1"]


class ReplayablePlatform(OneBatchPlatform):
    """Hands its batches over one per fetch and counts the batches confirmed durable."""

    def __init__(self, batches: list[list[bytes]]) -> None:
        super().__init__([])
        self.batches = batches
        self.confirmed: list[int] = []

    async def fetch(self, max_events: int) -> list[bytes]:
        return self.batches.pop(0) if self.batches else []

    async def durable(self, batches: int) -> None:
        self.confirmed.append(batches)


class SourceShard(FlakyShard):
    """Answers a checkpoint as a real shard does: the number it holds per source."""

    def __init__(self) -> None:
        super().__init__(failures=0)
        self.source = ""
        self.apply_batch = SimpleNamespace(remote=self._apply_from)

    async def _apply_from(self, payload: bytes, source: str, seq: int) -> Ack:
        self.source = source
        return await self._apply(payload, source, seq)

    async def _checkpoint(self) -> dict[str, int]:
        await super()._checkpoint()
        return {self.source: self.durable}


async def test_replayable_when_shard_checkpoints_then_only_then_batches_are_confirmed() -> None:
    shard = SourceShard()
    platform = ReplayablePlatform([[deal(1)], [deal(2)]])
    config = WorkerConfig(connection="t", poll_interval_s=0.001)
    worker: Any = BridgeWorker(config, platform, [shard], OneShard())
    await worker.start()
    try:
        await eventually(lambda: asyncio.sleep(0, len(shard.received)), lambda n: n == 2)
        await asyncio.sleep(0.02)
        assert platform.confirmed == []  # applied, but no checkpoint holds them yet
        await worker._make_durable(0)  # the shard checkpoints both
        await eventually(lambda: asyncio.sleep(0, sum(platform.confirmed)), lambda n: n == 2)
    finally:
        for task in worker.tasks:
            task.cancel()
    assert sum(platform.confirmed) == 2
