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
from bridge.events import AnyPlatformEvent, DealEntry
from ledger.database import upgrade
from tests.unit.actors.builders import PLAN, T0, balance, deal, disabled, tick


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


HOUR = 3_600_000_000_000


async def passivating_shard(tmp_path: Path) -> AccountShard:
    url = f"sqlite+aiosqlite:///{tmp_path}/p.db"
    await upgrade(url)
    actor = AccountShard(0, url, config=ShardConfig(passivate_after_s=3_600.0))
    actor.bridge = RecordingBridge()
    await actor.register([("A", PLAN), ("B", PLAN)])
    assert actor.background is not None
    actor.background.cancel()
    return actor


async def test_passivate_when_flat_account_idle_for_an_hour_then_it_leaves_memory(
    tmp_path: Path,
) -> None:
    shard = await passivating_shard(tmp_path)
    await shard.apply_batch(batch(deal(1, account_id="A"), deal(2, account_id="B")))
    await shard.apply_batch(batch(deal(3, account_id="A", entry=DealEntry.OUT, position_id=1,
                                       profit=50.0)))  # fmt: skip
    # An hour of market time later, only B (who holds a position) is still in play.
    await shard.apply_batch(batch(tick("EURUSD", 1.1, 1.1001, ts_ns=T0 + HOUR)))
    await shard.checkpoint()

    assert await shard.passivate() == 1
    assert "A" not in shard.core.accounts
    assert "A" in shard.core.passive
    assert (shard.core.stats.accounts, shard.core.stats.passive) == (2, 1)
    await shard.engine.dispose()


async def test_passivate_when_account_is_dirty_or_holds_a_position_then_it_stays(
    tmp_path: Path,
) -> None:
    shard = await passivating_shard(tmp_path)
    await shard.apply_batch(batch(deal(1, account_id="B")))
    await shard.apply_batch(batch(tick("EURUSD", 1.1, 1.1001, ts_ns=T0 + HOUR)))
    await shard.checkpoint()
    await shard.apply_batch(batch(balance(9, 10.0, account_id="A", ts_ns=T0 + HOUR)))  # dirty

    assert await shard.passivate() == 0
    assert set(shard.core.accounts) == {"A", "B"}
    await shard.engine.dispose()


async def test_event_for_evicted_account_then_it_is_woken_from_its_snapshot_and_applied(
    tmp_path: Path,
) -> None:
    shard = await passivating_shard(tmp_path)
    await shard.apply_batch(batch(deal(1, account_id="A")))
    await shard.apply_batch(batch(deal(2, account_id="A", entry=DealEntry.OUT, position_id=1,
                                       profit=50.0)))  # fmt: skip
    await shard.apply_batch(batch(tick("EURUSD", 1.1, 1.1001, ts_ns=T0 + HOUR)))
    await shard.checkpoint()
    await shard.passivate()
    assert "A" in shard.core.passive

    later = T0 + HOUR + 60_000_000_000
    await shard.apply_batch(batch(deal(3, account_id="A", ts_ns=later)))

    assert "A" not in shard.core.passive
    account = shard.core.accounts["A"]
    assert account.balance == 10_005_000  # cents: 100,000 + 50 from before the eviction
    assert len(account.positions) == 1
    assert account.plan is PLAN  # one plan object shared, not a copy per woken account
    await shard.engine.dispose()


async def test_day_boundary_when_account_is_evicted_then_it_is_woken_to_roll_on_time(
    tmp_path: Path,
) -> None:
    shard = await passivating_shard(tmp_path)
    await shard.apply_batch(batch(deal(1, account_id="A")))
    await shard.apply_batch(batch(deal(2, account_id="A", entry=DealEntry.OUT, position_id=1,
                                       profit=-3_000.0)))  # fmt: skip
    await shard.apply_batch(batch(tick("EURUSD", 1.1, 1.1001, ts_ns=T0 + HOUR)))
    await shard.checkpoint()
    await shard.passivate()
    rollover = shard.core.passive["A"].next_rollover_ns

    await shard.apply_batch(batch(tick("EURUSD", 1.1, 1.1001, event_id="t2", ts_ns=rollover + 1)))

    account = shard.core.accounts["A"]
    assert account.next_rollover_ns > rollover  # its day rolled at the boundary
    assert account.day_start_balance == 9_700_000  # the new day starts from the loss
    await shard.engine.dispose()


async def test_views_when_some_accounts_are_evicted_then_every_account_is_shown(
    tmp_path: Path,
) -> None:
    shard = await passivating_shard(tmp_path)
    await shard.apply_batch(batch(tick("EURUSD", 1.1, 1.1001, ts_ns=T0)))  # their day starts
    await shard.apply_batch(batch(tick("EURUSD", 1.1, 1.1001, event_id="t2", ts_ns=T0 + HOUR)))
    await shard.checkpoint()
    assert await shard.passivate() == 2

    views = await shard.views()

    assert sorted(v.account_id for v in views) == ["A", "B"]
    assert shard.core.passive == {}
    await shard.engine.dispose()
