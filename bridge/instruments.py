"""Instrument specifications: what one lot of a symbol is worth."""

from __future__ import annotations

import msgspec


class Instrument(msgspec.Struct, frozen=True, kw_only=True):
    """A tradable symbol quoted in the account currency.

    `contract_size` is the units per lot, so one price point on one lot moves P&L by
    `contract_size` in the quote currency.
    """

    symbol: str
    contract_size: float
    digits: int
    start_price: float
    tick_volatility: float


# The simulator's symbols. All quote in USD, the demo's account currency; cross-currency
# conversion arrives with the rules issue.
DEFAULT_INSTRUMENTS: tuple[Instrument, ...] = (
    Instrument(
        symbol="EURUSD", contract_size=100_000, digits=5, start_price=1.085, tick_volatility=0.00004
    ),
    Instrument(
        symbol="GBPUSD", contract_size=100_000, digits=5, start_price=1.265, tick_volatility=0.00005
    ),
    Instrument(
        symbol="AUDUSD", contract_size=100_000, digits=5, start_price=0.655, tick_volatility=0.00003
    ),
    Instrument(
        symbol="XAUUSD", contract_size=100, digits=2, start_price=2650.0, tick_volatility=0.3
    ),
    Instrument(symbol="US500", contract_size=1, digits=2, start_price=5900.0, tick_volatility=0.6),
)

INSTRUMENTS_BY_SYMBOL: dict[str, Instrument] = {i.symbol: i for i in DEFAULT_INSTRUMENTS}
