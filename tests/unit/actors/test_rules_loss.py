"""Loss rules as firms publish them: `daily_loss`, `max_loss`, warnings, floating P&L, conversion.

Every case quotes the sentence of a firm's public rule text it reproduces (`wording`), with the firm
and page named. The contract is `docs/rules.md`; money in assertions is integer cents.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from actors.account import UnknownSymbol
from actors.events import (
    AccountPaused,
    AccountResumed,
    AccountStatus,
    BreachAction,
    PhaseFailed,
    RuleBreached,
    RuleName,
    RuleProgressed,
)
from actors.plans import Plan
from bridge.commands import CloseAllPositions, DisableTrading, EnableTrading
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
    outcome,
    progressed,
)

# -- daily_loss: reference and amount base --------------------------------------------------------

# Day 1 books +$4,000 closed and ends holding a position floating at `carried`; day 2 starts with
# balance 104,000 and equity 104,000 + carried. Floors below are in dollars.
DAILY_FLOORS = [
    pytest.param(
        "day_start_balance",
        "initial",
        3000.0,
        99_000.0,
        # FTMO Academy, "Maximum Daily Loss" (academy.ftmo.com/lesson/maximum-daily-loss):
        "Account balance at midnight CE(S)T of the previous day – 5% of the Initial Simulated "  # noqa: RUF001
        "Capital",
        id="ftmo-balance-minus-5pct-of-initial",
    ),
    pytest.param(
        "day_start_balance",
        "day_start",
        -3000.0,
        98_800.0,
        # Breakout, "What is the maximum daily loss in a funded account?"
        # (intercom.help/breakoutprop/en/articles/11647189):
        "Your balance (not including any open positions) at 00:30 UTC is $105,000. You have a "
        "1-Step funded account. Your maximum daily loss limit is $100,800 for the next 24 hours.",
        id="breakout-pct-of-day-start-balance",
    ),
    pytest.param(
        "day_start_max_balance_equity",
        "initial",
        3000.0,
        102_000.0,
        # Funding Frontier, "Maximum Daily Loss" (fundingfrontier.com/faq/maximum-daily-loss):
        "we will take the higher figure of either the account balance or account equity and "
        "subtract a fixed 4% of the initial balance from the higher value",
        id="fundingfrontier-higher-of-balance-equity-minus-initial-pct",
    ),
    pytest.param(
        "day_start_max_balance_equity",
        "initial",
        -3000.0,
        99_000.0,
        # Funding Frontier, same page, example 2:
        "Because your $50K balance is higher than your $49,000 equity, your daily drawdown limit "
        "of $2,000 will be calculated on a $50,000 balance.",
        id="fundingfrontier-higher-is-balance-when-floating-loss",
    ),
    pytest.param(
        "day_start_max_balance_equity",
        "day_start",
        3000.0,
        101_650.0,
        # The5ers, High Stakes (help.the5ers.com/what-is-the-maximum-loss-and-the-maximum-...):
        "Daily loss is 5% of the starting equity of the day OR the starting balance of the day "
        "(the highest between them)",
        id="the5ers-pct-of-higher-of-day-start-equity-balance",
    ),
    pytest.param(
        "day_start_max_balance_equity",
        "day_start",
        -3000.0,
        98_800.0,
        # Aeon Funded, "How Daily Loss Works" (help.aeonfunded.com/en/articles/10470992):
        "The Daily Drawdown is 5% of this higher value, which sets the daily stop-out level.",
        id="aeon-pct-of-higher-value-balance-wins",
    ),
    pytest.param(
        "day_start_equity",
        "day_start",
        -3000.0,
        95_950.0,
        # iTrader, "Daily Loss Limit" (support.itrader.global/en/articles/11136715):
        "Daily Loss Limit ($) = Equity - (Equity × 5 / 100)",  # noqa: RUF001
        id="itrader-pct-of-day-start-equity",
    ),
    pytest.param(
        "day_start_equity",
        "initial",
        -3000.0,
        96_000.0,
        # Alpha Capital, "How is the maximum daily loss calculated?" (help.alphacapitalgroup.uk):
        "if you have carried over an open trade with a floating loss (e.g., -$1,000), the maximum "
        "daily loss of $5,000 would be reduced by the floating loss",
        id="alphacapital-carried-floating-loss-reduces-allowance",
    ),
    pytest.param(
        "initial",
        "initial",
        3000.0,
        95_000.0,
        # FTT Funded, minimum trading days article (help.fttfunded.com/.../1741345546):
        "This threshold does not change, regardless of whether the trader makes a profit or "
        "suffers a loss.",
        id="fttfunded-fixed-floor-from-initial",
    ),
    pytest.param(
        "initial",
        "day_start",
        -3000.0,
        95_000.0,
        # FTT Funded, same page (the base is the initial balance whichever option is chosen):
        "the maximum loss allowed per day equals 3% of the starting balance",
        id="fttfunded-initial-reference-ignores-amount-base",
    ),
]


@pytest.mark.parametrize(("reference", "amount_base", "carried", "floor", "wording"), DAILY_FLOORS)
def test_daily_loss_floor_from_reference_and_base_when_equity_touches_it_then_account_fails(
    reference: str, amount_base: str, carried: float, floor: float, wording: str
) -> None:
    desk = Desk(
        make_plan(daily_loss={"pct": 5, "reference": reference, "amount_base": amount_base})
    )
    desk.realise(4000.0)
    desk.hold()
    desk.float_at(carried)
    desk.next_day()
    assert (desk.account.day_start_balance, desk.account.day_start_equity) == (
        cents(104_000),
        cents(104_000 + carried),
    )
    assert desk.account.daily_floor == cents(floor)

    assert outcome(desk.equity_at(floor + 0.01)) == []
    assert desk.account.status is AccountStatus.ACTIVE

    effects = desk.equity_at(floor)
    assert_failed(effects, RuleName.DAILY_LOSS, value=floor, limit=floor)
    assert desk.account.status is AccountStatus.FAILED


def test_daily_loss_when_floating_loss_crosses_limit_then_account_fails_on_that_tick() -> None:
    # FTMO Academy, "Maximum Daily Loss": "It is important to remember that the rule is based on
    # equity, not only on closed results. This means the calculation includes both the results of
    # closed positions and the floating P/L of open positions, as well as commissions and swaps."
    desk = Desk(make_plan(daily_loss={"pct": 5}))
    desk.realise(-2000.0)
    desk.hold()

    assert outcome(desk.float_at(-2999.99)) == []
    effects = desk.float_at(-3000.0)

    assert_failed(effects, RuleName.DAILY_LOSS, value=95_000.0, limit=95_000.0)
    (breach,) = breaches(effects)
    assert (breach.caused_by, breach.ts_ns, breach.phase) == (f"t{desk.ids}", desk.now, "challenge")


def test_daily_loss_when_floating_loss_is_carried_past_midnight_then_new_day_floor_breaks() -> None:
    # FTMO Academy, "Maximum Daily Loss": "If you would still be carrying the $13,000 floating
    # loss, you would excee[d]" (a $200K account: +$4,000 closed on Monday allows a $14,000
    # floating loss until midnight; at the reset the allowance is $10,000 again).
    desk = Desk(make_plan(initial=200_000.0, daily_loss={"pct": 5}))
    desk.realise(4000.0)
    desk.hold()
    assert outcome(desk.float_at(-13_000.0)) == []  # Monday: floor 190,000, equity 191,000

    effects = desk.next_day()  # Tuesday: reference is the balance 204,000, floor 194,000

    # Reported by the first event after midnight (here the clock), against Tuesday's floor.
    assert_failed(effects, RuleName.DAILY_LOSS, value=191_000.0, limit=194_000.0)
    assert desk.account.day_start_balance == cents(204_000)


@pytest.mark.parametrize(
    ("reference", "moved"),
    [
        pytest.param("day_start_balance", -2000.0, id="withdrawal-balance-reference"),
        pytest.param("day_start_equity", -2000.0, id="withdrawal-equity-reference"),
        pytest.param("day_start_max_balance_equity", 3000.0, id="deposit-max-reference"),
    ],
)
def test_daily_loss_when_money_moves_during_the_day_then_reference_moves_by_the_same_amount(
    reference: str, moved: float
) -> None:
    # No firm sentence found for this; docs/rules.md: "Deposits and withdrawals during the day move
    # the day's reference by the same amount (moving money is not a trading loss)."
    desk = Desk(make_plan(daily_loss={"pct": 5, "reference": reference}))
    desk.hold()
    kind = BalanceKind.DEPOSIT if moved > 0 else BalanceKind.WITHDRAWAL

    assert outcome(desk.money(kind, moved)) == []

    floor = 95_000.0 + moved
    assert desk.account.daily_floor == cents(floor)
    assert outcome(desk.equity_at(floor + 0.01)) == []
    assert breaches(desk.equity_at(floor), RuleName.DAILY_LOSS)


# -- daily_loss: pause ----------------------------------------------------------------------------

TOPSTEP_DLL = (
    # Topstep, "Prohibited Conduct" (help.futures.topstep.com/hc/en-us/articles/8808125387923):
    "If the Net P&L should hit or exceed the Daily Loss Limit during the trading day (5:00 PM "
    "CT-3:10 PM CT), the account will hit a soft breach and will be auto-liquidated for the "
    "remainder of the then current trading session. This means any open trading positions will be "
    "flattened, any pending orders will be canceled, and your account will be prevented from "
    "placing any new trades until the start of the next trading day (5:00 PM CT)."
)
CHICAGO_1700 = {"timezone": "America/Chicago", "time": "17:00"}
MONDAY_1700_CT = 1_772_492_400 * 1_000_000_000  # 2026-03-02T23:00:00Z (CST, UTC-6)


def paused_desk(**rules: Any) -> Desk:
    plan = make_plan(rollover=CHICAGO_1700, daily_loss={"pct": 2, "action": "pause"}, **rules)
    desk = Desk(plan)
    desk.hold()
    return desk


def test_daily_loss_pause_when_limit_hit_then_paused_flattened_and_disabled_until_boundary() -> (
    None
):
    # TOPSTEP_DLL
    desk = paused_desk()
    effects = desk.float_at(-2000.0)

    (breach,) = breaches(effects, RuleName.DAILY_LOSS)
    assert (breach.action, breach.value, breach.limit) == (BreachAction.PAUSE, 98_000.0, 98_000.0)
    (paused,) = [e for e in effects if isinstance(e, AccountPaused)]
    assert (paused.rule, paused.until_ns) == (RuleName.DAILY_LOSS, MONDAY_1700_CT)
    assert [type(e) for e in effects if not isinstance(e, RuleProgressed)] == [
        RuleBreached,
        AccountPaused,
        CloseAllPositions,
        DisableTrading,
    ]
    assert not [e for e in effects if isinstance(e, PhaseFailed)]
    assert desk.account.status is AccountStatus.PAUSED


def test_daily_loss_pause_when_next_trading_day_starts_then_resumed_and_trading_enabled() -> None:
    # TOPSTEP_DLL
    desk = paused_desk()
    desk.float_at(-2000.0)
    desk.close(desk.held, price=4980.0, profit=-2000.0)  # the platform flattened the position
    assert outcome(desk.float_at(-2500.0)) == []  # still paused: no second pause, no failure

    assert desk.clock(MONDAY_1700_CT - 1) == []
    effects = desk.clock(MONDAY_1700_CT + 30 * MINUTE)

    resumed = [e for e in effects if isinstance(e, AccountResumed)]
    assert [e.ts_ns for e in resumed] == [MONDAY_1700_CT]
    assert [type(e) for e in effects] == [AccountResumed, EnableTrading]
    assert desk.account.status is AccountStatus.ACTIVE
    assert desk.account.daily_floor == cents(98_000 - 2_000)  # new day: balance 98,000 at 17:00


def test_daily_loss_pause_when_loss_reaches_max_loss_while_paused_then_phase_fails() -> None:
    # Topstep, "What is the Maximum Loss Limit?" (help.topstep.com/en/articles/8284204): "If, while
    # trading, the account balance falls below the minimum account balance displayed on your
    # Trader Dashboard, you will be pulled from your trades right away, your account will be
    # liquidated, and the rule will be broken." docs/rules.md: "While paused, `max_loss` is still
    # checked."
    desk = paused_desk(max_loss={"pct": 4})
    desk.float_at(-2000.0)
    assert desk.account.status is AccountStatus.PAUSED

    effects = desk.float_at(-4000.0)

    assert_failed(effects, RuleName.MAX_LOSS, value=96_000.0, limit=96_000.0)
    assert desk.account.status is AccountStatus.FAILED
    assert desk.clock(MONDAY_1700_CT + MINUTE) == []  # a failed account does not resume


# -- max_loss -------------------------------------------------------------------------------------

Step = tuple[str, float, float]  # (action, amount in dollars, expected max floor in dollars after)
# actions: "realise" books closed P&L; "float" moves the held position's floating P&L; "eod" runs
# to the next day boundary.

MAX_LOSS_CASES = [
    pytest.param(
        {"pct": 10},
        100_000.0,
        [("realise", 4000, 90_000), ("float", 6000, 90_000), ("eod", 0, 90_000)],
        # FTMO Academy, "Maximum Loss" (academy.ftmo.com/?p=47):
        "The Maximum Loss limit simply states that the equity on your trading account must not "
        "drop below 90% of the initial account balance at any given time during the account "
        "duration.",
        id="ftmo-static-90pct-of-initial",
    ),
    pytest.param(
        {"pct": 10, "mode": "trailing_eod_balance"},
        100_000.0,
        [
            ("realise", 4000, 90_000),
            ("float", 5000, 90_000),
            ("eod", 0, 94_000),
            ("realise", -1000, 94_000),
            ("eod", 0, 94_000),
        ],
        # FTMO, 1-Step Maximum Loss (ftmo.com/au/?p=1671): "Balance at midnight CE(S)T between
        # Day 1 and Day 2 = $104,000 ... Limit for Day 2 = $94,000"; "Intraday changes resulting
        # from open positions do not affect the Maximum Loss Limit."
        "The limit can only increase, but never decrease.",
        id="ftmo-1step-trailing-eod-balance-never-locks",
    ),
    pytest.param(
        {"pct": 4, "mode": "trailing_eod_balance", "lock_at": "initial"},
        50_000.0,
        [
            ("realise", 500, 48_000),
            ("eod", 0, 48_500),
            ("realise", -500, 48_500),
            ("eod", 0, 48_500),
            ("realise", 2500, 48_500),
            ("eod", 0, 50_000),
            ("realise", 1000, 50_000),
            ("eod", 0, 50_000),
        ],
        # Topstep, "What is the Maximum Loss Limit?" (help.topstep.com/en/articles/8284204):
        "Once the Maximum Loss Limit reaches the initial starting balance, it won't change for the "
        "remainder of the account. This means that if you were to make $2,500 the next day and "
        "your account balance is $52,500, your Maximum Loss Limit will move up to $50,000 and stay "
        "there.",
        id="topstep-trailing-eod-balance-locks-at-initial",
    ),
    pytest.param(
        {"pct": 6, "mode": "trailing_closed_balance", "lock_at": "initial"},
        100_000.0,
        [
            ("realise", 1000, 95_000),
            ("float", 3000, 95_000),
            ("realise", 5000, 100_000),
            ("realise", 1000, 100_000),
        ],
        # E8 Markets, "Trailing Drawdown calculation ... E8 One" (help.e8markets.com/.../9122280):
        # "once you realize profits on the account and the balance increases above the initial
        # amount, for instance to $101,000, ... adjusting the Trailing Drawdown level to $95,000."
        "Once your account hits a new high, the Trailing Drawdown loss limit updates "
        "immediately—not the next day.",
        id="e8-trailing-closed-balance-locks-at-initial",
    ),
    pytest.param(
        {"pct": 6, "mode": "trailing_equity", "lock_at": "initial"},
        25_000.0,
        [
            ("float", 100, 23_600),
            ("float", -200, 23_600),
            ("float", 1500, 25_000),
            ("float", 2000, 25_000),
        ],
        # Earn2Trade, "What is a trailing drawdown?" (help.earn2trade.com/en/articles/3292356):
        # "in a $25,000.00 account your starting trailing drawdown is $23,500.00 ... make $100.00
        # ... raises your trailing drawdown to $23,600.00 ... until your trailing drawdown reaches
        # the starting balance of your account".
        "All rules, including trailing, use closed and open equity intraday.",
        id="earn2trade-trailing-equity-locks-at-initial",
    ),
    pytest.param(
        {"pct": 8, "mode": "trailing_equity"},
        100_000.0,
        [("float", 5000, 97_000), ("float", 12_000, 104_000), ("float", 8000, 104_000)],
        # Upside Funding, drawdown types (theupsidefunding.com/docs/what-type-of-drawdown-...):
        "Equity Based Trailing: Under this method, the limit is calculated based on a percentage "
        "of the highest equity point in your account.",
        id="upside-trailing-equity-never-locks",
    ),
    pytest.param(
        {"pct": 5, "mode": "trailing_closed_balance", "lock_at": 100_100},
        100_000.0,
        [("realise", 3000, 98_000), ("realise", 3000, 100_100), ("realise", 3000, 100_100)],
        # No firm sentence found for a lock level other than the initial balance; DOMAIN.md:
        "trailing lock level: initial balance | initial + X | profit-target balance | never",
        id="domain-notes-lock-at-a-level-initial-plus-100",
    ),
    pytest.param(
        {"pct": 5, "mode": "trailing_closed_balance", "lock_at": 90_000},
        100_000.0,
        [("realise", 3000, 95_000), ("realise", -2000, 95_000)],
        # No firm sentence found; docs/rules.md: the trailing floor is "never below `initial -
        # amount`", even when `lock_at` is set under it.
        "capped at `lock_at` ... and never below `initial - amount`",
        id="docs-lock-below-static-floor-keeps-static-floor",
    ),
]


@pytest.mark.parametrize(("rule", "initial", "steps", "wording"), MAX_LOSS_CASES)
def test_max_loss_floor_follows_mode_and_lock_then_equity_at_floor_fails_phase(
    rule: dict[str, object], initial: float, steps: list[Step], wording: str
) -> None:
    desk = Desk(make_plan(initial=initial, max_loss=rule))
    desk.hold()
    assert desk.account.max_floor == cents(initial - initial * float(rule["pct"]) / 100)  # type: ignore[arg-type]

    for action, amount, floor in steps:
        if action == "realise":
            desk.realise(amount)
        elif action == "float":
            desk.float_at(amount)
        else:
            desk.next_day()
        assert desk.account.max_floor == cents(floor), (action, amount)

    assert breaches(desk.equity_at(floor + 0.01)) == []
    effects = desk.equity_at(floor)
    assert_failed(effects, RuleName.MAX_LOSS, value=floor, limit=floor)


def test_max_loss_trailing_equity_when_tick_makes_new_peak_then_peak_raised_before_check() -> None:
    # Earn2Trade (as above): "if you increase your profit by $1.00, then your trailing drawdown
    # will also rise by $1.00."
    desk = Desk(make_plan(max_loss={"pct": 5, "mode": "trailing_equity"}))
    desk.hold()
    desk.float_at(2000.0)
    assert (desk.account.peak, desk.account.max_floor) == (cents(102_000), cents(97_000))

    effects = desk.float_at(-3000.0)  # equity 97,000: the new floor, not the initial 95,000

    assert_failed(effects, RuleName.MAX_LOSS, value=97_000.0, limit=97_000.0)


@pytest.mark.parametrize(
    ("daily", "max_pct", "named", "limit"),
    [
        pytest.param({"pct": 5}, 5, RuleName.MAX_LOSS, 95_000.0, id="tie-names-max-loss"),
        pytest.param({"pct": 3}, 5, RuleName.DAILY_LOSS, 97_000.0, id="daily-floor-higher"),
        pytest.param(
            {"pct": 10, "reference": "initial"}, 5, RuleName.MAX_LOSS, 95_000.0,
            id="max-floor-higher",
        ),
        pytest.param(
            {"pct": 3, "action": "pause"}, 5, RuleName.MAX_LOSS, 95_000.0,
            id="daily-pause-never-hides-max-loss-failure",
        ),
    ],
)  # fmt: skip
def test_loss_floors_when_one_tick_crosses_both_then_the_higher_floor_is_named(
    daily: dict[str, object], max_pct: float, named: RuleName, limit: float
) -> None:
    # No firm sentence found; docs/rules.md, "Order of evaluation": "When one event takes equity
    # through both loss floors, the breach names the higher floor, which a continuous fall reaches
    # first (`max_loss` on a tie); a `daily_loss` set to `pause` never hides a `max_loss` failure".
    desk = Desk(make_plan(daily_loss=daily, max_loss={"pct": max_pct}))
    desk.hold()

    effects = desk.float_at(-11_000.0)

    assert [b.rule for b in breaches(effects)] == [named]
    assert_failed(effects, named, value=89_000.0, limit=limit)


def test_daily_loss_when_first_event_after_midnight_is_a_tick_then_new_day_floor_applies() -> None:
    # FTMO Academy, "Maximum Daily Loss": "This means that a position that was within the limit
    # before midnight may exceed the limit after the reset if the floating loss is too large."
    desk = Desk(make_plan(daily_loss={"pct": 5}))
    desk.realise(4000.0)
    desk.hold()
    assert outcome(desk.float_at(-5000.0)) == []  # equity 99,000 above Monday's 95,000 floor
    midnight = desk.account.next_rollover_ns

    effects = desk.tick("US500", 4949.99, ts_ns=midnight + 30 * MINUTE)  # no event in between

    # Equity 99,000 already sits on Tuesday's floor (104,000 - 5,000) at midnight itself.
    assert_failed(effects, RuleName.DAILY_LOSS, value=99_000.0, limit=99_000.0)
    assert breaches(effects)[0].ts_ns == midnight


# -- warnings -------------------------------------------------------------------------------------

# No firm sentence found for warning levels, and DOMAIN.md has none either. The nearest public
# wording is a vendor's feature spec (Fytte, "Personal DLL", fytte.notion.site): "The system sends
# notifications when approaching the loss limit (e.g., at 75%, 90%, etc.)". Contract: docs/rules.md
# "Warnings": one `RuleProgressed` per trading day the first time equity falls to
# `reference - round(amount * level / 100)`.

WARNING_CASES = [
    pytest.param({"daily_loss": {"pct": 5}}, RuleName.DAILY_LOSS, 5000.0, id="daily-loss"),
    pytest.param({"max_loss": {"pct": 10}}, RuleName.MAX_LOSS, 10_000.0, id="max-loss"),
]


@pytest.mark.parametrize(("rules", "rule", "allowed"), WARNING_CASES)
def test_warnings_when_loss_uses_50_80_90_pct_then_each_level_reported_once_per_day(
    rules: dict[str, Any], rule: RuleName, allowed: float
) -> None:
    desk = Desk(make_plan(**rules))
    desk.hold()

    assert progressed(desk.float_at(-allowed * 0.5 + 0.01)) == []
    effects = desk.float_at(-allowed * 0.5)
    assert progressed(effects) == [(rule, 50.0)]
    (warning,) = [e for e in effects if isinstance(e, RuleProgressed)]
    assert (warning.used_pct, warning.equity, warning.limit) == (
        50.0,
        100_000 - allowed * 0.5,
        100_000 - allowed,
    )

    assert progressed(desk.float_at(-allowed * 0.6)) == []  # level 50 already reported today
    assert progressed(desk.float_at(0.0)) == []
    assert progressed(desk.float_at(-allowed * 0.5)) == []  # back down: still once per day
    assert progressed(desk.float_at(-allowed * 0.95)) == [(rule, 80.0), (rule, 90.0)]


@pytest.mark.parametrize(("rules", "rule", "allowed"), WARNING_CASES)
def test_warnings_when_next_trading_day_starts_then_levels_rearm(
    rules: dict[str, Any], rule: RuleName, allowed: float
) -> None:
    desk = Desk(make_plan(**rules))
    desk.hold()
    assert progressed(desk.float_at(-allowed * 0.5)) == [(rule, 50.0)]
    desk.float_at(0.0)

    desk.next_day()

    assert progressed(desk.float_at(-allowed * 0.5)) == [(rule, 50.0)]


def test_warnings_when_plan_sets_own_levels_then_only_those_are_reported() -> None:
    # docs/rules.md: "warning_levels = [50, 80, 90] # % of a loss limit used at which a warning is
    # emitted (default)" -- a plan may list its own.
    desk = Desk(make_plan(warning_levels=[75.0], daily_loss={"pct": 5}))
    desk.hold()

    assert progressed(desk.float_at(-3749.99)) == []
    assert progressed(desk.float_at(-4500.0)) == [(RuleName.DAILY_LOSS, 75.0)]


# -- floating P&L, commission and swap ------------------------------------------------------------

FTMO_EQUITY = (
    # FTMO Academy, "Maximum Daily Loss" (academy.ftmo.com/lesson/maximum-daily-loss):
    "The Maximum Daily Loss Limit is a limit below which your equity cannot drop at any time. "
    "Equity includes open positions, commissions, and swaps."
)


def test_floating_when_entry_commission_charged_then_it_counts_towards_daily_loss() -> None:
    # FTMO_EQUITY
    desk = Desk(make_plan(daily_loss={"pct": 5}))
    desk.held_lots = 100.0
    desk.held = desk.open(lots=100.0, commission=-50.0)
    assert desk.account.balance == cents(99_950)

    assert outcome(desk.float_at(-4949.99)) == []
    effects = desk.float_at(-4950.0)  # equity 100,000 - 50 - 4,950

    assert_failed(effects, RuleName.DAILY_LOSS, value=95_000.0, limit=95_000.0)


def test_floating_when_closing_deal_carries_commission_and_swap_then_balance_moves_by_sum() -> None:
    # FTMO_EQUITY; docs/rules.md: "`balance` moves with every deal's `profit + commission + swap`"
    desk = Desk(make_plan(daily_loss={"pct": 5}))
    desk.hold()

    effects = desk.close(desk.held, price=4951.0, profit=-4900.0, commission=-60.0, swap=-40.0)

    assert desk.account.balance == cents(95_000)
    assert desk.account.closed_pnl == cents(-5000)
    assert_failed(effects, RuleName.DAILY_LOSS, value=95_000.0, limit=95_000.0)


def test_floating_when_adding_to_position_then_open_price_is_volume_weighted() -> None:
    # No firm sentence found; docs/rules.md: "Adding to a position moves its open price to the
    # volume-weighted average of its entries."
    desk = Desk(make_plan(daily_loss={"pct": 5}))
    position = desk.open(lots=50.0, price=5000.0)
    desk.open(lots=50.0, price=5010.0, position=position)

    assert desk.account.positions[position].open_price == pytest.approx(5005.0)
    assert outcome(desk.tick("US500", 4955.01)) == []
    assert_failed(desk.tick("US500", 4955.0), RuleName.DAILY_LOSS, 95_000.0, 95_000.0)


# -- cross-currency conversion --------------------------------------------------------------------

EXNESS_MT5 = (
    # Exness, as summarised on fofan.org/faq/how-currencies-are-converted-by-exness (secondary):
    "For MT5, it depends on whether the trading result is a profit or loss. In case of profit from "
    "trading, the bid price is used, and in case of loss, the ask price is used."
)
AMALGA = (
    # Amalga, knowledge base KA-01039 (amalgasupport.powerappsportals.com):
    "Once P/L is calculated in quote currency it is converted at current rate to Account currency "
    "in case they are different."
)

CONVERSIONS = [
    pytest.param(
        "USDJPY",
        False,
        [("USDJPY", 149.00, 149.02)],
        -67_114,  # (149.00 - 150) * 100,000 = -100,000 JPY / 149.00 (bid: a loss)
        EXNESS_MT5,
        id="usdjpy-long-loss-valued-at-bid-divided-by-bid",
    ),
    pytest.param(
        "USDJPY",
        False,
        [("USDJPY", 151.00, 151.02)],
        66_216,  # +100,000 JPY / 151.02 (ask: a profit)
        EXNESS_MT5,
        id="usdjpy-long-profit-valued-at-bid-divided-by-ask",
    ),
    pytest.param(
        "USDJPY",
        True,
        [("USDJPY", 149.00, 149.02)],
        65_763,  # (150 - 149.02 ask) * 100,000 = +98,000 JPY / 149.02 (ask: a profit)
        EXNESS_MT5,
        id="usdjpy-short-profit-valued-at-ask-divided-by-ask",
    ),
    pytest.param(
        "EURGBP",
        False,
        [("GBPUSD", 1.2650, 1.2652), ("EURGBP", 0.8550, 0.8552)],
        63_250,  # (0.8550 - 0.8500) * 100,000 = +500 GBP * 1.2650 (GBPUSD bid: a profit)
        AMALGA,
        id="eurgbp-long-profit-times-gbpusd-bid",
    ),
    pytest.param(
        "EURGBP",
        True,
        [("GBPUSD", 1.2650, 1.2652), ("EURGBP", 0.8548, 0.8550)],
        -63_260,  # (0.8500 - 0.8550 ask) * 100,000 = -500 GBP * 1.2652 (GBPUSD ask: a loss)
        AMALGA,
        id="eurgbp-short-loss-at-ask-times-gbpusd-ask",
    ),
    pytest.param(
        "EURGBP",
        False,
        [("EURGBP", 0.8550, 0.8552)],
        0,
        # docs/rules.md: "A position whose symbol or conversion pair has not ticked yet floats at 0"
        AMALGA,
        id="eurgbp-before-gbpusd-ticked-floats-at-zero",
    ),
]


@pytest.mark.parametrize(("symbol", "sell", "ticks", "floating", "wording"), CONVERSIONS)
def test_conversion_when_profit_currency_differs_then_converted_by_the_joining_pair(
    symbol: str, sell: bool, ticks: list[tuple[str, float, float]], floating: int, wording: str
) -> None:
    desk = Desk(make_plan(max_loss={"pct": 10}))
    desk.open(symbol, lots=1.0, price=150.0 if symbol == "USDJPY" else 0.85, sell=sell)

    for pair, bid, ask in ticks:
        desk.tick(pair, bid, ask)

    assert desk.account.floating == floating
    assert desk.account.equity == cents(100_000) + floating


def test_conversion_when_only_the_conversion_pair_ticks_then_position_is_re_marked() -> None:
    # AMALGA ("converted at current rate")
    desk = Desk(make_plan(max_loss={"pct": 10}))
    desk.open("EURGBP", lots=1.0, price=0.85)
    desk.tick("EURGBP", 0.8550, 0.8552)
    desk.tick("GBPUSD", 1.2650, 1.2652)
    assert desk.account.floating == 63_250

    desk.tick("GBPUSD", 1.3000, 1.3002)

    assert desk.account.floating == 65_000


def test_conversion_when_jpy_loss_converted_crosses_daily_limit_then_account_fails() -> None:
    # FTMO_EQUITY and EXNESS_MT5: 5 lots USDJPY from 150.00 to a 148.50 bid lose 750,000 JPY,
    # which is $5,050.51 at the 148.50 bid.
    desk = Desk(make_plan(daily_loss={"pct": 5}))
    desk.open("USDJPY", lots=5.0, price=150.0)
    assert outcome(desk.tick("USDJPY", 148.52, 148.53)) == []  # -740,000 JPY / 148.52 = -$4,982.49

    effects = desk.tick("USDJPY", 148.50, 148.51)

    assert desk.account.floating == -505_051
    assert_failed(effects, RuleName.DAILY_LOSS, value=94_949.49, limit=95_000.0)


def test_conversion_when_profit_currency_cannot_be_converted_then_deal_is_rejected() -> None:
    # docs/rules.md: the quote currency "is converted by the pair that joins them"; with none
    # (a EUR index in a CHF account: the table has no EURCHF), the deal is not applied.
    data = {"id": "chf", "name": "CHF", "currency": "CHF", "initial_balance": 100_000}
    plan = msgspec.convert({**data, "phases": [{"name": "challenge"}]}, type=Plan)
    desk = Desk(plan)
    with pytest.raises(UnknownSymbol):
        desk.open("GER40", lots=1.0, price=20_000.0)
    assert desk.account.positions == {}
