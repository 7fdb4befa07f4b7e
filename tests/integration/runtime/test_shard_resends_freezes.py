"""A freeze the bridge failed to take is sent again, never dropped."""

from __future__ import annotations

import pytest
import ray

from actors.plans import DEFAULT_PLAN
from actors.shard_actor import RemoteAccountShard, ShardConfig
from bridge.codec import decode_command_batch, encode_batch
from bridge.events import DealEntry, DealExecuted, PriceTicked, Side
from tests.conftest import eventually

pytestmark = pytest.mark.usefixtures("ray_session")


@ray.remote(num_cpus=0)
class FlakyBridge:
    """Refuses the first command batch it is given, keeps the rest."""

    def __init__(self) -> None:
        self.refused = 0
        self.taken: list[str] = []

    def submit(self, payload: bytes) -> int:
        if self.refused == 0:
            self.refused += 1
            raise ConnectionError("bridge restarting")
        commands = decode_command_batch(payload)
        self.taken.extend(c.command_id for c in commands)
        return len(commands)

    def state(self) -> tuple[int, list[str]]:
        return self.refused, self.taken


async def test_freeze_when_bridge_refuses_first_attempt_then_it_is_sent_again(
    sqlite_url: str,
) -> None:
    from ledger.database import upgrade

    await upgrade(sqlite_url)
    bridge = FlakyBridge.remote()  # type: ignore[attr-defined]
    shard = RemoteAccountShard.remote(0, sqlite_url, config=ShardConfig(flush_interval_s=0.01))
    await shard.attach.remote(bridge)
    await shard.register.remote([("a", DEFAULT_PLAN)])
    ts = 1_772_442_000_000_000_000
    events = [
        DealExecuted(event_id="d", ts_ns=ts, account_id="a", deal_id=1, position_id=1,
                     symbol="EURUSD", entry=DealEntry.IN, side=Side.BUY, volume=10.0,
                     price=1.0851),
        PriceTicked(event_id="t", ts_ns=ts + 1, symbol="EURUSD", bid=1.0700, ask=1.0701),
    ]  # fmt: skip

    await shard.apply_batch.remote(encode_batch(events))

    refused, taken = await eventually(
        lambda: bridge.state.remote(), lambda s: len(s[1]) == 1, timeout_s=10
    )
    assert refused == 1
    assert taken == ["freeze:a:t"]
    ray.kill(shard)
    ray.kill(bridge)
