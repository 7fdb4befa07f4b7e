"""What every account on a shard shares: the symbol table, the price book and the news calendar.

Account entities read the market and never write it; the shard (or replay) updates it from ticks
and calendar entries before handing an event to the accounts.
"""

from __future__ import annotations

import bisect
import enum
from collections import defaultdict
from collections.abc import Mapping

import msgspec

from bridge.instruments import DEFAULT_SYMBOLS, SymbolSpec

Quote = tuple[float, float]
"""Best (bid, ask) of a symbol."""


class Impact(enum.IntEnum):
    LOW = 1
    MEDIUM = 2
    HIGH = 3

    @classmethod
    def named(cls, name: str) -> Impact:
        return cls[name.upper()]


class NewsScheduled(msgspec.Struct, frozen=True, kw_only=True):
    """A calendar entry: an economic release for `currency` at `ts_ns` (its scheduled time)."""

    currency: str
    impact: Impact
    title: str
    ts_ns: int


class NewsCalendar:
    """Scheduled releases by currency, sorted by time, for window queries."""

    def __init__(self) -> None:
        self._times: defaultdict[str, list[int]] = defaultdict(list)
        self._entries: defaultdict[str, list[NewsScheduled]] = defaultdict(list)

    def add(self, entry: NewsScheduled) -> None:
        times = self._times[entry.currency]
        at = bisect.bisect_right(times, entry.ts_ns)
        times.insert(at, entry.ts_ns)
        self._entries[entry.currency].insert(at, entry)

    def __len__(self) -> int:
        return sum(len(times) for times in self._times.values())

    def nearest(
        self, currencies: tuple[str, ...], ts_ns: int, before_ns: int, after_ns: int, least: Impact
    ) -> NewsScheduled | None:
        """The release closest to `ts_ns` whose window `[release - before, release + after]`
        holds `ts_ns`, for any of `currencies` with at least `least` impact; None if none does."""
        found: NewsScheduled | None = None
        for currency in currencies:
            times = self._times.get(currency)
            if not times:
                continue
            entries = self._entries[currency]
            lo = bisect.bisect_left(times, ts_ns - after_ns)
            hi = bisect.bisect_right(times, ts_ns + before_ns)
            for entry in entries[lo:hi]:
                if entry.impact >= least and (
                    found is None or abs(entry.ts_ns - ts_ns) < abs(found.ts_ns - ts_ns)
                ):
                    found = entry
        return found


class Market:
    """Symbols, the latest quote of each, and the news calendar."""

    def __init__(
        self,
        symbols: Mapping[str, SymbolSpec] | None = None,
        calendar: NewsCalendar | None = None,
    ) -> None:
        self.symbols: Mapping[str, SymbolSpec] = DEFAULT_SYMBOLS if symbols is None else symbols
        self.book: dict[str, Quote] = {}
        self.calendar = NewsCalendar() if calendar is None else calendar
        self._conversions: dict[tuple[str, str], tuple[str, bool] | None] = {}

    def conversion(self, currency: str, into: str) -> tuple[str, bool] | None:
        """The pair that converts `currency` into `into`: (symbol, inverted). None if the same.

        `inverted` is True when the pair quotes `into` per `currency` reversed (USDJPY converts
        JPY into USD by dividing). Raises `KeyError` if no symbol joins the two currencies.
        """
        key = (currency, into)
        if key not in self._conversions:
            self._conversions[key] = self._find_conversion(currency, into)
        return self._conversions[key]

    def _find_conversion(self, currency: str, into: str) -> tuple[str, bool] | None:
        if currency == into:
            return None
        for spec in self.symbols.values():
            if spec.base == currency and spec.quote == into:
                return spec.name, False
            if spec.base == into and spec.quote == currency:
                return spec.name, True
        raise KeyError(f"no symbol converts {currency} into {into}")


def to_cents(amount: float) -> int:
    """An account-currency amount in cents (hundredths), rounded half to even."""
    return round(amount * 100)
