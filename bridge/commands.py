"""Commands sent to a trading platform. Imperative, and apart from events."""

from __future__ import annotations

import enum

import msgspec


class Lane(enum.IntEnum):
    """Bridge priority lanes: lower goes first, so a freeze never waits behind provisioning."""

    PROTECT = 0
    BALANCE = 1
    PROVISION = 2
    HISTORY = 3


class PlatformCommand(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of every platform command; `command_id` makes a resent command harmless."""

    command_id: str
    account_id: str

    @property
    def lane(self) -> Lane:
        raise NotImplementedError


class DisableTrading(PlatformCommand, frozen=True, kw_only=True, tag="disable_trading"):
    """Freeze an account: no new orders. `caused_by` is the platform event that breached."""

    reason: str
    caused_by: str

    @property
    def lane(self) -> Lane:
        return Lane.PROTECT


class CloseAllPositions(PlatformCommand, frozen=True, kw_only=True, tag="close_all"):
    """Flatten every open position of an account at market."""

    reason: str

    @property
    def lane(self) -> Lane:
        return Lane.PROTECT


class EnableTrading(PlatformCommand, frozen=True, kw_only=True, tag="enable_trading"):
    """Let a paused account trade again (a daily pause ended at the day boundary)."""

    reason: str

    @property
    def lane(self) -> Lane:
        return Lane.PROTECT


AnyPlatformCommand = DisableTrading | CloseAllPositions | EnableTrading
