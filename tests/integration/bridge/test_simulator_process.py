"""`propvisor simulate` as its own OS process, driven through `SimulatedPlatform` as a bridge
drives a platform: provisioning, the event stream, a freeze and its confirmation, history, and
the rate limit."""

from __future__ import annotations

import pytest

from bridge.adapters.simulated import SimulatedPlatform
from bridge.codec import decode_messages
from bridge.commands import DisableTrading, ProvisionAccount
from bridge.events import AnyPlatformEvent, BalanceOperated, TradingDisabled
from bridge.platform import DONE, RateLimited
from tests.conftest import eventually
from tests.processes import simulate


class Stream:
    """Everything fetched so far, decoded."""

    def __init__(self, platform: SimulatedPlatform) -> None:
        self.platform = platform
        self.events: list[AnyPlatformEvent] = []

    async def more(self) -> list[AnyPlatformEvent]:
        events, rejections = decode_messages(await self.platform.fetch(1_000))
        assert rejections == []
        self.events.extend(events)
        return self.events


async def test_simulator_process_when_driven_as_a_platform_then_it_behaves_like_one() -> None:
    async with simulate("--accounts", "5") as server, SimulatedPlatform(server.url) as platform:
        stream = Stream(platform)
        existing = await platform.account_state("acc-4")
        assert (existing.balance_cents, existing.enabled) == (10_000_000, True)

        opened = ProvisionAccount(
            command_id="open:new", account_id="new", group="demo", leverage=50, deposit_cents=2_500
        )
        assert await platform.execute([opened]) == [DONE]
        await eventually(stream.more, lambda events: any(deposit_of("new", events)))

        freeze = DisableTrading(command_id="f:1", account_id="acc-0", reason="r", caused_by="x")
        assert await platform.execute([freeze]) == [DONE]
        await eventually(stream.more, lambda events: "f:1" in confirmed(events, "acc-0"))
        assert (await platform.account_state("acc-0")).enabled is False

        history = await platform.history("new", 0)
        assert history == await platform.history("new", 0)
        [deposit] = deposit_of("new", stream.events)
        assert [e.event_id for e in decode_messages(history)[0]] == [deposit.event_id]

    assert server.returncode == 0  # SIGTERM stops it cleanly


async def test_simulator_process_when_rate_limit_tiny_then_429_rate_limited() -> None:
    options = ("--requests-per-second", "0.2", "--burst", "1", "--accounts", "1")
    async with simulate(*options) as server, SimulatedPlatform(server.url) as platform:
        await platform.account_state("acc-0")

        with pytest.raises(RateLimited) as limited:
            await platform.account_state("acc-0")

        assert limited.value.retry_after_s == 5.0
        assert (await platform.report()).rate_limited == 1


def deposit_of(account_id: str, events: list[AnyPlatformEvent]) -> list[BalanceOperated]:
    return [
        e
        for e in events
        if isinstance(e, BalanceOperated) and e.account_id == account_id and e.kind == "deposit"
    ]


def confirmed(events: list[AnyPlatformEvent], account_id: str) -> list[str]:
    return [
        e.command_id
        for e in events
        if isinstance(e, TradingDisabled) and e.account_id == account_id
    ]
