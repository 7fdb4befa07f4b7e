"""Equity invariant: the entity's equity equals a brute-force recomputation after every event."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.account import Account
from bridge.events import (
    AnyPlatformEvent,
    BalanceOperated,
    DealEntry,
    DealExecuted,
    PriceTicked,
    Side,
)
from bridge.instruments import DEFAULT_INSTRUMENTS, INSTRUMENTS_BY_SYMBOL

from .builders import PLAN, balance, deal, tick

SYMBOLS = [i.symbol for i in DEFAULT_INSTRUMENTS] + ["ODDSYM"]  # ODDSYM: no instrument spec


def contract_size(symbol: str) -> float:
    spec = INSTRUMENTS_BY_SYMBOL.get(symbol)
    return spec.contract_size if spec else 1.0


@dataclass
class Lot:
    symbol: str
    side: Side
    volume: float
    price: float


@dataclass
class BruteForce:
    """An independent model: cash flows, open positions, the last quote of every symbol."""

    cash: list[float] = field(default_factory=list)
    positions: dict[int, Lot] = field(default_factory=dict)
    quotes: dict[str, tuple[float, float]] = field(default_factory=dict)

    def equity(self) -> float:
        floating = []
        for lot in self.positions.values():
            if lot.symbol not in self.quotes:
                continue  # nothing to mark against yet
            bid, ask = self.quotes[lot.symbol]
            move = bid - lot.price if lot.side is Side.BUY else lot.price - ask
            floating.append(move * lot.volume * contract_size(lot.symbol))
        return math.fsum([PLAN.initial_balance, *self.cash, *floating])


@dataclass
class Script:
    """Turns abstract steps into platform events, keeping the brute-force model in step."""

    model: BruteForce = field(default_factory=BruteForce)
    events: list[AnyPlatformEvent] = field(default_factory=list)
    next_deal: int = 1

    def price(self, symbol: str) -> tuple[float, float]:
        if symbol in self.model.quotes:
            return self.model.quotes[symbol]
        spec = INSTRUMENTS_BY_SYMBOL.get(symbol)
        start = spec.start_price if spec else 50.0
        return start, start

    def deal_id(self) -> int:
        self.next_deal += 1
        return self.next_deal - 1

    def tick(self, symbol: str, move: float, spread: float) -> None:
        bid = self.price(symbol)[0] * (1 + move)
        ask = bid * (1 + spread)
        self.model.quotes[symbol] = (bid, ask)
        self.events.append(tick(symbol, bid, ask, event_id=f"t{len(self.events)}"))

    def fill(self, symbol: str, side: Side, slip: float) -> float:
        """A fill near the market: buys at the ask, sells at the bid, with some slippage."""
        bid, ask = self.price(symbol)
        return (ask if side is Side.BUY else bid) * (1 + slip)

    def open(self, symbol: str, side: Side, volume: float, commission: float, slip: float) -> None:
        price = self.fill(symbol, side, slip)
        ident = self.deal_id()
        self.model.positions[ident] = Lot(symbol, side, volume, price)
        self.model.cash.append(commission)
        self.events.append(
            deal(ident, symbol=symbol, side=side, volume=volume, price=price, commission=commission)
        )

    def add(self, pick: int, volume: float, slip: float) -> None:
        if not self.model.positions:
            return
        position_id = sorted(self.model.positions)[pick % len(self.model.positions)]
        lot = self.model.positions[position_id]
        price = self.fill(lot.symbol, lot.side, slip)
        lot.price = (lot.price * lot.volume + price * volume) / (lot.volume + volume)
        lot.volume += volume
        self.events.append(
            deal(
                self.deal_id(),
                symbol=lot.symbol,
                side=lot.side,
                volume=volume,
                price=price,
                position_id=position_id,
            )
        )

    def close(self, pick: int, fraction: float, swap: float) -> None:
        if not self.model.positions:
            return
        position_id = sorted(self.model.positions)[pick % len(self.model.positions)]
        lot = self.model.positions[position_id]
        volume = lot.volume if fraction >= 1.0 else round(lot.volume * fraction, 2) or 0.01
        bid, ask = self.price(lot.symbol)
        price, closing = (bid, Side.SELL) if lot.side is Side.BUY else (ask, Side.BUY)
        direction = 1 if lot.side is Side.BUY else -1
        profit = round((price - lot.price) * direction * volume * contract_size(lot.symbol), 2)
        if lot.volume - volume <= 1e-9:
            del self.model.positions[position_id]
        else:
            lot.volume -= volume
        self.model.cash += [profit, swap]
        self.events.append(
            deal(
                self.deal_id(),
                entry=DealEntry.OUT,
                side=closing,
                symbol=lot.symbol,
                volume=volume,
                price=price,
                position_id=position_id,
                profit=profit,
                swap=swap,
            )
        )

    def balance(self, amount: float) -> None:
        self.model.cash.append(amount)
        self.events.append(balance(self.deal_id(), amount))

    def replay(self, pick: int) -> None:
        """Send an already-applied deal again: the model ignores it, so must the entity."""
        old = [e for e in self.events if isinstance(e, DealExecuted | BalanceOperated)]
        if old:
            self.events.append(old[pick % len(old)])


symbol = st.sampled_from(SYMBOLS)
money = st.floats(min_value=-500.0, max_value=500.0, allow_nan=False).map(lambda x: round(x, 2))
charge = money.map(lambda m: -abs(m))
slip = st.floats(min_value=-0.01, max_value=0.01)
lots = st.integers(min_value=1, max_value=1000).map(lambda n: n / 100)
step = st.one_of(
    st.tuples(st.just("tick"), symbol, st.floats(-0.02, 0.02), st.floats(0.0, 0.001)),
    st.tuples(st.just("open"), symbol, st.sampled_from(Side), lots, charge, slip),
    st.tuples(st.just("add"), st.integers(0, 50), lots, slip),
    st.tuples(st.just("close"), st.integers(0, 50), st.sampled_from([0.25, 0.5, 1.0]), money),
    st.tuples(st.just("balance"), money),
    st.tuples(st.just("replay"), st.integers(0, 50)),
)


@settings(max_examples=25, deadline=None, database=None)
@given(steps=st.lists(step, min_size=5, max_size=60))
def test_equity_after_any_deals_and_ticks_then_equals_brute_force_recomputation(
    steps: list[tuple[object, ...]],
) -> None:
    script = Script()
    account = Account.open("A", PLAN)
    book: dict[str, tuple[float, float]] = {}

    for name, *args in steps:
        applied = len(script.events)
        getattr(script, str(name))(*args)
        for event in script.events[applied:]:
            if isinstance(event, PriceTicked):
                book[event.symbol] = (event.bid, event.ask)
            account.apply(event, book)

        assert math.isclose(account.equity, script.model.equity(), rel_tol=0.0, abs_tol=1e-6)
        assert set(account.positions) == set(script.model.positions)
