"""Passing rules as firms publish them: `profit_target`, `min_trading_days`, `consistency`,
`min_hold_time`, and passing only when every condition holds.

Every case quotes the sentence of a firm's public rule text it reproduces (`wording`), with the firm
and page named. The contract is `docs/rules.md`; money in assertions is integer cents.
"""

from __future__ import annotations

import pytest

from actors.account import Effect
from actors.events import (
    AccountStatus,
    PhasePassed,
    RuleName,
)
from bridge.events import (
    BalanceKind,
)

from .desk import (
    MINUTE,
    Desk,
    assert_failed,
    breaches,
    cents,
    make_plan,
)

SECOND = 1_000_000_000


def passed(effects: list[Effect]) -> list[PhasePassed]:
    return [e for e in effects if isinstance(e, PhasePassed)]


def trip(desk: Desk, profit: float, held_s: int = 600) -> list[Effect]:
    """A one-lot US500 round trip held `held_s` seconds that books `profit`."""
    start = desk.now + MINUTE
    position = desk.open(lots=1.0, ts_ns=start)
    return desk.close(position, lots=1.0, profit=profit, ts_ns=start + held_s * SECOND)


def trade_days(desk: Desk, pnl_by_day: list[float]) -> list[Effect]:
    """Book each day's closed P&L in one round trip, a day apart; returns all effects."""
    effects: list[Effect] = []
    for index, pnl in enumerate(pnl_by_day):
        if index:
            desk.next_day()
        effects += trip(desk, pnl)
    return effects


# -- profit_target --------------------------------------------------------------------------------

FTMO_TARGET = (
    # FTMO Academy, "Profit Target" (academy.ftmo.com/lesson/profit-target/):
    "A Profit Target means that a trader reaches a profit in the sum of closed positions on the "
    "assigned trading account anytime within the unlimited Trading Period. Be reminded that in "
    "order to secure the Profit Target, all of your positions must be closed."
)


def test_profit_target_closed_balance_when_position_still_open_then_passes_only_once_closed() -> (
    None
):
    # FTMO_TARGET
    desk = Desk(make_plan(profit_target={"pct": 10}))
    desk.hold()
    assert passed(trip(desk, 10_000.0)) == []  # target booked, but a position is still open
    assert desk.account.status is AccountStatus.ACTIVE

    effects = desk.close(desk.held, profit=0.0)

    (passing,) = passed(effects)
    assert (passing.phase, passing.profit, passing.trading_days) == ("challenge", 10_000.0, 1)
    assert desk.account.status is AccountStatus.PASSED


@pytest.mark.parametrize(
    ("book", "wording"),
    [
        pytest.param(
            {"float": 12_000.0},
            # thetradingplaybook.com/rules/ftmo/profit-target-phase-2 (secondary, on FTMO):
            "Unrealized profits don't count toward the target",
            id="floating-profit-does-not-count",
        ),
        pytest.param(
            {"profit": 10_000.0, "commission": -10.0},
            # FTMO_TARGET: the target is "a profit in the sum of closed positions", net of costs.
            FTMO_TARGET,
            id="commission-keeps-closed-pnl-below-target",
        ),
        pytest.param(
            {"deposit": 10_000.0},
            # Funding Traders, "Profit Target Phase 2" (help.fundingtraders.com/.../10537012):
            "The account balance (not equity) must reach 5% profit relative to starting account "
            "balance. All positions must be closed.",
            id="deposit-is-not-profit",
        ),
    ],
)
def test_profit_target_closed_balance_when_only_unclosed_or_net_short_then_no_pass(
    book: dict[str, float], wording: str
) -> None:
    desk = Desk(make_plan(profit_target={"pct": 10}))
    effects: list[Effect] = []
    if "float" in book:
        desk.hold()
        effects += desk.float_at(book["float"])
    if "profit" in book:
        position = desk.open(lots=1.0)
        effects += desk.close(
            position, lots=1.0, profit=book["profit"], commission=book["commission"]
        )
    if "deposit" in book:
        effects += desk.money(BalanceKind.DEPOSIT, book["deposit"])

    assert passed(effects) == []
    assert desk.account.status is AccountStatus.ACTIVE


FUNDED_ENGINEER = (
    # Funded Engineer, "What Is The Profit Target For Superior Challenge?"
    # (fundedengineer.com/faqs/what-is-the-profit-target-for-superior-challenge/):
    "When we receive the information that your equity is above the profit target, we close all "
    "the trades, and the objective will be met."
)


def test_profit_target_equity_when_floating_profit_reaches_target_then_passes_on_the_tick() -> None:
    # FUNDED_ENGINEER
    desk = Desk(make_plan(profit_target={"pct": 10, "basis": "equity"}))
    desk.hold()

    assert passed(desk.float_at(9_999.99)) == []
    effects = desk.float_at(10_000.0)

    (passing,) = passed(effects)
    assert (passing.profit, passing.ts_ns, passing.caused_by) == (
        10_000.0,
        desk.now,
        f"t{desk.ids}",
    )


def test_profit_target_equity_when_closed_plus_floating_reach_target_then_passes() -> None:
    # FUNDED_ENGINEER; docs/rules.md: "`equity`: closed P&L plus floating P&L minus excluded
    # profit reaches it, at any event."
    desk = Desk(make_plan(profit_target={"pct": 10, "basis": "equity"}))
    trip(desk, 6_000.0)
    desk.hold()

    assert passed(desk.float_at(3_999.99)) == []
    assert [p.profit for p in passed(desk.float_at(4_000.0))] == [10_000.0]


def test_profit_target_when_phase_has_none_then_never_passes() -> None:
    # FTMO, "Trading Objectives" (ftmo.com/en/trading-objectives):
    # "There is no Profit Target on the FTMO Account." docs/rules.md: "A phase without
    # `profit_target` (a funded stage) never passes; it only fails."
    desk = Desk(make_plan(max_loss={"pct": 10}))

    assert passed(trip(desk, 50_000.0)) == []
    assert desk.account.status is AccountStatus.ACTIVE


def test_profit_target_when_passed_then_later_losses_neither_fail_nor_unpass() -> None:
    # docs/rules.md: "a failed or passed account stays so (its balance and equity still follow the
    # platform)". No firm sentence found for this.
    desk = Desk(make_plan(profit_target={"pct": 10}, daily_loss={"pct": 5}))
    assert passed(trip(desk, 10_000.0))

    assert trip(desk, -30_000.0) == []
    assert desk.account.status is AccountStatus.PASSED
    assert desk.account.balance == cents(80_000)


# -- min_trading_days -----------------------------------------------------------------------------

# One week, the same for every `counts`: Mon a round trip +600; Tue opens a position and holds it;
# Wed closes it +800; Thu two round trips +300 and +200; Fri a round trip +499.99.
# Target 2% ($2,000) is reached on Friday with $2,399.99 closed.
DAYS_CASES = [
    pytest.param(
        {"counts": "position_opened"},
        4,
        # FTMO Academy, "Minimum Trading Days" (academy.ftmo.com/lesson/minimum-trading-days/):
        "If you were to hold a position over multiple days, it would still be considered as one "
        "trading day. This is because you need to have at least one new position opened on each "
        "trading day.",
        id="ftmo-day-a-position-was-opened",
    ),
    pytest.param(
        {"counts": "opened_and_closed"},
        3,
        # FTT Funded, "How many minimum trading days..." (help.fttfunded.com/.../1741345546):
        "Please note that we define a trading day as a day when you open and close a trade on the "
        "same day.",
        id="fttfunded-opened-and-closed-same-day",
    ),
    pytest.param(
        {"counts": "profitable_day", "min_profit_pct": 0.5},
        3,
        # thePropTrade, time-limit rule FAQ (theproptrade.io/?docs=trading-rules-guidelines-faqs):
        # "If a trade is held across multiple days, the profit is counted on the day the position
        # is closed".
        "A profitable day is defined as a trading day where all closed positions combined result "
        "in a net profit of at least 0.5% of your initial account balance.",
        id="theproptrade-profitable-day-half-pct-of-initial",
    ),
]


def trading_week(desk: Desk) -> list[Effect]:
    effects = trip(desk, 600.0)
    desk.next_day()
    held = desk.open(lots=1.0)
    desk.next_day()
    effects += desk.close(held, lots=1.0, profit=800.0)
    desk.next_day()
    effects += trip(desk, 300.0) + trip(desk, 200.0)
    desk.next_day()
    return effects + trip(desk, 499.99)


@pytest.mark.parametrize(("counts", "days", "wording"), DAYS_CASES)
def test_min_trading_days_when_week_is_counted_per_definition_then_pass_needs_enough_days(
    counts: dict[str, object], days: int, wording: str
) -> None:
    four = Desk(make_plan(profit_target={"pct": 2}, min_trading_days={"days": 4, **counts}))
    exact = Desk(make_plan(profit_target={"pct": 2}, min_trading_days={"days": days, **counts}))

    blocked, passing = trading_week(four), trading_week(exact)

    assert (four.account.trading_days(), exact.account.trading_days()) == (days, days)
    assert [p.trading_days for p in passed(passing)] == [days]
    if days < 4:
        assert passed(blocked) == []
        assert four.account.status is AccountStatus.ACTIVE


def test_min_trading_days_profitable_day_when_day_gives_back_profit_then_day_not_counted() -> None:
    # PipFarm, "Minimum Profitable Days" (help.pipfarm.com/en/articles/10019336): "This value is
    # not relative to the previous end-of-day balance and will always be 0.5% of the initial
    # balance". docs/rules.md: "today counts while it holds".
    rule = {"days": 1, "counts": "profitable_day", "min_profit_pct": 0.5}
    desk = Desk(make_plan(min_trading_days=rule))
    trip(desk, 600.0)
    assert desk.account.trading_days() == 1

    trip(desk, -200.0)

    assert desk.account.trading_days() == 0


# -- consistency ----------------------------------------------------------------------------------

E8_BEST_DAY = (
    # E8 Markets, "40% Best Day Rule" (intercom.help/e8/en/articles/10450125-40-best-day-rule):
    "If one day exceeds this limit, you don't lose your account; you simply need to continue "
    "trading to increase your total profit."
)

CONSISTENCY_CASES = [
    pytest.param(
        40,
        1.9,
        [500, 550, -150, 600, 400],
        4,
        # E8 (as E8_BEST_DAY), scenario A: "Best Day | $600 Eligible for Payout (Below $760)"
        E8_BEST_DAY,
        id="e8-scenario-a-best-day-31pct-passes",
    ),
    pytest.param(
        40,
        3.0,
        [1100, 1500, 900, -400, 650],
        4,
        # E8, scenario B: "the trader simply needs to keep trading profitably until their Total
        # Profit reaches $3,750 ($1,500 ÷ 0.40)."
        E8_BEST_DAY,
        id="e8-scenario-b-blocked-until-total-3750",
    ),
    pytest.param(
        50,
        5.0,
        [5000, 2500, 2500],
        2,
        # FTMO, "What happens if the Best Day Rule is not met in FTMO Challenge: 1-Step?"
        # (ftmo.com/au/faq/what-happens-if-the-best-day-rule-is-not-met-in-ftmo-challenge-1-step):
        "If the Best Day Rule (50%) is not met, the evaluation is not failed.",
        id="ftmo-1step-best-day-50pct-blocks-then-passes",
    ),
]


@pytest.mark.parametrize(("best", "target", "pnl", "pass_day", "wording"), CONSISTENCY_CASES)
def test_consistency_block_pass_when_best_day_too_large_then_phase_stays_open_until_diluted(
    best: float, target: float, pnl: list[float], pass_day: int, wording: str
) -> None:
    desk = Desk(make_plan(profit_target={"pct": target}, consistency={"max_best_day_pct": best}))

    for day, amount in enumerate(pnl):
        if day:
            desk.next_day()
        effects = trip(desk, amount)
        assert bool(passed(effects)) is (day == pass_day), day
        assert breaches(effects) == []

    assert desk.account.status is AccountStatus.PASSED


def test_consistency_fail_when_target_reached_with_best_day_over_limit_then_phase_fails() -> None:
    # Nearest firm wording found (Winbance, "What is the Consistency Rule?",
    # intercom.help/faqwinbance/en/articles/11164492) fails on a repeat: "Second Violation: The
    # account will be suspended and considered failed due to repeated inconsistency."
    # docs/rules.md: "`fail` fails it. `value` is the best day's share in percent."
    desk = Desk(
        make_plan(
            profit_target={"pct": 5},
            consistency={"max_best_day_pct": 50, "action": "fail"},
        )
    )
    assert trip(desk, 3_000.0) == []  # best day 100%, but the target is not reached yet
    desk.next_day()

    effects = trip(desk, 4_000.0)  # total 7,000, best day 4,000 = 57.14%

    assert_failed(effects, RuleName.CONSISTENCY, value=400 / 7, limit=50.0)
    assert passed(effects) == []


# -- min_hold_time --------------------------------------------------------------------------------

E8_HOLD = (
    # E8 Markets, "Policy against gambling" (help.e8markets.com/en/articles/6929927):
    "To avoid high-frequency trading (HFT) behaviors, you cannot hold more than 50% of your trades "
    "for under one minute."
)

HOLD_CASES = [
    pytest.param([30, 30, 600, 600], True, id="two-of-four-short-is-50pct-passes"),
    pytest.param([30, 30, 30, 600], False, id="three-of-four-short-blocks"),
    pytest.param([59, 59, 59, 60], False, id="held-59s-is-short"),
    pytest.param([60, 60, 60, 30], True, id="held-exactly-60s-is-not-short"),
]


@pytest.mark.parametrize(("holds", "passes"), HOLD_CASES)
def test_min_hold_time_block_pass_when_short_share_over_limit_then_no_pass(
    holds: list[int], passes: bool
) -> None:
    # E8_HOLD
    rule = {"seconds": 60, "max_share_pct": 50}
    desk = Desk(make_plan(profit_target={"pct": 1}, min_hold_time=rule))

    effects: list[Effect] = []
    for held in holds:
        effects += trip(desk, 300.0, held_s=held)

    assert bool(passed(effects)) is passes
    assert breaches(effects) == []
    assert desk.account.status is (AccountStatus.PASSED if passes else AccountStatus.ACTIVE)


def test_min_hold_time_when_added_to_and_partly_closed_then_held_from_first_entry() -> None:
    # E8_HOLD; docs/rules.md: "A closed trade (a position fully closed) held less than `seconds`
    # from its first entry is short".
    desk = Desk(
        make_plan(profit_target={"pct": 1}, min_hold_time={"seconds": 60, "max_share_pct": 0})
    )
    start = desk.now + MINUTE
    position = desk.open(lots=1.0, ts_ns=start)
    desk.open(lots=1.0, position=position, ts_ns=start + 50 * SECOND)
    desk.close(position, lots=1.0, profit=500.0, ts_ns=start + 55 * SECOND)  # partial: not a trade
    assert (desk.account.closed_trades, desk.account.short_trades) == (0, 0)

    effects = desk.close(position, lots=1.0, profit=500.0, ts_ns=start + 61 * SECOND)

    assert (desk.account.closed_trades, desk.account.short_trades) == (1, 0)
    assert [p.profit for p in passed(effects)] == [1000.0]


def test_min_hold_time_fail_when_a_trade_is_shorter_than_allowed_then_phase_fails_at_pass() -> None:
    # High Roller Funding, "What is the 2 minute trade duration rule?"
    # (help.highrollerfunding.co.uk/en/articles/9930421): "We require the duration of all your
    # trades to be greater than 2 minutes. If you pass the assessment however are in breach of
    # this rule, you will be asked to retry the Evaluation from phase 1."
    rule = {"seconds": 120, "max_share_pct": 0, "action": "fail"}
    desk = Desk(make_plan(profit_target={"pct": 1}, min_hold_time=rule))
    assert trip(desk, 200.0, held_s=119) == []  # short, but the target is not reached yet
    trip(desk, 300.0, held_s=600)

    effects = trip(desk, 600.0, held_s=600)

    assert_failed(effects, RuleName.MIN_HOLD_TIME, value=100 / 3, limit=0.0)
    assert passed(effects) == []


# -- passing only when every condition holds ------------------------------------------------------

TOPONE = (
    # TopOne Trader, "2 Step Plus Minimum Profitable Trading Days Rule"
    # (help.toponetrader.com/en/articles/13392094):
    "Progression or payout eligibility is granted only after both the profit target and the "
    "minimum profitable days are completed."
)


@pytest.mark.parametrize(
    ("target_met", "days_met", "consistent", "held"),
    [
        pytest.param(True, True, True, True, id="all-hold-passes"),
        pytest.param(False, True, True, True, id="target-missed"),
        pytest.param(True, False, True, True, id="too-few-trading-days"),
        pytest.param(True, True, False, True, id="best-day-too-large"),
        pytest.param(True, True, True, False, id="a-trade-too-short"),
    ],
)
def test_passing_when_any_condition_fails_then_phase_stays_open_else_passes(
    target_met: bool, days_met: bool, consistent: bool, held: bool
) -> None:
    # TOPONE
    plan = make_plan(
        profit_target={"pct": 1},
        min_trading_days={"days": 2},
        consistency={"max_best_day_pct": 60},
        min_hold_time={"seconds": 60, "max_share_pct": 0},
    )
    desk = Desk(plan)
    total = 1200.0 if target_met else 800.0
    first = total * (0.5 if consistent else 0.75)
    # Day 1 opens both positions and closes the first; day 2 closes the second (and, for the
    # trading-days condition, opens and closes a third with no P&L).
    start = desk.now + MINUTE
    one = desk.open(lots=1.0, ts_ns=start)
    two = desk.open(lots=1.0, ts_ns=start)
    desk.close(one, lots=1.0, profit=first, ts_ns=start + (600 if held else 10) * SECOND)
    desk.next_day()
    if days_met:
        trip(desk, 0.0)

    effects = desk.close(two, lots=1.0, profit=total - first)

    everything = target_met and days_met and consistent and held
    assert bool(passed(effects)) is everything
    assert breaches(effects) == []
    assert desk.account.status is (AccountStatus.PASSED if everything else AccountStatus.ACTIVE)
