"""Price bands: per shard, which accounts a tick can change, found with one vectorised comparison.

`Account.on_tick` runs rules only when equity leaves the open bracket `(low, high)`. For each
account the band is a relative half-width ε around the book at the time it was computed
(`bid0`, `ask0` of every symbol its equity depends on: each position's symbol and its conversion
symbol): while every such symbol's bid stays in `[bid0·(1-ε), bid0·(1+ε)]` and its ask in
`[ask0·(1-ε), ask0·(1+ε)]`, equity stays strictly inside `(low, high)`, so `on_tick` would only
re-mark positions. A tick outside the band must be given to the account (and the band then
recomputed with `BandIndex.update`); a tick inside it may be skipped. One ε covers all of the
account's symbols moving at once.

Derivation (money in account-currency units, ε ≤ ε_max = 0.05). A position of volume v, contract
size c, open price o is marked at q = bid (long) or ask (short): raw = ±(q - o)·v·c, so
|Δraw| ≤ ε·X with X = v·c·q0. Without a conversion the value is raw: S = X.
With a multiplied conversion the value is raw·r, r = bid_R if raw ≥ 0 else ask_R; let hi and lo be
the larger and smaller of bid_R0, ask_R0, so every rate in the band is in [lo·(1-ε), hi·(1+ε)].
If raw keeps its sign, r keeps its side and |r' - r0| ≤ ε·r0: Δ = Δraw·r' + raw0·(r' - r0) gives
|Δ| ≤ ε·X·hi·(1+ε_max) + ε·|raw0|·hi. If the sign flips, |raw'| + |raw0| = |Δraw| and
|Δ| ≤ |raw'|·r' + |raw0|·r0 ≤ ε·X·hi·(1+ε_max). Either way |Δ| ≤ ε·S, S = (X·(1+ε_max) + |raw0|)·hi.
With a divided (inverted) conversion the value is raw/r, r = ask_R if raw ≥ 0 else bid_R, and
every rate in the band is at least R_min = lo·(1-ε_max). Same side: Δ = Δraw/r' + raw0·(r0 - r')
/(r'·r0) with |r0 - r'| ≤ ε·r0, so |Δ| ≤ ε·(X + |raw0|)/R_min; a flip: |Δ| ≤ |raw'|/r' +
|raw0|/r0 ≤ ε·X/R_min. So S = (X + |raw0|)/R_min. A spread never enters: at a flip both values
are near zero whichever side is used.
Each bound lets the position's quote and its rate move independently, so it also holds when a
position's symbol is its own conversion (USDJPY in a USD account), and one ε covers every symbol
moving at once. Each value is rounded to cents, and |round(a) - round(b)| ≤ |a - b| + 1, so equity
(exact at the book: balance + credit + each `Position.value`) moves by at most
D = 100·ε·ΣS + n cents for n positions. It stays strictly inside (low, high) if
D ≤ min(E0 - low, high - E0) - 1, i.e. ε ≤ room / (100·ΣS) with
room = min(E0 - low, high - E0) - n - 1. We take ε = min(ε_max, 0.9·room / (100·ΣS)): the factor
0.9 is a margin for floating-point error in the marks and in the band's bounds, which is also why a
band narrower than 1e-12 is not kept.

An account that cannot move or cannot be evaluated on a tick (flat, not started, or with neither a
low nor a high: failed, passed, or no equity rule) holds no slots. One whose room is not positive,
or with a quote missing from the book, holds an empty band: every tick of its symbols leaves it.
The band covers equity only: a day boundary and every account event (deal, balance, clock,
trading disabled) must be followed by `update`, as must every `on_tick` given to the account.
A skipped tick also leaves `account.floating` as it was: whatever reads equity without re-marking
the positions first (`Account.advance` at a day boundary, a balance operation) must re-mark them
at the book, or it sees the equity of the last evaluation, not the current one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

import numpy as np
import numpy.typing as npt

from actors.account import Account, Position
from actors.market import Quote
from actors.rules import NO_LIMIT, NO_TRIGGER

EPS_MAX: Final = 0.05
"""The widest band, relative; the derivation's rate bounds assume ε never exceeds it."""
SAFETY: Final = 0.9
"""The share of the proven width that is used: the rest is margin for floating-point error."""
MIN_WIDTH: Final = 1e-12
"""A narrower band is not kept (evaluate on every tick): below it float error could matter."""
NEVER: Final = math.inf
"""Half-width of an account no quote can change: it holds no slots."""
EVERY_TICK: Final = 0.0
"""Half-width of an account that must see every tick of its symbols (an empty band)."""

_INITIAL_CAPACITY = 64
Floats = npt.NDArray[np.float64]


# The half-width ------------------------------------------------------------------------------


def half_width(account: Account, book: dict[str, Quote]) -> float:
    """The band's relative half-width ε for `account` at `book`: NEVER, EVERY_TICK or in
    (0, EPS_MAX]. See the module docstring for why it is safe."""
    low, high = account.low, account.high
    if not account.positions or not account.started or (low == NO_LIMIT and high == NO_TRIGGER):
        return NEVER
    total = 0.0
    equity = account.balance + account.credit
    for position in account.positions.values():
        sensitivity = _sensitivity(position, book)
        if sensitivity is None:
            return EVERY_TICK
        total += sensitivity
        equity += position.value(book)
    below = math.inf if low == NO_LIMIT else equity - low
    above = math.inf if high == NO_TRIGGER else high - equity
    room = min(below, above) - len(account.positions) - 1
    if room <= 0:
        return EVERY_TICK
    if total <= 0.0:
        return EPS_MAX
    width = min(EPS_MAX, SAFETY * room / (100.0 * total))
    return width if width >= MIN_WIDTH else EVERY_TICK


def _sensitivity(position: Position, book: Mapping[str, Quote]) -> float | None:
    """S with |Δvalue| ≤ ε·S (account-currency units) in the band; None if a quote is missing."""
    quote = _usable(book.get(position.symbol))
    if quote is None:
        return None
    units = position.volume * position.contract_size
    price = quote[0] if position.buy else quote[1]
    exposure = abs(units * price)
    if position.conversion is None:
        return exposure
    rate = _usable(book.get(position.conversion))
    if rate is None:
        return None
    raw = abs((price - position.open_price) * units)
    hi, lo = max(rate), min(rate)
    if position.inverted:
        return (exposure + raw) / (lo * (1.0 - EPS_MAX))
    return (exposure * (1.0 + EPS_MAX) + raw) * hi


def _usable(quote: Quote | None) -> Quote | None:
    """The quote if both sides are finite and positive (the bounds assume it), else None."""
    if quote is not None and 0.0 < quote[0] < math.inf and 0.0 < quote[1] < math.inf:
        return quote
    return None


# The index -----------------------------------------------------------------------------------


class _Table:
    """One symbol's slots: bid and ask bounds per slot, the account in each, and free slots.

    Slots `[0, size)` are scanned; a free slot holds (-inf, +inf) bounds, which no quote leaves.
    """

    __slots__ = ("ask_hi", "ask_lo", "bid_hi", "bid_lo", "free", "ids", "size")

    def __init__(self) -> None:
        self.bid_lo: Floats = np.full(_INITIAL_CAPACITY, -np.inf)
        self.bid_hi: Floats = np.full(_INITIAL_CAPACITY, np.inf)
        self.ask_lo: Floats = np.full(_INITIAL_CAPACITY, -np.inf)
        self.ask_hi: Floats = np.full(_INITIAL_CAPACITY, np.inf)
        self.ids: list[str] = []
        self.free: list[int] = []
        self.size = 0

    def take(self, account_id: str) -> int:
        """A slot for `account_id`: a freed one if any, else the next, doubling when full."""
        if self.free:
            slot = self.free.pop()
            self.ids[slot] = account_id
            return slot
        if self.size == len(self.bid_lo):
            self._grow()
        slot = self.size
        self.size += 1
        self.ids.append(account_id)
        return slot

    def _grow(self) -> None:
        capacity = 2 * len(self.bid_lo)
        self.bid_lo = _grown(self.bid_lo, capacity, -np.inf)
        self.bid_hi = _grown(self.bid_hi, capacity, np.inf)
        self.ask_lo = _grown(self.ask_lo, capacity, -np.inf)
        self.ask_hi = _grown(self.ask_hi, capacity, np.inf)

    def put(self, slot: int, bid: tuple[float, float], ask: tuple[float, float]) -> None:
        self.bid_lo[slot], self.bid_hi[slot] = bid
        self.ask_lo[slot], self.ask_hi[slot] = ask

    def release(self, slot: int) -> None:
        self.put(slot, (-math.inf, math.inf), (-math.inf, math.inf))
        self.ids[slot] = ""
        self.free.append(slot)

    def leaving(self, bid: float, ask: float) -> list[str]:
        n = self.size
        outside = (
            (bid < self.bid_lo[:n])
            | (bid > self.bid_hi[:n])
            | (ask < self.ask_lo[:n])
            | (ask > self.ask_hi[:n])
        )
        ids = self.ids
        return [ids[slot] for slot in np.flatnonzero(outside).tolist()]


def _grown(array: Floats, capacity: int, fill: float) -> Floats:
    bigger: Floats = np.full(capacity, fill)
    bigger[: len(array)] = array
    return bigger


_EMPTY = ((math.inf, -math.inf), (math.inf, -math.inf))  # every quote leaves it


def _bounds(quote: Quote | None, width: float) -> tuple[tuple[float, float], tuple[float, float]]:
    if width == EVERY_TICK or quote is None:
        return _EMPTY
    bid, ask = quote
    return (bid * (1.0 - width), bid * (1.0 + width)), (ask * (1.0 - width), ask * (1.0 + width))


class BandIndex:
    """A shard's price bands: per symbol, the accounts whose band a quote on it would leave."""

    def __init__(self) -> None:
        self._tables: dict[str, _Table] = {}
        self._slots: dict[str, dict[str, int]] = {}  # account -> symbol -> slot

    def update(self, account_id: str, account: Account, book: dict[str, Quote]) -> None:
        """(Re)compute the account's band at `book` and place it on every symbol it depends on;
        drop it from symbols it no longer depends on."""
        width = half_width(account, book)
        symbols = set() if width == NEVER else account.symbols()
        held = self._slots.get(account_id)
        if held is None or held.keys() != symbols:
            held = self._place(account_id, symbols)
        tables = self._tables
        for symbol, slot in held.items():
            tables[symbol].put(slot, *_bounds(book.get(symbol), width))

    def _place(self, account_id: str, symbols: set[str]) -> dict[str, int]:
        """Give the account a slot on exactly `symbols`; returns its slots."""
        held = self._slots.pop(account_id, {})
        for symbol in [s for s in held if s not in symbols]:
            self._tables[symbol].release(held.pop(symbol))
        for symbol in symbols - held.keys():
            table = self._tables.get(symbol)
            if table is None:
                table = self._tables[symbol] = _Table()
            held[symbol] = table.take(account_id)
        if held:
            self._slots[account_id] = held
        return held

    def remove(self, account_id: str) -> None:
        """Forget the account: its slots are freed and never match again."""
        for symbol, slot in self._slots.pop(account_id, {}).items():
            self._tables[symbol].release(slot)

    def leaving(self, symbol: str, bid: float, ask: float) -> list[str]:
        """Ids of the accounts whose band on `symbol` this quote leaves, in slot order."""
        table = self._tables.get(symbol)
        return [] if table is None else table.leaving(bid, ask)

    def symbols(self, account_id: str) -> set[str]:
        """The symbols on which the account has a band."""
        return set(self._slots.get(account_id, ()))

    def slots(self, symbol: str) -> int:
        """Accounts holding a band on `symbol`."""
        table = self._tables.get(symbol)
        return 0 if table is None else table.size - len(table.free)

    def __len__(self) -> int:
        """Accounts holding at least one band."""
        return len(self._slots)

    def __contains__(self, account_id: object) -> bool:
        return account_id in self._slots
