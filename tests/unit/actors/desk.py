"""A desk for rule tests: one account and its market, fed the way a shard feeds it.

Shared by the `test_rules_*` files; money in assertions is integer cents.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from actors.account import Account, Effect
from actors.events import (
    BreachAction,
    PhaseFailed,
    RuleBreached,
    RuleName,
    RuleProgressed,
)
from actors.market import Market
from actors.plans import Plan
from bridge.commands import DisableTrading
from bridge.events import (
    BalanceKind,
    BalanceOperated,
    DealEntry,
    DealExecuted,
    PriceTicked,
    Side,
)

MINUTE = 60 * 1_000_000_000
MONDAY = 1_772_442_000 * 1_000_000_000  # 2026-03-02T09:00:00Z, 10:00 in Prague (CET)


# -- helpers -----------------------------------------------------------------------------------


def cents(dollars: float) -> int:
    return round(dollars * 100)


def make_plan(
    *,
    initial: float = 100_000.0,
    rollover: dict[str, str] | None = None,
    warning_levels: list[float] | None = None,
    **rules: object,
) -> Plan:
    data: dict[str, Any] = {
        "id": "firm",
        "name": "Firm program",
        "initial_balance": initial,
        "phases": [{"name": "challenge", **rules}],
    }
    if rollover is not None:
        data["day_rollover"] = rollover
    if warning_levels is not None:
        data["warning_levels"] = warning_levels
    return msgspec.convert(data, type=Plan)


class Desk:
    """One account and the market the shard hands it; ids and time count up by themselves.

    US500 (contract size 1, USD) at 5000 is the default instrument: one point on one lot is one
    dollar, so a position of 100 lots moves equity by $100 per point and losses are exact.
    """

    def __init__(self, plan: Plan, start_ns: int = MONDAY) -> None:
        self.account = Account.open("A", plan)
        self.market = Market()
        self.now = start_ns
        self.ids = 0
        self.sides: dict[int, Side] = {}
        self.account.advance(start_ns, "start", self.market.book)

    def _step(self, ts_ns: int | None) -> int:
        self.now = self.now + MINUTE if ts_ns is None else ts_ns
        self.ids += 1
        return self.ids

    def clock(self, ts_ns: int) -> list[Effect]:
        self.now = ts_ns
        return self.account.advance(ts_ns, f"clock@{ts_ns}", self.market.book)

    def next_day(self) -> list[Effect]:
        """Let time run to one minute past the next day boundary."""
        return self.clock(self.account.next_rollover_ns + MINUTE)

    def tick(
        self, symbol: str, bid: float, ask: float | None = None, ts_ns: int | None = None
    ) -> list[Effect]:
        n = self._step(ts_ns)
        ask = bid if ask is None else ask
        self.market.book[symbol] = (bid, ask)
        event = PriceTicked(event_id=f"t{n}", ts_ns=self.now, symbol=symbol, bid=bid, ask=ask)
        return self.account.apply(event, self.market)

    def deal(
        self,
        position: int,
        entry: DealEntry,
        side: Side,
        symbol: str,
        lots: float,
        price: float,
        ts_ns: int | None = None,
        **money: float,
    ) -> list[Effect]:
        n = self._step(ts_ns)
        event = DealExecuted(
            event_id=f"d{n}",
            ts_ns=self.now,
            account_id="A",
            deal_id=n,
            position_id=position,
            symbol=symbol,
            entry=entry,
            side=side,
            volume=lots,
            price=price,
            **money,
        )
        return self.account.apply(event, self.market)

    def open(
        self,
        symbol: str = "US500",
        lots: float = 100.0,
        price: float = 5000.0,
        *,
        sell: bool = False,
        position: int | None = None,
        ts_ns: int | None = None,
        commission: float = 0.0,
    ) -> int:
        """Open (or add to) a position; returns its id."""
        side = Side.SELL if sell else Side.BUY
        position = self.ids + 1 if position is None else position
        self.sides[position] = side
        self.deal(position, DealEntry.IN, side, symbol, lots, price, ts_ns, commission=commission)
        return position

    def close(
        self,
        position: int,
        symbol: str = "US500",
        lots: float = 100.0,
        price: float = 5000.0,
        *,
        ts_ns: int | None = None,
        **money: float,
    ) -> list[Effect]:
        side = Side.BUY if self.sides[position] is Side.SELL else Side.SELL
        return self.deal(position, DealEntry.OUT, side, symbol, lots, price, ts_ns, **money)

    def realise(self, profit: float, ts_ns: int | None = None) -> list[Effect]:
        """A one-lot US500 round trip that books `profit` (closed P&L)."""
        position = self.open(lots=1.0, ts_ns=ts_ns)
        return self.close(position, lots=1.0, profit=profit, ts_ns=ts_ns)

    def money(self, kind: BalanceKind, amount: float) -> list[Effect]:
        n = self._step(None)
        event = BalanceOperated(
            event_id=f"b{n}", ts_ns=self.now, account_id="A", deal_id=n, kind=kind, amount=amount
        )
        return self.account.apply(event, self.market)

    def hold(self, lots: float = 100.0) -> None:
        """Open the long US500 position that `float_at` and `equity_at` move."""
        self.held_lots = lots
        self.held = self.open(lots=lots)
        self.tick("US500", 5000.0)

    def float_at(self, floating: float) -> list[Effect]:
        """Tick US500 so the held position floats at `floating` dollars."""
        return self.tick("US500", 5000.0 + floating / self.held_lots)

    def equity_at(self, equity: float) -> list[Effect]:
        effects = self.float_at(equity - (self.account.balance + self.account.credit) / 100)
        assert self.account.equity == cents(equity)
        return effects


def breaches(effects: list[Effect], rule: RuleName | None = None) -> list[RuleBreached]:
    return [e for e in effects if isinstance(e, RuleBreached) and rule in (None, e.rule)]


def outcome(effects: list[Effect]) -> list[Effect]:
    """Effects that change or judge the account: everything but warnings."""
    return [e for e in effects if not isinstance(e, RuleProgressed)]


def progressed(effects: list[Effect]) -> list[tuple[RuleName, float]]:
    return [(e.rule, e.level) for e in effects if isinstance(e, RuleProgressed)]


def assert_failed(effects: list[Effect], rule: RuleName, value: float, limit: float) -> None:
    """The documented failure: RuleBreached (fail), PhaseFailed and a DisableTrading command."""
    (breach,) = breaches(effects, rule)
    assert breach.action is BreachAction.FAIL
    assert (breach.value, breach.limit) == (pytest.approx(value), pytest.approx(limit))
    assert [e.rule for e in effects if isinstance(e, PhaseFailed)] == [rule]
    assert [e.reason for e in effects if isinstance(e, DisableTrading)] == [rule.value]
