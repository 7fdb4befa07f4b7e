"""The shard actor run in-process: delivery numbers, journal order, freeze ownership."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from actors.events import RuleBreached
from actors.shard import ShardCore
from actors.shard_actor import AccountShard, Ack, ShardConfig
from bridge.codec import decode_command_batch, encode_batch
from bridge.events import AnyPlatformEvent
from ledger.database import upgrade
from tests.unit.actors.builders import PLAN, deal, disabled, tick


class RecordingBridge:
    """Stands in for the bridge actor: records every command id it is handed."""

    def __init__(self) -> None:
        self.command_ids: list[str] = []
        self.submit = SimpleNamespace(remote=self._submit)

    def _submit(self, payload: bytes) -> Any:
        self.command_ids.extend(c.command_id for c in decode_command_batch(payload))
        return None


@pytest.fixture
async def shard(tmp_path: Path) -> AsyncIterator[AccountShard]:
    url = f"sqlite+aiosqlite:///{tmp_path}/j.db"
    await upgrade(url)
    actor = AccountShard(0, url, config=ShardConfig(resend_after_s=0.0))
    actor.bridge = RecordingBridge()
    await actor.register([("A", PLAN), ("B", PLAN)])
    assert actor.background is not None
    actor.background.cancel()  # no background task: the tests drive it step by step
    yield actor
    await actor.engine.dispose()


def batch(*events: AnyPlatformEvent) -> bytes:
    return encode_batch(list(events))


async def test_apply_when_delivery_number_repeats_then_batch_is_not_applied_twice(
    shard: AccountShard,
) -> None:
    # An older tick re-applied after a later buy would value the new position at a stale price.
    payload = batch(
        tick("EURUSD", 1.07, 1.0701, event_id="t1"),
        tick("EURUSD", 1.09, 1.0901, event_id="t2"),
        deal(1, volume=10.0, price=1.0901),
    )

    first = await shard.apply_batch(payload, "conn", 1)
    again = await shard.apply_batch(payload, "conn", 1)

    assert (first, again) == (Ack(1, 0), Ack(1, 0))
    assert shard.core.breached() == []
    assert shard.core.accounts["A"].equity == 9_990_000  # cents: 100,000 - 100


async def test_apply_when_delivery_number_is_new_then_batch_is_applied(
    shard: AccountShard,
) -> None:
    await shard.apply_batch(batch(deal(1)), "conn", 1)
    await shard.apply_batch(batch(deal(2)), "conn", 2)
    await shard.apply_batch(batch(deal(3)), "other-conn", 1)

    assert len(shard.core.accounts["A"].positions) == 3


def test_journal_lists_each_event_followed_by_its_effects() -> None:
    core = ShardCore(0)
    core.register([("A", PLAN), ("B", PLAN)])

    applied = core.apply(
        [
            deal(1, account_id="A", volume=10.0, price=1.1),
            tick("EURUSD", 1.09, 1.0901, event_id="t1"),
            deal(2, account_id="B"),
        ]
    )

    kinds = [type(e).__name__ for e in applied.journal]
    assert kinds == ["DealExecuted", "RuleBreached", "PhaseFailed", "DealExecuted"]
    breach = applied.journal[1]
    assert isinstance(breach, RuleBreached)
    assert breach.caused_by == "t1"


async def test_freeze_when_platform_has_not_confirmed_then_it_is_sent_again_until_it_does(
    shard: AccountShard,
) -> None:
    bridge = shard.bridge
    await shard.apply_batch(batch(deal(1, volume=10.0, price=1.1), tick("EURUSD", 1.09, 1.0901)))
    assert bridge.command_ids == ["freeze:A:t"]

    shard._resend_unconfirmed()
    assert bridge.command_ids == ["freeze:A:t", "freeze:A:t"]  # same id: one freeze to the platform

    await shard.apply_batch(batch(disabled("freeze:A:t", account_id="A")))
    shard._resend_unconfirmed()
    assert bridge.command_ids == ["freeze:A:t", "freeze:A:t"]
    assert shard.unconfirmed == {}
