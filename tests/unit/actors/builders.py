"""Platform events for account and shard tests, with defaults that keep tests short."""

from __future__ import annotations

import datetime as dt

import msgspec

from actors.plans import Plan
from bridge.events import (
    BalanceKind,
    BalanceOperated,
    DealEntry,
    DealExecuted,
    PriceTicked,
    Side,
    TradingDisabled,
)

PLAN = msgspec.convert(
    {
        "id": "test-100k",
        "name": "Test 100K",
        "initial_balance": 100_000.0,
        "warning_levels": [],
        "phases": [{"name": "challenge", "daily_loss": {"pct": 5}, "max_loss": {"pct": 10}}],
    },
    type=Plan,
)
"""5% daily loss of the initial balance below the day-start balance, 10% static; no warnings."""
T0 = 1_772_442_000 * 1_000_000_000  # 2026-03-02T09:00:00Z, a Monday morning in Prague


def utc_ns(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    """UTC nanoseconds of a wall-clock moment, e.g. `utc_ns(2026, 3, 29, 22)`."""
    moment = dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC)
    return int(moment.timestamp()) * 1_000_000_000


def tick(
    symbol: str, bid: float, ask: float | None = None, *, event_id: str = "t", ts_ns: int = T0
) -> PriceTicked:
    return PriceTicked(
        event_id=event_id, ts_ns=ts_ns, symbol=symbol, bid=bid, ask=bid if ask is None else ask
    )


def deal(
    deal_id: int,
    *,
    entry: DealEntry = DealEntry.IN,
    side: Side = Side.BUY,
    symbol: str = "EURUSD",
    volume: float = 1.0,
    price: float = 1.1,
    position_id: int | None = None,
    profit: float = 0.0,
    commission: float = 0.0,
    swap: float = 0.0,
    account_id: str = "A",
    ts_ns: int = T0,
) -> DealExecuted:
    return DealExecuted(
        event_id=f"d{deal_id}",
        ts_ns=ts_ns,
        account_id=account_id,
        deal_id=deal_id,
        position_id=deal_id if position_id is None else position_id,
        symbol=symbol,
        entry=entry,
        side=side,
        volume=volume,
        price=price,
        profit=profit,
        commission=commission,
        swap=swap,
    )


def balance(
    deal_id: int, amount: float, *, account_id: str = "A", ts_ns: int = T0
) -> BalanceOperated:
    kind = BalanceKind.DEPOSIT if amount >= 0 else BalanceKind.WITHDRAWAL
    return BalanceOperated(
        event_id=f"b{deal_id}",
        ts_ns=ts_ns,
        account_id=account_id,
        deal_id=deal_id,
        kind=kind,
        amount=amount,
    )


def disabled(command_id: str = "freeze:A:t1", *, account_id: str = "A") -> TradingDisabled:
    return TradingDisabled(
        event_id=f"td:{command_id}", ts_ns=T0, account_id=account_id, command_id=command_id
    )
