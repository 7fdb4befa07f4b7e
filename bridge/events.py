"""Canonical platform events: what a trading platform tells us happened.

Every event is a frozen, tagged msgspec Struct carrying the id that makes a replay harmless
(`event_id`, unique per platform connection) and its UTC timestamp in nanoseconds (`ts_ns`).
Prices, volumes and P&L arrive from platforms as floats; money in our own books never does.
"""

from __future__ import annotations

import enum
import math
from typing import Annotated

import msgspec

Positive = Annotated[float, msgspec.Meta(gt=0)]
NonEmpty = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Timestamp = Annotated[int, msgspec.Meta(gt=0)]
DealId = Annotated[int, msgspec.Meta(gt=0)]


class DealEntry(enum.StrEnum):
    """MetaTrader's deal entry: a deal opens (`in`) or closes (`out`) a position."""

    IN = "in"
    OUT = "out"


class Side(enum.StrEnum):
    BUY = "buy"
    SELL = "sell"


class BalanceKind(enum.StrEnum):
    DEPOSIT = "deposit"
    WITHDRAWAL = "withdrawal"
    CORRECTION = "correction"
    CREDIT = "credit"  # MetaTrader credit: counts in equity, not in balance


def _require_finite(**values: float) -> None:
    for name, value in values.items():
        if not math.isfinite(value):
            raise ValueError(f"`{name}` must be a finite number, got {value}")


class PlatformEvent(
    msgspec.Struct, frozen=True, kw_only=True, tag_field="type", forbid_unknown_fields=True
):
    """Base of every platform event. Unknown fields are an error: events come from outside."""

    event_id: NonEmpty
    ts_ns: Timestamp


class PriceTicked(PlatformEvent, frozen=True, kw_only=True, tag="tick"):
    """A new best bid and ask for a symbol."""

    symbol: NonEmpty
    bid: Positive
    ask: Positive

    def __post_init__(self) -> None:
        _require_finite(bid=self.bid, ask=self.ask)
        if self.ask < self.bid:
            raise ValueError(f"`ask` ({self.ask}) is below `bid` ({self.bid})")


class DealExecuted(PlatformEvent, frozen=True, kw_only=True, tag="deal"):
    """A deal on an account, in MetaTrader's deal model.

    `profit` is the realised P&L in account currency (zero on entry `in`); `commission` and `swap`
    are signed amounts in account currency (a charge is negative).
    """

    account_id: NonEmpty
    deal_id: DealId
    position_id: DealId
    symbol: NonEmpty
    entry: DealEntry
    side: Side
    volume: Positive
    price: Positive
    profit: float = 0.0
    commission: float = 0.0
    swap: float = 0.0

    def __post_init__(self) -> None:
        _require_finite(
            volume=self.volume,
            price=self.price,
            profit=self.profit,
            commission=self.commission,
            swap=self.swap,
        )


class BalanceOperated(PlatformEvent, frozen=True, kw_only=True, tag="balance"):
    """A balance operation (deposit, withdrawal, correction) in account currency."""

    account_id: NonEmpty
    deal_id: DealId
    kind: BalanceKind
    amount: float

    def __post_init__(self) -> None:
        _require_finite(amount=self.amount)


class TradingDisabled(PlatformEvent, frozen=True, kw_only=True, tag="trading_disabled"):
    """The platform confirms that an account can no longer trade (our freeze took effect)."""

    account_id: NonEmpty
    command_id: NonEmpty


AnyPlatformEvent = PriceTicked | DealExecuted | BalanceOperated | TradingDisabled
