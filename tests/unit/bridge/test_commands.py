"""Platform commands: every command travels in a lane, and protection goes first."""

from __future__ import annotations

import pytest

from bridge.commands import CloseAllPositions, DisableTrading, Lane, PlatformCommand


def test_lanes_when_sorted_then_protect_comes_before_balance_provision_and_history() -> None:
    assert sorted(Lane, reverse=True) == [Lane.HISTORY, Lane.PROVISION, Lane.BALANCE, Lane.PROTECT]
    assert min(Lane) is Lane.PROTECT


@pytest.mark.parametrize(
    "command",
    [
        DisableTrading(command_id="c1", account_id="a", reason="daily_loss", caused_by="e1"),
        CloseAllPositions(command_id="c2", account_id="a", reason="max_loss"),
    ],
    ids=lambda c: type(c).__name__,
)
def test_protective_command_when_queued_then_it_rides_the_protect_lane(
    command: PlatformCommand,
) -> None:
    assert command.lane is Lane.PROTECT


def test_base_command_when_asked_for_its_lane_then_it_refuses() -> None:
    with pytest.raises(NotImplementedError):
        _ = PlatformCommand(command_id="c", account_id="a").lane
