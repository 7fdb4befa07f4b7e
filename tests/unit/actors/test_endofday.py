"""The end-of-day replay: deals and balance operations alone prove a loss-limit crossing at a flat
moment, never one that only floating prices could show; each verdict is judged against ours."""

from __future__ import annotations

import datetime as dt
import zoneinfo

import msgspec
import pytest

from actors.endofday import judge, limits_of, opening, replay
from actors.events import BreachAction, RuleBreached, RuleName
from actors.plans import DEFAULT_PLAN, DailyLoss
from bridge.events import BalanceKind, BalanceOperated, DealEntry, DealExecuted, Side

PRAGUE = zoneinfo.ZoneInfo("Europe/Prague")
# 2026-03-02 10:00 in Prague; the day boundary is the next local midnight
T0 = int(dt.datetime(2026, 3, 2, 10, 0, tzinfo=PRAGUE).timestamp()) * 1_000_000_000
HOUR = 3_600 * 1_000_000_000
LIMITS = limits_of(DEFAULT_PLAN)  # 5 % daily below the day-start balance, 10 % static, of 100k
FUNDED = (10_000_000, 0)  # opened at 100,000.00, as the runtime's accounts are
seq = iter(range(1, 1_000_000))


def trade(position: int, ts_ns: int, entry: DealEntry, profit: float = 0.0) -> DealExecuted:
    n = next(seq)
    return DealExecuted(
        event_id=f"p:{n}", ts_ns=ts_ns, account_id="a", deal_id=n, position_id=position,
        symbol="EURUSD", entry=entry, side=Side.BUY, volume=1.0, price=1.08, profit=profit,
    )  # fmt: skip


def money(ts_ns: int, kind: BalanceKind, amount: float) -> BalanceOperated:
    n = next(seq)
    return BalanceOperated(
        event_id=f"p:{n}", ts_ns=ts_ns, account_id="a", deal_id=n, kind=kind, amount=amount
    )


def test_replay_when_a_closing_deal_leaves_equity_under_the_daily_floor_then_proved() -> None:
    events = [
        trade(1, T0, DealEntry.IN),
        trade(1, T0 + 1, DealEntry.OUT, profit=-5_000.0),  # flat at 95,000.00: the daily floor
    ]

    proof = replay(DEFAULT_PLAN, LIMITS, events, T0 + HOUR, FUNDED)

    assert proof is not None
    assert (proof.rule, proof.event_id, proof.equity, proof.floor) == (
        "daily_loss",
        events[1].event_id,
        95_000.0,
        95_000.0,
    )


def test_replay_when_a_realised_loss_is_covered_by_an_open_position_then_not_yet_proved() -> None:
    events = [
        trade(1, T0, DealEntry.IN),
        trade(2, T0 + 1, DealEntry.IN),
        trade(1, T0 + 2, DealEntry.OUT, profit=-6_000.0),  # position 2 may hold a profit
        trade(2, T0 + 3, DealEntry.OUT, profit=2_000.0),  # flat at 96,000.00: above the floor
    ]

    assert replay(DEFAULT_PLAN, LIMITS, events, T0 + HOUR, FUNDED) is None
    # Had position 2 closed at a loss instead, the flat moment proves the crossing.
    events[3] = trade(2, T0 + 3, DealEntry.OUT, profit=-1.0)
    proof = replay(DEFAULT_PLAN, LIMITS, events, T0 + HOUR, FUNDED)
    assert proof is not None
    assert (proof.event_id, proof.equity) == (events[3].event_id, 93_999.0)


def test_replay_when_day_rolls_over_then_the_floor_follows_the_day_start_balance() -> None:
    day_two = T0 + 24 * HOUR
    events = [
        trade(1, T0, DealEntry.IN),
        trade(1, T0 + 1, DealEntry.OUT, profit=-4_000.0),  # 96,000.00: floor 95,000.00
        trade(2, day_two, DealEntry.IN),
        trade(2, day_two + 1, DealEntry.OUT, profit=-4_000.0),  # 92,000.00: floor 91,000.00
    ]
    assert replay(DEFAULT_PLAN, LIMITS, events, day_two + HOUR, FUNDED) is None

    same_day = [
        *events[:2],
        trade(3, T0 + 2, DealEntry.IN),
        trade(3, T0 + 3, DealEntry.OUT, -1_000.0),
    ]
    proof = replay(DEFAULT_PLAN, LIMITS, same_day, T0 + HOUR, FUNDED)
    assert proof is not None
    assert proof.rule == "daily_loss"


def test_replay_when_a_withdrawal_takes_the_balance_to_the_static_floor_then_max_loss() -> None:
    # A withdrawal moves the day's reference with it (not trading), not the static floor.
    events = [money(T0, BalanceKind.WITHDRAWAL, -10_000.0)]

    proof = replay(DEFAULT_PLAN, LIMITS, events, T0 + HOUR, FUNDED)

    assert proof is not None
    assert (proof.rule, proof.equity, proof.floor) == ("max_loss", 90_000.0, 90_000.0)


def test_replay_when_opened_by_a_deposit_then_it_is_judged_from_it_on_the_plans_limits() -> None:
    # As the entity: the first deposit starts the account, the floors are the plan's (100k).
    events = [
        money(T0, BalanceKind.DEPOSIT, 100_000.0),
        trade(1, T0 + 1, DealEntry.IN),
        trade(1, T0 + 2, DealEntry.OUT, profit=-5_000.0),
    ]
    assert opening(9_500_000, 0, events) == (0, 0)

    proof = replay(DEFAULT_PLAN, LIMITS, events, T0 + HOUR, opening(9_500_000, 0, events))

    assert proof is not None
    assert (proof.rule, proof.floor) == ("daily_loss", 95_000.0)
    # Not started before the deposit: no floor to cross.
    assert replay(DEFAULT_PLAN, LIMITS, events[1:], T0 + HOUR, (0, 0)) is None


def test_replay_when_a_deal_precedes_a_deposit_then_the_opening_is_the_plain_difference() -> None:
    events = [
        trade(1, T0, DealEntry.IN),
        trade(1, T0 + 1, DealEntry.OUT, profit=-1_000.0),
        money(T0 + 2, BalanceKind.DEPOSIT, 1_000.0),
        trade(2, T0 + 3, DealEntry.IN),
        trade(2, T0 + 4, DealEntry.OUT, profit=-3_980.0),  # 96,020.00: the floor is 95,000+1,000
    ]
    opened = opening(9_602_000, 0, events)

    assert opened == FUNDED
    assert replay(DEFAULT_PLAN, LIMITS, events, T0 + HOUR, opened) is None


def test_replay_when_a_close_reverses_the_position_then_not_taken_for_flat() -> None:
    events = [
        trade(1, T0, DealEntry.IN),
        # netting: selling 2 lots against 1 held leaves 1 short
        msgspec.structs.replace(trade(1, T0 + 1, DealEntry.OUT, profit=-6_000.0), volume=2.0),
    ]

    assert replay(DEFAULT_PLAN, LIMITS, events, T0 + HOUR, FUNDED) is None
    # A close of a position never seen open is not flat either.
    assert replay(DEFAULT_PLAN, LIMITS, events[1:], T0 + HOUR, FUNDED) is None


def test_replay_when_the_crossing_is_after_until_then_not_counted() -> None:
    events = [trade(1, T0, DealEntry.IN), trade(1, T0 + HOUR, DealEntry.OUT, profit=-9_000.0)]

    assert replay(DEFAULT_PLAN, LIMITS, events, T0 + HOUR, FUNDED) is None


def test_opening_when_funded_at_open_then_now_less_every_recorded_change() -> None:
    events = [trade(1, T0, DealEntry.IN), trade(1, T0 + 1, DealEntry.OUT, profit=-12.34)]

    assert opening(9_998_766, 500, events) == (10_000_000, 500)


def test_limits_of_when_plan_has_a_shape_deals_cannot_check_then_refused() -> None:
    phase = msgspec.structs.replace(
        DEFAULT_PLAN.phases[0], daily_loss=DailyLoss(pct=5.0, reference="day_start_equity")
    )
    plan = msgspec.structs.replace(DEFAULT_PLAN, phases=(phase, *DEFAULT_PLAN.phases[1:]))

    with pytest.raises(ValueError, match="deals-only replay cannot check"):
        limits_of(plan)


def breach(
    ts_ns: int, action: BreachAction = BreachAction.FAIL, rule: RuleName = RuleName.DAILY_LOSS
) -> RuleBreached:
    return RuleBreached(
        event_id=f"b:{ts_ns}", ts_ns=ts_ns, account_id="a", caused_by="x",
        rule=rule, action=action, value=1.0, limit=1.0, phase="challenge",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("proved_at", "ours", "verdict"),
    [
        (T0 + 5, [breach(T0 + 3)], "confirmed"),  # the floating loss got there first
        (T0 + 5, [breach(T0 + 5)], "confirmed"),
        (T0 + 5, [breach(T0 + 9)], "late"),
        (T0 + 5, [], "missed"),
        (T0 + 5, [breach(T0 + 1, BreachAction.PAUSE)], "missed"),  # a pause is not a failure
        (None, [breach(T0 + 3)], "unproven"),
        (None, [breach(T0 + 3, rule=RuleName.NEWS_TRADING)], "other"),
        (None, [], "clean"),
    ],
)
def test_judge_when_proof_and_our_breach_compared_then_verdict(
    proved_at: int | None, ours: list[RuleBreached], verdict: str
) -> None:
    events = [trade(1, T0, DealEntry.IN), trade(1, proved_at or T0, DealEntry.OUT, -6_000.0)]
    proof = replay(DEFAULT_PLAN, LIMITS, events, T0 + HOUR, FUNDED) if proved_at else None

    found = judge("a", proof, ours, missing=[])

    assert found.verdict == verdict
