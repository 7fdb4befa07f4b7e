"""Calendar and deal rules as firms publish them: `max_days`, `inactivity`, `weekend_holding`,
`news_trading` and `max_lots`.

Every case quotes the sentence of a firm's public rule text it reproduces (`wording`), with the firm
and page named. The contract is `docs/rules.md`; money in assertions is integer cents.
"""

from __future__ import annotations

import datetime as dt

import pytest

from actors.account import Effect
from actors.events import (
    AccountStatus,
    BreachAction,
    PhaseFailed,
    PhasePassed,
    RuleName,
)
from actors.market import Impact, NewsScheduled
from bridge.commands import CloseAllPositions, DisableTrading

from .desk import (
    MINUTE,
    Desk,
    assert_failed,
    breaches,
    cents,
    make_plan,
    outcome,
)

SECOND = 1_000_000_000
PRAGUE = {"timezone": "Europe/Prague", "time": "00:00"}
NEW_YORK = {"timezone": "America/New_York", "time": "17:00"}


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    moment = dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC)
    return int(moment.timestamp()) * 1_000_000_000


def passed(effects: list[Effect]) -> list[PhasePassed]:
    return [e for e in effects if isinstance(e, PhasePassed)]


# -- max_days -------------------------------------------------------------------------------------

FTMO_PERIOD = (
    # tradingfunder.com/ftmo-evaluation-rules-everything-you-need-to-know/ (secondary, on FTMO's
    # former trading period):
    "The duration required for a trader to complete the FTMO Challenge is 30 calendar days while "
    "for the Verification, it is 60 calendar days."
)
APRIL_1_PRAGUE = utc(2026, 3, 31, 22)  # 2026-04-01 00:00 CEST: the start of day 31 from 2 March


@pytest.mark.parametrize(
    ("first_event", "days"),
    [
        pytest.param(utc(2026, 3, 2, 9), 30, id="account-starts-the-day-of-its-first-trade"),
        pytest.param(utc(2026, 2, 23, 9), 30, id="idle-week-before-first-trade-not-counted"),
    ],
)
def test_max_days_when_day_after_the_last_allowed_starts_then_phase_fails_at_that_boundary(
    first_event: int, days: int
) -> None:
    # FTMO_PERIOD
    desk = Desk(make_plan(rollover=PRAGUE, max_days={"days": days}), start_ns=first_event)
    desk.clock(utc(2026, 3, 2, 8))
    desk.realise(100.0)  # first trade: Monday 2 March is day 1

    assert desk.clock(APRIL_1_PRAGUE - 1) == []  # 31 March is day 30
    effects = desk.clock(utc(2026, 4, 1, 6))

    assert_failed(effects, RuleName.MAX_DAYS, value=30, limit=30)
    (breach,) = breaches(effects)
    assert breach.ts_ns == APRIL_1_PRAGUE


def test_max_days_when_zero_then_unlimited() -> None:
    # FTMO, "Trading Objectives" (ftmo.com/en/trading-objectives): "There is no time limit for
    # the FTMO Challenge" is the current program; docs/rules.md: "`0` means unlimited."
    desk = Desk(make_plan(max_days={"days": 0}))
    desk.realise(100.0)

    assert desk.clock(utc(2026, 12, 31)) == []
    assert desk.account.status is AccountStatus.ACTIVE


def test_max_days_when_account_never_trades_then_the_count_does_not_start() -> None:
    # FTMO_PERIOD; docs/rules.md: "counted from the day of the first trade".
    desk = Desk(make_plan(max_days={"days": 30}))

    assert desk.clock(utc(2026, 6, 1)) == []


# -- inactivity -----------------------------------------------------------------------------------

BRIGHTFUNDED_TRADED = (
    # BrightFunded, "Inactivity Rule Policy" (help.brightfunded.com/en/articles/11774572):
    "Any trader who has executed at least one trade on their Account must place another trade "
    "within 30 calendar days from the date their last trade was closed."
)
BRIGHTFUNDED_NEVER = (
    # BrightFunded, same page:
    "If a trader receives an account but does not place any trades, they must execute their "
    "first trade within 30 calendar days from the date the Account was assigned."
)


@pytest.mark.parametrize(
    ("deals", "fails_at", "wording"),
    [
        pytest.param(
            [utc(2026, 3, 2, 10)],
            utc(2026, 4, 1, 22),  # 2026-04-02 00:00 CEST: 30 whole days (3 Mar .. 1 Apr) idle
            BRIGHTFUNDED_TRADED,
            id="counted-from-last-deal",
        ),
        pytest.param(
            [],
            utc(2026, 4, 1, 22),
            BRIGHTFUNDED_NEVER,
            id="never-traded-counted-from-first-day",
        ),
        pytest.param(
            [utc(2026, 3, 2, 10), utc(2026, 3, 20, 10)],
            utc(2026, 4, 19, 22),  # 2026-04-20 00:00 CEST
            BRIGHTFUNDED_TRADED,
            id="a-later-deal-restarts-the-count",
        ),
    ],
)
def test_inactivity_when_days_pass_without_a_deal_then_phase_fails_at_the_boundary(
    deals: list[int], fails_at: int, wording: str
) -> None:
    desk = Desk(make_plan(rollover=PRAGUE, inactivity={"days": 30}), start_ns=utc(2026, 3, 2, 9))
    for ts in deals:
        desk.realise(50.0, ts_ns=ts)

    assert desk.clock(fails_at - 1) == []
    effects = desk.clock(fails_at + 3600 * SECOND)

    assert_failed(effects, RuleName.INACTIVITY, value=30, limit=30)
    assert [b.ts_ns for b in breaches(effects)] == [fails_at]


# -- weekend_holding ------------------------------------------------------------------------------

MYFOREXFUNDS = (
    # MyForexFunds, rule 05 (myforexfunds.com/?rules=rule-05):
    "Traders who have a trade left open during the weekend will be automatically suspended from "
    "the program."
)
FTMO_WEEKEND = (
    # FTMO, "Do I have to close my positions overnight?" (ftmo.com/en/faq/do-i-have-to-close-...):
    "once you become an FTMO Trader and get an FTMO Account, we require you to close your "
    "positions just before the markets close for the weekend"
)
PROPSHOP_SESSION = (
    # PropShopTrader, end-of-day FAQ (propshoptrader.com/faqs/why-must-futures-positions-be-...):
    "Sunday Start: Trading resumes at 6:00 PM EST on Sunday night, which counts as part of Monday"
)

WEEKEND_CASES = [
    pytest.param(
        PRAGUE,
        utc(2026, 3, 6, 10),  # Friday
        None,
        utc(2026, 3, 6, 23),  # Saturday 00:00 CET
        MYFOREXFUNDS,
        id="prague-held-into-saturday-fails-at-midnight",
    ),
    pytest.param(
        PRAGUE,
        utc(2026, 3, 5, 10),  # Thursday, held over Thursday night
        utc(2026, 3, 6, 22, 59),
        None,
        FTMO_WEEKEND,
        id="prague-closed-before-friday-midnight-holds",
    ),
    pytest.param(
        PRAGUE,
        utc(2026, 3, 7, 10),  # opened on Saturday, held into Monday
        None,
        None,
        FTMO_WEEKEND,
        id="prague-opened-during-weekend-not-the-weekday-boundary",
    ),
    pytest.param(
        NEW_YORK,
        utc(2026, 3, 6, 20),  # Friday 15:00 EST
        None,
        utc(2026, 3, 6, 22),  # Friday 17:00 EST: Saturday's session starts
        MYFOREXFUNDS,
        id="new-york-held-past-friday-1700-fails",
    ),
    pytest.param(
        NEW_YORK,
        utc(2026, 3, 6, 20),
        utc(2026, 3, 6, 21, 59),
        None,
        FTMO_WEEKEND,
        id="new-york-closed-before-friday-1700-holds",
    ),
    pytest.param(
        NEW_YORK,
        utc(2026, 3, 8, 22),  # Sunday 18:00 EDT: Monday's session
        None,
        None,
        PROPSHOP_SESSION,
        id="new-york-sunday-evening-is-monday-no-breach",
    ),
]


@pytest.mark.parametrize(("rollover", "opened", "closed", "fails_at", "wording"), WEEKEND_CASES)
def test_weekend_holding_when_position_open_at_weekday_to_weekend_boundary_then_fails_there(
    rollover: dict[str, str], opened: int, closed: int | None, fails_at: int | None, wording: str
) -> None:
    desk = Desk(make_plan(rollover=rollover, weekend_holding={}), start_ns=utc(2026, 3, 2, 12))
    first = desk.open(lots=1.0, ts_ns=opened)
    desk.open(lots=1.0, ts_ns=opened + MINUTE)
    if closed is not None:
        desk.close(first, lots=1.0, ts_ns=closed)
        desk.close(first + 1, lots=1.0, ts_ns=closed + SECOND)

    effects = desk.tick("US500", 5001.0, ts_ns=utc(2026, 3, 9, 14))  # Monday afternoon

    if fails_at is None:
        assert outcome(effects) == []
        assert desk.account.status is AccountStatus.ACTIVE
        return
    assert_failed(effects, RuleName.WEEKEND_HOLDING, value=2.0, limit=0.0)
    (breach,) = breaches(effects)
    assert breach.ts_ns == fails_at


def test_weekend_holding_close_positions_when_held_into_weekend_then_closed_not_failed() -> None:
    # ProTraderFund, "Can I hold positions over the weekend?" (protraderfund.com/can-i-hold-...):
    # "We require all trades to be closed by 3:45pm EST on Friday. Any trades left open after this
    # time will automatically be closed. Note, this is only a soft breach and you will be able to
    # continue trading once the markets reopen."
    plan = make_plan(rollover=NEW_YORK, weekend_holding={"action": "close_positions"})
    desk = Desk(plan, start_ns=utc(2026, 3, 2, 12))
    desk.open(lots=1.0, ts_ns=utc(2026, 3, 6, 20))

    effects = desk.clock(utc(2026, 3, 6, 22, 1))

    (breach,) = breaches(effects)
    assert (breach.rule, breach.action, breach.value, breach.ts_ns) == (
        RuleName.WEEKEND_HOLDING,
        BreachAction.CLOSE_POSITIONS,
        1.0,
        utc(2026, 3, 6, 22),
    )
    assert [c.reason for c in effects if isinstance(c, CloseAllPositions)] == ["weekend_holding"]
    assert not [e for e in effects if isinstance(e, PhaseFailed | DisableTrading)]
    assert desk.account.status is AccountStatus.ACTIVE


# -- news_trading ---------------------------------------------------------------------------------

NFP = utc(2026, 3, 6, 13, 30)
FTMO_NEWS = (
    # FTMO, news restrictions (ftmo.oanda.com/?p=121):
    "On the targeted instruments, it is not permitted to open or close any trades, including "
    "pending orders (such as Stop Loss or Take Profit), within a time window starting 2 minutes "
    "before and ending 2 minutes after the release of selected news announcements."
)


def news_desk(release: Impact = Impact.HIGH, **rule: object) -> Desk:
    desk = Desk(make_plan(news_trading=rule, profit_target={"pct": 1}), start_ns=utc(2026, 3, 6, 8))
    desk.market.calendar.add(
        NewsScheduled(currency="USD", impact=release, title="Non-Farm Payrolls", ts_ns=NFP)
    )
    return desk


@pytest.mark.parametrize(
    ("offset_ns", "minutes", "window"),
    [
        pytest.param(-120 * SECOND - 1, None, None, id="before-window-opens"),
        pytest.param(-120 * SECOND, -2.0, -2.0, id="window-opening-edge-inclusive"),
        pytest.param(-30 * SECOND, -0.5, -2.0, id="inside-before-release"),
        pytest.param(0, 0.0, 2.0, id="at-release"),
        pytest.param(120 * SECOND, 2.0, 2.0, id="window-closing-edge-inclusive"),
        pytest.param(120 * SECOND + 1, None, None, id="after-window-closes"),
    ],
)
def test_news_trading_fail_when_deal_inside_window_edges_included_then_phase_fails(
    offset_ns: int, minutes: float | None, window: float | None
) -> None:
    # FTMO_NEWS
    desk = news_desk()

    desk.open("GBPUSD", lots=1.0, price=1.265, ts_ns=NFP + offset_ns)

    effects = desk.account.breaches
    if minutes is None:
        assert effects == []
        assert desk.account.status is AccountStatus.ACTIVE
        return
    (breach,) = effects
    assert (breach.rule, breach.action) == (RuleName.NEWS_TRADING, BreachAction.FAIL)
    assert (breach.value, breach.limit) == (pytest.approx(minutes), window)
    assert desk.account.status is AccountStatus.FAILED


@pytest.mark.parametrize(
    ("symbol", "price", "breaks"),
    [
        pytest.param("USDJPY", 150.0, True, id="usd-as-base-currency"),
        pytest.param("GBPUSD", 1.265, True, id="usd-as-quote-currency"),
        pytest.param("XAUUSD", 2650.0, True, id="gold-quoted-in-usd"),
        pytest.param("EURGBP", 0.85, False, id="pair-without-usd"),
        pytest.param("GER40", 20_000.0, False, id="eur-index"),
    ],
)
def test_news_trading_when_symbol_base_or_quote_is_release_currency_then_it_counts(
    symbol: str, price: float, breaks: bool
) -> None:
    # FTMO (ftmo.oanda.com/?p=121): "For example, during the US NFP release, you may trade EURGBP
    # or AUDNZD; however, you must not open or close trades on USDJPY or GBPUSD within the time
    # window of 2 m[inutes]"
    desk = news_desk()

    desk.open(symbol, lots=1.0, price=price, ts_ns=NFP + 30 * SECOND)

    assert [b.rule for b in desk.account.breaches] == ([RuleName.NEWS_TRADING] if breaks else [])


@pytest.mark.parametrize(
    ("least", "release", "breaks"),
    [
        pytest.param("high", Impact.HIGH, True, id="high-rule-high-release"),
        pytest.param("high", Impact.MEDIUM, False, id="high-rule-ignores-medium"),
        pytest.param("medium", Impact.HIGH, True, id="medium-rule-counts-high"),
        pytest.param("medium", Impact.MEDIUM, True, id="medium-rule-counts-medium"),
        pytest.param("medium", Impact.LOW, False, id="medium-rule-ignores-low"),
        pytest.param("low", Impact.LOW, True, id="low-rule-counts-low"),
    ],
)
def test_news_trading_when_release_impact_is_below_threshold_then_it_does_not_count(
    least: str, release: Impact, breaks: bool
) -> None:
    # Pip Traders (intercom.help/pip-traders-funding/en/articles/7970714): "It is important to
    # note any red folder events shown in Forex Factory that are not listed in the table above are
    # still counted as news-restricted events." (red folder = high impact)
    desk = news_desk(release, impact=least)

    desk.open("GBPUSD", lots=1.0, price=1.265, ts_ns=NFP)

    assert bool(desk.account.breaches) is breaks


@pytest.mark.parametrize(
    ("opened", "closed", "breaks"),
    [
        pytest.param(NFP - 3600 * SECOND, NFP + 60 * SECOND, True, id="stop-or-target-fill-inside"),
        pytest.param(NFP - 3600 * SECOND, NFP + 3600 * SECOND, False, id="held-through-release"),
    ],
)
def test_news_trading_when_closing_deal_falls_inside_window_then_it_counts(
    opened: int, closed: int, breaks: bool
) -> None:
    # FTMO (ftmo.oanda.com/?p=121): "You are allowed to hold open positions on the targeted
    # instruments if they were opened more than 2 minutes before the restricted event. Please note
    # that if a Stop Loss or Take Profit is triggered within the restricted time window, this will
    # also be considered a breach"
    desk = news_desk()
    position = desk.open("GBPUSD", lots=1.0, price=1.265, ts_ns=opened)

    desk.close(position, "GBPUSD", lots=1.0, price=1.266, profit=100.0, ts_ns=closed)

    assert [b.rule for b in desk.account.breaches] == ([RuleName.NEWS_TRADING] if breaks else [])


def test_news_trading_strike_when_violations_exceed_allowed_strikes_then_the_next_one_fails() -> (
    None
):
    # Pip Traders, news restrictions (intercom.help/pip-traders-funding/en/articles/7970714):
    # "once you are trading a Funded Account we have news restrictions for 4 minutes before and
    # after the release of a red folder event"; "You will be issued a maximum of 2 warnings (soft
    # breaches) ... On the third violation, the account will be breached entirely."
    desk = news_desk(minutes_before=4, minutes_after=4, action="strike", strikes=2)

    desk.open("GBPUSD", lots=1.0, price=1.265, ts_ns=NFP - 240 * SECOND)
    desk.open("USDJPY", lots=1.0, price=150.0, ts_ns=NFP + 240 * SECOND)
    assert [(b.action, b.value, b.limit) for b in desk.account.breaches] == [
        (BreachAction.STRIKE, -4.0, -4.0),
        (BreachAction.STRIKE, 4.0, 4.0),
    ]
    assert desk.account.status is AccountStatus.ACTIVE

    desk.open("XAUUSD", lots=1.0, price=2650.0, ts_ns=NFP)

    last = desk.account.breaches[-1]
    assert (last.action, last.value, last.limit) == (BreachAction.FAIL, 3, 2)
    assert desk.account.status is AccountStatus.FAILED


KORTANA = (
    # Kortana FX, "News Trading" (intercom.help/kortana/en/articles/8130170):
    "However for your funded account, profit from trades that are opened or closed within 10 "
    "minutes of a high-impact red folder news event will not be counted."
)


@pytest.mark.parametrize(
    ("opened", "closed", "profit", "excluded", "passes"),
    [
        pytest.param(-5, 60, 1500.0, 1500.0, False, id="opened-inside-closed-later"),
        pytest.param(-60, 5, 1500.0, 1500.0, False, id="opened-before-closed-inside"),
        pytest.param(-5, 5, 1500.0, 1500.0, False, id="opened-and-closed-inside-counted-once"),
        pytest.param(-5, 60, -500.0, 0.0, False, id="loss-is-not-excluded"),
        pytest.param(-60, 60, 1500.0, 0.0, True, id="outside-both-counts"),
    ],
)
def test_news_trading_exclude_profit_when_trade_touches_window_then_profit_not_towards_target(
    opened: int, closed: int, profit: float, excluded: float, passes: bool
) -> None:
    # KORTANA; FundYourFX (fundyourfx.com/faqs/general-trading-rules/can-i-trade-news-2):
    # "Profits from trades violating these rules will be deducted and won't count towards your
    # target."
    desk = news_desk(minutes_before=10, minutes_after=10, action="exclude_profit")
    position = desk.open("GBPUSD", lots=1.0, price=1.265, ts_ns=NFP + opened * MINUTE)

    effects = desk.close(
        position, "GBPUSD", lots=1.0, price=1.28, profit=profit, ts_ns=NFP + closed * MINUTE
    )

    assert desk.account.excluded == cents(excluded)
    assert bool(passed(effects)) is passes
    assert {b.action for b in desk.account.breaches} <= {BreachAction.EXCLUDE_PROFIT}
    assert desk.account.status is (AccountStatus.PASSED if passes else AccountStatus.ACTIVE)


# -- max_lots -------------------------------------------------------------------------------------

E8_LOTS = (
    # E8 Markets, "Are there lot/order size restrictions?" (help.e8markets.com/en/articles/9453396):
    "Max ticket size (most symbols): 50 lots"
)


@pytest.mark.parametrize(
    ("orders", "fails"),
    [
        pytest.param([50.0], None, id="at-the-limit"),
        pytest.param([50.01], 50.01, id="over-the-limit"),
        pytest.param([30.0, 30.0], None, id="split-across-tickets"),
    ],
)
def test_max_lots_when_opening_order_larger_than_per_order_limit_then_phase_fails(
    orders: list[float], fails: float | None
) -> None:
    # E8_LOTS; E8 on the same page: "Want more exposure? Split your size across multiple tickets."
    desk = Desk(make_plan(max_lots={"per_order": 50}))
    position = None
    effects: list[Effect] = []
    for lots in orders:
        position = desk.open("EURUSD", lots=lots, price=1.085, position=position)
    assert position is not None
    if fails is None:
        effects = desk.close(position, "EURUSD", lots=sum(orders), price=1.085)  # a 60-lot close
        assert breaches(effects) == []
        assert desk.account.breaches == []
        return
    (breach,) = desk.account.breaches
    assert (breach.rule, breach.action, breach.value, breach.limit) == (
        RuleName.MAX_LOTS,
        BreachAction.FAIL,
        fails,
        50.0,
    )
    assert desk.account.status is AccountStatus.FAILED
