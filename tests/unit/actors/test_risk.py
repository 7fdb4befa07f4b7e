"""Risk rows, exposure, the shard's risk feed, the hub's exposure tables and the alert engine."""

from __future__ import annotations

import msgspec
import pytest

from actors.account import Account
from actors.alerts import (
    AlertEngine,
    AlertRule,
    Breach,
    CalendarEntry,
    CurrencyExposure,
    LossLimit,
    NewsExposure,
    PositionNotional,
    Reconciliation,
)
from actors.events import BreachAction, ReconciliationMismatch, RuleBreached, RuleName
from actors.hub import Exposure
from actors.market import Market
from actors.plans import DEFAULT_PLAN, MaxLoss, Phase, Plan
from actors.risk import FUNDED, CurrencyLeg, Leg, RiskFeed, RiskRow, exposure_of, row_of
from actors.shard import ShardCore
from bridge.events import DealEntry, DealExecuted, PriceTicked, Side

FUNDED_PLAN = Plan(
    id="funded-100k",
    name="Funded",
    initial_balance=100_000.0,
    phases=(Phase(name="funded", max_loss=MaxLoss(pct=10.0)),),
)


def deal(
    account: str, deal_id: int, symbol: str, side: Side, volume: float, price: float, ts_ns: int
) -> DealExecuted:
    return DealExecuted(
        event_id=f"deal-{deal_id}",
        ts_ns=ts_ns,
        account_id=account,
        deal_id=deal_id,
        position_id=deal_id,
        symbol=symbol,
        side=side,
        entry=DealEntry.IN,
        volume=volume,
        price=price,
        profit=0.0,
    )


def tick(symbol: str, bid: float, ask: float, ts_ns: int) -> PriceTicked:
    return PriceTicked(
        event_id=f"tick-{symbol}-{ts_ns}", ts_ns=ts_ns, symbol=symbol, bid=bid, ask=ask
    )


def test_row_of_a_long_gbpjpy_position_is_long_pounds_short_yen_valued_in_dollars() -> None:
    core = ShardCore(0)
    core.register([("a1", FUNDED_PLAN)])
    core.apply(
        [
            tick("GBPUSD", 1.2600, 1.2602, 1_000),
            tick("USDJPY", 150.00, 150.02, 1_001),
            tick("GBPJPY", 189.00, 189.04, 1_002),
            deal("a1", 1_000_001, "GBPJPY", Side.BUY, 2.0, 189.04, 2_000),
        ]
    )
    row = row_of(core.accounts["a1"], core.market, "USD")
    assert row.book == FUNDED
    assert row.legs == (
        Leg(symbol="GBPJPY", lots=2.0, notional=round(200_000 * 189.02 / 150.01 * 100)),
    )
    currencies = {c.currency: c for c in row.currencies}
    assert currencies["GBP"].amount == 200_000.0
    assert currencies["GBP"].notional == round(200_000 * 1.2601 * 100)
    assert currencies["JPY"].amount == pytest.approx(-200_000 * 189.02)
    assert currencies["JPY"].notional == round(-200_000 * 189.02 / 150.01 * 100)
    # Equity marks the long at the bid: 2 lots x 0.04 yen down x 100,000, in dollars.
    assert row.equity == 10_000_000 + round(-0.04 * 200_000 / 150.02 * 100)
    assert row.max_used_pct == pytest.approx((10_000_000 - row.equity) * 100 / 1_000_000, abs=0.01)
    assert row.daily_used_pct is None  # the funded plan has no daily limit


def test_exposure_without_a_quote_is_unpriced_not_zero() -> None:
    account = Account.open("a1", FUNDED_PLAN)
    market = Market()
    legs, currencies = exposure_of(account, market, "USD")
    assert legs == ()
    assert currencies == ()
    core = ShardCore(0)
    core.register([("a1", FUNDED_PLAN)])
    core.apply([deal("a1", 1_000_001, "EURUSD", Side.SELL, 1.0, 1.08, 2_000)])
    legs, _ = exposure_of(core.accounts["a1"], core.market, "USD")
    assert legs == (Leg(symbol="EURUSD", lots=-1.0, notional=None),)


def test_feed_sends_a_row_when_an_account_or_its_symbol_moves_and_not_otherwise() -> None:
    core = ShardCore(0)
    core.feed = RiskFeed("USD")
    core.register([("a1", DEFAULT_PLAN), ("a2", DEFAULT_PLAN)])
    core.apply([tick("EURUSD", 1.0800, 1.0801, 1_000)])  # starts both accounts' clocks
    rows, _, _ = core.feed.collect(core.accounts, core.market)
    assert sorted(r.account_id for r in rows) == ["a1", "a2"]
    core.apply([deal("a1", 1_000_001, "EURUSD", Side.BUY, 1.0, 1.0801, 2_000)])
    core.feed.mark(123)
    rows, _, applied = core.feed.collect(core.accounts, core.market)
    assert [r.account_id for r in rows] == ["a1"]
    assert applied == 123
    core.apply([tick("EURUSD", 1.0810, 1.0811, 3_000)])  # a1 holds EURUSD: its equity moved
    rows, _, _ = core.feed.collect(core.accounts, core.market)
    assert [r.account_id for r in rows] == ["a1"]
    assert rows[0].equity == 10_000_000 + round((1.0810 - 1.0801) * 100_000 * 100)
    core.apply([tick("GBPUSD", 1.26, 1.2601, 4_000)])  # nobody holds GBPUSD
    assert core.feed.collect(core.accounts, core.market)[0] == []
    core.feed.resend_all(core.accounts)  # a new hub: everything again
    assert len(core.feed.collect(core.accounts, core.market)[0]) == 2


def test_feed_when_a_position_is_dealt_before_its_quote_then_its_conversion_pair_moves_it() -> None:
    # A euro account at a dollar firm: its own symbols (GBPJPY, EURJPY for its profit) do not
    # include USDJPY, which values the yen leg in the firm's currency.
    euro = msgspec.structs.replace(DEFAULT_PLAN, id="euro", currency="EUR")
    core = ShardCore(0)
    core.feed = RiskFeed("USD")
    core.register([("a1", euro)])
    core.apply([tick("USDJPY", 150.00, 150.01, 1_000), tick("EURJPY", 162.0, 162.02, 1_000)])
    core.apply([deal("a1", 1_000_001, "GBPJPY", Side.BUY, 1.0, 190.0, 2_000)])  # no GBPJPY yet
    core.feed.collect(core.accounts, core.market)
    core.apply([tick("GBPJPY", 190.10, 190.12, 3_000)])  # only a quote: the yen is priced now
    core.feed.collect(core.accounts, core.market)

    core.apply([tick("USDJPY", 151.00, 151.01, 4_000)])  # the yen's value in dollars moved
    rows, _, _ = core.feed.collect(core.accounts, core.market)

    assert [r.account_id for r in rows] == ["a1"]


def test_feed_carries_breaches_and_other_account_events() -> None:
    core = ShardCore(0)
    core.feed = RiskFeed("USD")
    core.register([("a1", DEFAULT_PLAN)])
    core.apply(
        [
            tick("EURUSD", 1.0800, 1.0801, 1_000),
            deal("a1", 1_000_001, "EURUSD", Side.BUY, 10.0, 1.0801, 2_000),
        ]
    )
    core.apply([tick("EURUSD", 1.0200, 1.0201, 3_000)])  # 10 lots x 600 pips: max loss gone
    rows, events, _ = core.feed.collect(core.accounts, core.market)
    kinds = [type(e).__name__ for e in events]
    assert "RuleBreached" in kinds
    assert rows[0].status == "failed"
    assert rows[0].max_used_pct is None  # not trading any more


def _row(
    account: str, book: str, legs: tuple[Leg, ...], currencies: tuple[CurrencyLeg, ...]
) -> RiskRow:
    return RiskRow(
        account_id=account,
        plan="p",
        phase="x",
        book=book,
        status="active",
        frozen=False,
        currency="USD",
        balance=0,
        equity=0,
        daily_floor=None,
        max_floor=None,
        daily_used_pct=None,
        max_used_pct=None,
        legs=legs,
        currencies=currencies,
        ts_ns=0,
    )


def test_exposure_tables_add_new_rows_and_take_old_ones_away() -> None:
    book = Exposure()
    long_gbp = _row(
        "a1",
        FUNDED,
        (Leg(symbol="GBPUSD", lots=1.0, notional=126_000_00),),
        (CurrencyLeg(currency="GBP", amount=100_000, notional=126_000_00),),
    )
    short_gbp = _row(
        "a2",
        FUNDED,
        (Leg(symbol="GBPUSD", lots=-0.5, notional=-63_000_00),),
        (CurrencyLeg(currency="GBP", amount=-50_000, notional=-63_000_00),),
    )
    unpriced = _row("a3", FUNDED, (Leg(symbol="XAUUSD", lots=1.0, notional=None),), ())
    for row in (long_gbp, short_gbp, unpriced):
        book.add(row, 1)
    assert book.net() == {"GBP": 63_000_00}
    lines = {line.name: line for line in Exposure.lines(book.symbols)}
    assert lines["GBPUSD"].amount == 0.5
    assert lines["GBPUSD"].accounts == 2
    assert lines["XAUUSD"].unpriced == 1
    assert lines["XAUUSD"].notional == 0
    book.add(long_gbp, -1)  # a1 closed
    assert book.net() == {"GBP": -63_000_00}
    book.add(short_gbp, -1)
    assert book.net() == {}


def _rule(condition: object, severity: str = "warning") -> AlertRule:
    return msgspec.convert(
        {
            "id": "r1",
            "name": "n",
            "severity": severity,
            "condition": msgspec.to_builtins(condition),
        },
        AlertRule,
    )


def _used(pct: float, book: str = FUNDED) -> RiskRow:
    return msgspec.structs.replace(_row("a1", book, (), ()), daily_used_pct=pct, max_used_pct=1.0)


def test_loss_limit_alert_raises_once_while_it_holds_and_again_after_it_clears() -> None:
    engine = AlertEngine([_rule(LossLimit(pct=90.0, limit="daily_loss"))])
    assert engine.on_row(_used(85.0), None, 1) == []
    raised = engine.on_row(_used(90.5), "trd_1", 2)
    assert [(a.account_id, a.trader_id, a.subject, a.value) for a in raised] == [
        ("a1", "trd_1", "daily_loss", 90.5)
    ]
    assert engine.on_row(_used(95.0), None, 3) == []
    assert engine.on_row(_used(89.0), None, 4) == []  # within the margin: still holding
    assert engine.on_row(_used(91.0), None, 5) == []
    assert engine.on_row(_used(87.0), None, 6) == []  # cleared
    assert len(engine.on_row(_used(92.0), None, 7)) == 1


def test_loss_limit_alert_only_watches_its_book() -> None:
    engine = AlertEngine([_rule(LossLimit(pct=50.0, book="evaluation"))])
    assert engine.on_row(_used(99.0, FUNDED), None, 1) == []
    assert len(engine.on_row(_used(99.0, "evaluation"), None, 1)) == 1


def test_position_alert_clears_when_the_position_closes() -> None:
    engine = AlertEngine([_rule(PositionNotional(threshold=100_000_00))])
    big = _row("a1", FUNDED, (Leg(symbol="GBPJPY", lots=-2.0, notional=-180_000_00),), ())
    flat = _row("a1", FUNDED, (), ())
    assert [a.subject for a in engine.on_row(big, None, 1)] == ["GBPJPY"]
    assert engine.on_row(big, None, 2) == []
    assert engine.on_row(flat, None, 3) == []
    assert len(engine.on_row(big, None, 4)) == 1


def test_currency_exposure_alert_per_book_and_currency_never_the_firm_currency() -> None:
    engine = AlertEngine([_rule(CurrencyExposure(threshold=1_000_000_00, book="funded"))])
    assert engine.on_exposure("evaluation", {"JPY": -5_000_000_00}, 1) == []
    raised = engine.on_exposure("funded", {"JPY": -5_000_000_00, "USD": 9_000_000_00}, 1)
    assert [a.subject for a in raised] == ["funded:JPY"]
    assert engine.on_exposure("funded", {"JPY": -5_000_000_00}, 2) == []


def test_news_alert_needs_a_release_soon_enough_big_enough_and_on_held_exposure() -> None:
    engine = AlertEngine(
        [_rule(NewsExposure(minutes=30, threshold=100_000_00, impact="high"), "critical")]
    )
    minute = 60 * 10**9
    boe = CalendarEntry(id="c1", currency="GBP", impact="high", title="BoE rate", ts_ns=40 * minute)
    cpi = CalendarEntry(id="c2", currency="GBP", impact="medium", title="CPI", ts_ns=20 * minute)
    held = {"GBP": 180_000_00}
    assert engine.on_clock(0, [boe, cpi], held) == []  # BoE 40 min away, CPI not high impact
    assert engine.on_clock(15 * minute, [boe], {"GBP": 50_000_00}) == []  # too small
    raised = engine.on_clock(15 * minute, [boe, cpi], held)
    assert [(a.subject, a.severity) for a in raised] == [("GBP: BoE rate", "critical")]
    assert engine.on_clock(16 * minute, [boe], held) == []  # once per release
    assert engine.on_clock(41 * minute, [boe], held) == []  # past


def test_breach_and_reconciliation_alerts_once_per_event() -> None:
    engine = AlertEngine(
        [
            AlertRule(id="b", name="b", condition=Breach(failing_only=True)),
            AlertRule(id="r", name="r", severity="critical", condition=Reconciliation()),
        ]
    )
    fail = RuleBreached(
        event_id="x1",
        ts_ns=1,
        account_id="a1",
        caused_by="d",
        rule=RuleName.MAX_LOSS,
        action=BreachAction.FAIL,
        value=-1.0,
        limit=0.0,
        phase="p",
    )
    strike = msgspec.structs.replace(fail, event_id="x2", action=BreachAction.STRIKE)
    assert len(engine.on_event(fail, None, 1)) == 1
    assert engine.on_event(fail, None, 2) == []  # delivered again after a shard restart
    assert engine.on_event(strike, None, 3) == []
    mismatch = ReconciliationMismatch(
        event_id="m1",
        ts_ns=1,
        account_id="a1",
        caused_by="r",
        balance=1,
        equity=2,
        platform_balance=1,
        platform_equity=5,
        detail="equity",
    )
    assert [a.severity for a in engine.on_event(mismatch, None, 4)] == ["critical"]


def test_a_disabled_or_removed_rule_raises_nothing() -> None:
    rule = msgspec.structs.replace(_rule(LossLimit(pct=10.0)), enabled=False)
    assert AlertEngine([rule]).on_row(_used(99.0), None, 1) == []


def test_currency_alert_clears_when_the_whole_exposure_goes_and_raises_again() -> None:
    engine = AlertEngine([_rule(CurrencyExposure(threshold=1_000_000_00))])
    assert len(engine.on_exposure("funded", {"GBP": 5_000_000_00}, 1)) == 1
    assert engine.on_exposure("funded", {}, 2) == []  # every GBP position closed
    assert len(engine.on_exposure("funded", {"GBP": 5_000_000_00}, 3)) == 1
