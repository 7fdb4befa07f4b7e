"""Instruments: what one lot of a symbol is worth, and the simulator's price models.

`SymbolSpec` is the contract every valuation uses (contract size, base and quote currency). The
default table ships as `bridge/symbols.toml`; `load_symbols` reads it or a firm's own file.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated

import msgspec

DEFAULT_SYMBOLS_PATH = Path(__file__).with_name("symbols.toml")

Currency = Annotated[str, msgspec.Meta(pattern="^[A-Z0-9]{2,12}$")]


class SymbolSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One symbol: one price point on one lot moves P&L by `contract_size` units of `quote`."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
    contract_size: Annotated[float, msgspec.Meta(gt=0)]
    base: Currency
    quote: Currency


class SymbolTable(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    symbols: Annotated[tuple[SymbolSpec, ...], msgspec.Meta(min_length=1)]


class SymbolsError(ValueError):
    """A symbol table that cannot be used, naming the file and the field."""


def load_symbols(path: Path | None = None) -> dict[str, SymbolSpec]:
    """The symbol table at `path` (default: the shipped one), by symbol name."""
    path = DEFAULT_SYMBOLS_PATH if path is None else path
    try:
        table = msgspec.convert(tomllib.loads(path.read_text(encoding="utf-8")), type=SymbolTable)
    except (tomllib.TOMLDecodeError, msgspec.ValidationError) as exc:
        raise SymbolsError(f"{path}: {exc}") from exc
    by_name: dict[str, SymbolSpec] = {}
    for spec in table.symbols:
        if spec.name in by_name:
            raise SymbolsError(f"{path}: symbol {spec.name!r} is listed twice")
        by_name[spec.name] = spec
    return by_name


DEFAULT_SYMBOLS: dict[str, SymbolSpec] = load_symbols()


class Instrument(msgspec.Struct, frozen=True, kw_only=True):
    """How the simulator moves a symbol's price; the contract itself is its `SymbolSpec`."""

    symbol: str
    digits: int
    start_price: float
    tick_volatility: float

    @property
    def spec(self) -> SymbolSpec:
        return DEFAULT_SYMBOLS[self.symbol]

    @property
    def contract_size(self) -> float:
        return self.spec.contract_size


# The simulator's symbols. All quote in USD, the demo's account currency.
DEFAULT_INSTRUMENTS: tuple[Instrument, ...] = (
    Instrument(symbol="EURUSD", digits=5, start_price=1.085, tick_volatility=0.00004),
    Instrument(symbol="GBPUSD", digits=5, start_price=1.265, tick_volatility=0.00005),
    Instrument(symbol="AUDUSD", digits=5, start_price=0.655, tick_volatility=0.00003),
    Instrument(symbol="XAUUSD", digits=2, start_price=2650.0, tick_volatility=0.3),
    Instrument(symbol="US500", digits=2, start_price=5900.0, tick_volatility=0.6),
)
