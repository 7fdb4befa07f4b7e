"""Trading days across the 2026 daylight-saving changes, Europe (Prague 00:00) and US (New York
17:00): the day boundary moves with the zone's rules, and a loss lands in the right trading day.

Every case quotes the sentence of a firm's public text it reproduces (`wording`), with the firm and
page named. The contract is `docs/rules.md` ("Trading days"); money in assertions is integer cents.
"""

from __future__ import annotations

import datetime as dt

import pytest

from actors.events import (
    AccountPaused,
    AccountResumed,
    RuleName,
)
from actors.plans import DayRollover, Plan

from .desk import (
    MINUTE,
    Desk,
    breaches,
    cents,
    make_plan,
    outcome,
)

SECOND = 1_000_000_000
HOUR = 3600 * SECOND
PRAGUE = DayRollover(timezone="Europe/Prague", time="00:00")
NEW_YORK = DayRollover(timezone="America/New_York", time="17:00")

FTMO_SPRING = (
    # FTMO, Trading Update 13 Mar 2025 (ftmo.com/en/trading-updates/trading-update-13-mar-2025):
    "Please be aware that the Max Daily Loss is monitored based on Prague time, and the daily "
    "drawdown resets at midnight."
)
FTMO_AUTUMN = (
    # FTMO, Trading Update before 26 Oct 2025 (ftmo.oanda.com/?p=2235):
    "The change occurs in Prague at 03:00 CEST, when clocks move back to 02:00 CET. Please note "
    "that the Max Daily Loss is monitored based on Prague's time, and the daily drawdown resets at "
    "midnight."
)
PIPFARM = (
    # PipFarm, "Minimum Profitable Days" (help.pipfarm.com/en/articles/10019336):
    "A new trading day starts at 22:00 GMT during standard time and 21:00 GMT during US Daylight "
    "Savings."
)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    moment = dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC)
    return int(moment.timestamp()) * 1_000_000_000


def day(year: int, month: int, date: int) -> int:
    return dt.date(year, month, date).toordinal()


# -- DayRollover on the transition days -----------------------------------------------------------

ROLLOVER_CASES = [
    pytest.param(
        PRAGUE,
        utc(2026, 3, 28, 22, 59, 59),  # Saturday 23:59:59 CET
        utc(2026, 3, 27, 23),
        utc(2026, 3, 28, 23),  # Sunday 29 March 00:00 CET, before the 02:00 switch
        day(2026, 3, 28),
        FTMO_SPRING,
        id="prague-last-winter-midnight-2026-03-29-is-23utc",
    ),
    pytest.param(
        PRAGUE,
        utc(2026, 3, 29, 12),
        utc(2026, 3, 28, 23),
        utc(2026, 3, 29, 22),  # Monday 30 March 00:00 CEST: the 23-hour day ends
        day(2026, 3, 29),
        FTMO_SPRING,
        id="prague-first-summer-midnight-after-2026-03-29-is-22utc",
    ),
    pytest.param(
        PRAGUE,
        utc(2026, 10, 24, 21, 59, 59),
        utc(2026, 10, 23, 22),
        utc(2026, 10, 24, 22),  # Sunday 25 October 00:00 CEST, before the 03:00 switch
        day(2026, 10, 24),
        FTMO_AUTUMN,
        id="prague-last-summer-midnight-2026-10-25-is-22utc",
    ),
    pytest.param(
        PRAGUE,
        utc(2026, 10, 25, 22, 30),  # 23:30 CET: still 25 October, a 25-hour day
        utc(2026, 10, 24, 22),
        utc(2026, 10, 25, 23),  # Monday 26 October 00:00 CET
        day(2026, 10, 25),
        FTMO_AUTUMN,
        id="prague-first-winter-midnight-after-2026-10-25-is-23utc",
    ),
    pytest.param(
        NEW_YORK,
        utc(2026, 3, 8, 12),  # Sunday 08:00 EDT, in the session that began Saturday 17:00 EST
        utc(2026, 3, 7, 22),
        utc(2026, 3, 8, 21),  # Sunday 17:00 EDT, the same day as the 02:00 switch
        day(2026, 3, 8),
        PIPFARM,
        id="new-york-1700-on-2026-03-08-is-21utc",
    ),
    pytest.param(
        NEW_YORK,
        utc(2026, 3, 8, 21, 30),
        utc(2026, 3, 8, 21),
        utc(2026, 3, 9, 21),
        day(2026, 3, 9),  # the session that starts Sunday 17:00 is Monday's
        PIPFARM,
        id="new-york-sunday-session-2026-03-08-is-mondays",
    ),
    pytest.param(
        NEW_YORK,
        utc(2026, 11, 1, 12),  # Sunday 07:00 EST, in the session that began Saturday 17:00 EDT
        utc(2026, 10, 31, 21),
        utc(2026, 11, 1, 22),  # Sunday 17:00 EST, the same day as the 02:00 switch
        day(2026, 11, 1),
        PIPFARM,
        id="new-york-1700-on-2026-11-01-is-22utc",
    ),
    pytest.param(
        NEW_YORK,
        utc(2026, 11, 1, 21, 30),  # 16:30 EST: the 25-hour session has not ended
        utc(2026, 10, 31, 21),
        utc(2026, 11, 1, 22),
        day(2026, 11, 1),
        PIPFARM,
        id="new-york-25-hour-session-2026-11-01",
    ),
]


@pytest.mark.parametrize(("clock", "ts_ns", "start", "end", "label", "wording"), ROLLOVER_CASES)
def test_day_rollover_when_instant_on_dst_transition_day_then_boundaries_follow_zone_rules(
    clock: DayRollover, ts_ns: int, start: int, end: int, label: int, wording: str
) -> None:
    assert clock.boundary_at_or_before(ts_ns) == start
    assert clock.boundary_after(ts_ns) == end
    assert clock.label(start) == label


@pytest.mark.parametrize(
    ("clock", "boundary", "previous", "following", "label"),
    [
        pytest.param(
            PRAGUE,
            utc(2026, 3, 29, 22),
            utc(2026, 3, 28, 23),
            utc(2026, 3, 30, 22),
            day(2026, 3, 30),
            id="prague-2026-03-30",
        ),
        pytest.param(
            PRAGUE,
            utc(2026, 10, 25, 23),
            utc(2026, 10, 24, 22),
            utc(2026, 10, 26, 23),
            day(2026, 10, 26),
            id="prague-2026-10-26",
        ),
        pytest.param(
            NEW_YORK,
            utc(2026, 3, 8, 21),
            utc(2026, 3, 7, 22),
            utc(2026, 3, 9, 21),
            day(2026, 3, 9),
            id="new-york-2026-03-09-session",
        ),
        pytest.param(
            NEW_YORK,
            utc(2026, 11, 1, 22),
            utc(2026, 10, 31, 21),
            utc(2026, 11, 2, 22),
            day(2026, 11, 2),
            id="new-york-2026-11-02-session",
        ),
    ],
)
def test_day_rollover_when_instant_is_exactly_a_boundary_then_it_starts_the_new_day(
    clock: DayRollover, boundary: int, previous: int, following: int, label: int
) -> None:
    # docs/rules.md: "The day ends at `day_rollover.time` in `day_rollover.timezone`, computed with
    # the zone's rules on that date, so daylight-saving changes are exact"
    assert clock.boundary_at_or_before(boundary) == boundary
    assert clock.boundary_at_or_before(boundary - 1) == previous
    assert clock.boundary_after(boundary - 1) == boundary
    assert clock.boundary_after(boundary) == following
    assert clock.label(boundary) == label


# -- a loss on either side of a DST-shifted boundary ----------------------------------------------

# (rollover, boundary, name of the day that ends there, name of the day that starts there)
BOUNDARIES = [
    pytest.param(PRAGUE, utc(2026, 3, 28, 23), day(2026, 3, 28), day(2026, 3, 29), FTMO_SPRING,
                 id="prague-2026-03-29-00:00-cet"),
    pytest.param(PRAGUE, utc(2026, 3, 29, 22), day(2026, 3, 29), day(2026, 3, 30), FTMO_SPRING,
                 id="prague-2026-03-30-00:00-cest"),
    pytest.param(PRAGUE, utc(2026, 10, 24, 22), day(2026, 10, 24), day(2026, 10, 25), FTMO_AUTUMN,
                 id="prague-2026-10-25-00:00-cest"),
    pytest.param(PRAGUE, utc(2026, 10, 25, 23), day(2026, 10, 25), day(2026, 10, 26), FTMO_AUTUMN,
                 id="prague-2026-10-26-00:00-cet"),
    pytest.param(NEW_YORK, utc(2026, 3, 7, 22), day(2026, 3, 7), day(2026, 3, 8), PIPFARM,
                 id="new-york-2026-03-07-17:00-est"),
    pytest.param(NEW_YORK, utc(2026, 3, 8, 21), day(2026, 3, 8), day(2026, 3, 9), PIPFARM,
                 id="new-york-2026-03-08-17:00-edt"),
    pytest.param(NEW_YORK, utc(2026, 10, 31, 21), day(2026, 10, 31), day(2026, 11, 1), PIPFARM,
                 id="new-york-2026-10-31-17:00-edt"),
    pytest.param(NEW_YORK, utc(2026, 11, 1, 22), day(2026, 11, 1), day(2026, 11, 2), PIPFARM,
                 id="new-york-2026-11-01-17:00-est"),
]  # fmt: skip


def rollover_plan(clock: DayRollover, action: str = "fail") -> Plan:
    rollover = {"timezone": clock.timezone, "time": clock.time}
    return make_plan(rollover=rollover, daily_loss={"pct": 5, "action": action})


@pytest.mark.parametrize(("clock", "boundary", "old", "new", "wording"), BOUNDARIES)
def test_dst_when_loss_30_minutes_after_rollover_then_it_counts_against_the_new_day(
    clock: DayRollover, boundary: int, old: int, new: int, wording: str
) -> None:
    desk = Desk(rollover_plan(clock), start_ns=boundary - 20 * HOUR)
    assert desk.account.day == old
    desk.realise(4000.0, ts_ns=boundary - SECOND)  # the last event of the old day
    desk.realise(-1000.0, ts_ns=boundary + 10 * MINUTE)  # the first of the new day
    desk.hold()

    effects = desk.tick("US500", 4960.0, ts_ns=boundary + 30 * MINUTE)  # floating -4,000

    # The new day's reference is the balance at the exact boundary: +4,000 in, -1,000 not.
    assert desk.account.day == new
    assert desk.account.day_start_balance == cents(104_000)
    assert desk.account.day_pnl == {old: cents(4000), new: cents(-1000)}
    (breach,) = breaches(effects, RuleName.DAILY_LOSS)
    assert (breach.value, breach.limit, breach.ts_ns) == (
        99_000.0,
        99_000.0,
        boundary + 30 * MINUTE,
    )


@pytest.mark.parametrize(("clock", "boundary", "old", "new", "wording"), BOUNDARIES)
def test_dst_when_loss_30_minutes_before_rollover_then_it_counts_against_the_old_day(
    clock: DayRollover, boundary: int, old: int, new: int, wording: str
) -> None:
    desk = Desk(rollover_plan(clock), start_ns=boundary - 20 * HOUR)
    desk.realise(4000.0, ts_ns=boundary - 2 * HOUR)
    desk.hold()

    assert outcome(desk.tick("US500", 4910.01, ts_ns=boundary - 31 * MINUTE)) == []
    effects = desk.tick("US500", 4910.0, ts_ns=boundary - 30 * MINUTE)  # floating -9,000

    # Still the old day: its reference is the initial balance, so the floor is 95,000 (on the new
    # day it would be 104,000 - 5,000 = 99,000).
    assert desk.account.day == old
    (breach,) = breaches(effects, RuleName.DAILY_LOSS)
    assert (breach.value, breach.limit, breach.ts_ns) == (
        95_000.0,
        95_000.0,
        boundary - 30 * MINUTE,
    )
    assert desk.account.day_pnl == {old: cents(4000)}


@pytest.mark.parametrize(("clock", "boundary", "old", "new", "wording"), BOUNDARIES)
def test_dst_when_daily_pause_hit_before_shifted_rollover_then_resumes_exactly_at_it(
    clock: DayRollover, boundary: int, old: int, new: int, wording: str
) -> None:
    desk = Desk(rollover_plan(clock, action="pause"), start_ns=boundary - 20 * HOUR)
    desk.hold()

    paused = desk.tick("US500", 4950.0, ts_ns=boundary - 30 * MINUTE)
    assert [p.until_ns for p in paused if isinstance(p, AccountPaused)] == [boundary]
    assert desk.clock(boundary - 1) == []

    effects = desk.clock(boundary + 30 * MINUTE)

    assert [e.ts_ns for e in effects if isinstance(e, AccountResumed)] == [boundary]
    assert desk.account.day == new
