"""The worker's outbound path: outcomes for callers, coalescing, backoff, the circuit, and
absurd ticks refused at the edge."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import msgspec

from bridge.circuit import BackoffConfig
from bridge.codec import encode_batch
from bridge.commands import AnyPlatformCommand, DisableTrading, ProvisionAccount
from bridge.platform import DONE, RateLimited, Refused, Unavailable
from bridge.worker import BridgeWorker, WorkerConfig
from tests.conftest import eventually
from tests.unit.bridge.test_worker_retries import FlakyShard, OneShard

FAST = BackoffConfig(base_s=0.001, max_s=0.01, threshold=3, open_for_s=0.05)


def provision(account_id: str) -> ProvisionAccount:
    return ProvisionAccount(
        command_id=f"provision:{account_id}",
        account_id=account_id,
        group="prop\\challenge",
        leverage=100,
        deposit_cents=10_000_000,
    )


class ScriptedPlatform:
    """Raises the scripted failures in turn, then carries everything out."""

    def __init__(self, failures: Sequence[Exception] = (), delay_s: float = 0.0) -> None:
        self.failures = list(failures)
        self.delay_s = delay_s
        self.requests: list[list[str]] = []
        self.carried_out: list[str] = []

    async def fetch(self, max_events: int) -> list[bytes]:
        return []

    async def execute(self, commands: Sequence[AnyPlatformCommand]) -> list[int]:
        self.requests.append([c.command_id for c in commands])
        await asyncio.sleep(self.delay_s)
        if self.failures:
            raise self.failures.pop(0)
        self.carried_out.extend(c.command_id for c in commands)
        return [DONE for _ in commands]


async def started(platform: ScriptedPlatform, **options: Any) -> Any:
    options = {"backoff": FAST, "requests_per_second": 1000.0} | options
    config = WorkerConfig(connection="t", **options)
    worker: Any = BridgeWorker(config, platform, [], OneShard())
    await worker.start(pull=False)
    return worker


def stop(worker: Any) -> None:
    for task in worker.tasks:
        task.cancel()


async def test_execute_when_platform_carries_out_then_each_caller_gets_done() -> None:
    platform = ScriptedPlatform()
    worker = await started(platform)
    try:
        codes = await worker.execute(encode_batch([provision("a"), provision("b")]))
    finally:
        stop(worker)
    assert codes == [DONE, DONE]
    assert platform.carried_out == ["provision:a", "provision:b"]


async def test_execute_when_same_id_is_waiting_then_callers_share_one_request() -> None:
    platform = ScriptedPlatform(delay_s=0.05)
    worker = await started(platform)
    try:
        first = asyncio.ensure_future(worker.execute(encode_batch([provision("a")])))
        await asyncio.sleep(0.01)  # "a" is now being sent
        second = await worker.execute(encode_batch([provision("a"), provision("b")]))
        again = await worker.execute(encode_batch([provision("a")]))  # carried out before
        assert await first == [DONE]
    finally:
        stop(worker)
    assert second == [DONE, DONE]
    assert again == [DONE]
    assert platform.carried_out == ["provision:a", "provision:b"]
    stats = await worker.stats()
    assert (stats.coalesced, stats.duplicate_commands) == (1, 1)


async def test_send_when_rate_limited_or_unavailable_then_retried_until_carried_out() -> None:
    platform = ScriptedPlatform(
        [RateLimited("429", retry_after_s=0.02), Unavailable("503"), TimeoutError()]
    )
    worker = await started(platform)
    try:
        codes = await worker.execute(encode_batch([provision("a")]))
    finally:
        stop(worker)
    assert codes == [DONE]
    assert platform.carried_out == ["provision:a"]
    assert len(platform.requests) == 4
    stats = await worker.stats()
    assert (stats.rate_limited, stats.command_failures, stats.circuit) == (1, 3, "closed")


async def test_send_when_refused_then_commands_wait_and_go_once_credentials_work_again() -> None:
    platform = ScriptedPlatform([Refused("401 session expired")] * 3)
    config = BackoffConfig(base_s=0.001, max_s=0.01, threshold=3, open_for_s=0.3)
    worker = await started(platform, backoff=config)
    try:
        freeze = DisableTrading(command_id="freeze:a", account_id="a", reason="x", caused_by="e")
        await worker.submit(encode_batch([freeze]))  # nobody waits on a shard's freeze
        await eventually(lambda: asyncio.sleep(0, len(platform.requests)), lambda n: n >= 3)
        assert "Refused: 401 session expired" in worker.breaker.describe()
        assert not await worker.idle()  # the freeze is still held
        await worker.drain()
    finally:
        stop(worker)
    assert platform.carried_out == ["freeze:a"]
    assert (await worker.stats()).refused == 3


async def test_circuit_when_failures_reach_threshold_then_health_says_so_until_success() -> None:
    platform = ScriptedPlatform([Unavailable("503")] * 3, delay_s=0.0)
    config = BackoffConfig(base_s=0.001, max_s=0.01, threshold=3, open_for_s=0.3)
    worker = await started(platform, backoff=config)
    try:
        pending = asyncio.ensure_future(worker.execute(encode_batch([provision("a")])))
        await eventually(lambda: asyncio.sleep(0, len(platform.requests)), lambda n: n >= 3)
        stats = await worker.stats()
        assert (stats.circuit, stats.circuit_opened) == ("open", 1)
        assert "3 failures in a row" in worker.breaker.describe()
        assert await pending == [DONE]  # the trial request after 0.3 s goes through
    finally:
        stop(worker)
    assert (await worker.stats()).circuit == "closed"
    assert worker.breaker.describe() == ""


def tick(n: int, bid: float) -> bytes:
    return msgspec.json.encode(
        {"type": "tick", "event_id": f"t{n}", "ts_ns": n, "symbol": "EURUSD", "bid": bid,
         "ask": bid + 0.0001}
    )  # fmt: skip


async def test_ingest_when_one_tick_is_absurd_then_it_alone_is_rejected_with_its_index() -> None:
    shard = FlakyShard(failures=0)
    worker: Any = BridgeWorker(
        WorkerConfig(connection="t"), ScriptedPlatform(), [shard], OneShard()
    )
    report = await worker.ingest([tick(1, 1.10), tick(2, 11.0), b"{", tick(3, 1.1001)])
    assert [e.event_id for e in shard.received] == ["t1", "t3"]
    assert [r.index for r in report.rejected] == [1, 2]
    again = await worker.ingest([tick(2, 11.0), tick(4, 1.1002)])  # a platform's retry
    assert [r.index for r in again.rejected] == [0]
    assert [e.event_id for e in shard.received] == ["t1", "t3", "t4"]
    assert all(part in report.rejected[0].error for part in ("t2", "EURUSD"))
