"""Commands sent to a trading platform. Imperative, and apart from events."""

from __future__ import annotations

import enum
from typing import Annotated

import msgspec

from bridge.events import BalanceKind

Cents = Annotated[int, msgspec.Meta(ge=0)]


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


class OperateBalance(PlatformCommand, frozen=True, kw_only=True, tag="balance_operation"):
    """Move an account's money by `amount_cents` (minor units): a deposit or withdrawal takes a
    positive amount (a withdrawal takes it out); a correction or credit is signed (negative
    removes). `command_id` makes a resend recognisable at the platform."""

    kind: BalanceKind
    amount_cents: int
    comment: str = ""

    def __post_init__(self) -> None:
        signed = self.kind in (BalanceKind.CORRECTION, BalanceKind.CREDIT)
        if self.amount_cents == 0 or (not signed and self.amount_cents < 0):
            raise ValueError(
                f"`amount_cents` must be {'non-zero' if signed else 'positive'} for a "
                f"{self.kind.value}, got {self.amount_cents}"
            )

    @property
    def lane(self) -> Lane:
        return Lane.BALANCE


class ProvisionAccount(PlatformCommand, frozen=True, kw_only=True, tag="provision"):
    """Open a trading account in the plan's group with its leverage and initial deposit.
    Provisioning an account id that already exists is done (result 0), never a second account."""

    group: str
    leverage: Annotated[int, msgspec.Meta(ge=1)]
    deposit_cents: Cents
    currency: str = "USD"
    name: str = ""

    @property
    def lane(self) -> Lane:
        return Lane.PROVISION


AnyPlatformCommand = (
    DisableTrading | CloseAllPositions | EnableTrading | OperateBalance | ProvisionAccount
)
