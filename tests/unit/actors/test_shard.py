"""ShardCore: the symbol index limits tick work to holders; unknown accounts are counted."""

from __future__ import annotations

import msgspec
import pytest

from actors.events import AccountStatus, RuleBreached, RuleName
from actors.plans import DailyLoss, Inactivity, Plan
from actors.shard import AccountView, ShardCore
from bridge.commands import DisableTrading
from bridge.events import AnyPlatformEvent, DealEntry, DealExecuted, Side

from .builders import PLAN, T0, balance, deal, disabled, tick, utc_ns

DAY_NS = 86_400 * 1_000_000_000


def shard_with(*account_ids: str, plan: Plan = PLAN) -> ShardCore:
    shard = ShardCore(shard=0)
    shard.register((account_id, plan) for account_id in account_ids)
    return shard


def close(deal_id: int, position_id: int, account_id: str, symbol: str = "EURUSD") -> DealExecuted:
    return deal(
        deal_id,
        entry=DealEntry.OUT,
        side=Side.SELL,
        symbol=symbol,
        position_id=position_id,
        account_id=account_id,
    )


def test_tick_when_it_stays_inside_every_band_then_nobody_is_evaluated() -> None:
    shard = shard_with("a", "b")
    shard.apply([deal(1, account_id="a", symbol="EURUSD"), deal(2, account_id="b")])
    shard.apply([tick("EURUSD", 1.1, 1.1001)])
    evaluations = shard.stats.evaluations

    shard.apply([tick("EURUSD", 1.1001, 1.1002)])  # one pip: far from any limit

    assert shard.stats.evaluations == evaluations
    assert shard.market.book["EURUSD"] == (1.1001, 1.1002)


def test_tick_when_it_leaves_the_bands_then_only_holders_of_the_symbol_are_evaluated() -> None:
    shard = shard_with("a", "b", "c", "d")
    shard.apply(
        [
            deal(1, account_id="a", symbol="EURUSD"),
            deal(2, account_id="b", symbol="EURUSD"),
            deal(3, account_id="c", symbol="XAUUSD", price=2650.0),
        ]
    )
    shard.apply([tick("EURUSD", 1.1, 1.1001), tick("XAUUSD", 2650.0, 2650.5)])
    evaluations = shard.stats.evaluations

    shard.apply([tick("EURUSD", 0.9, 0.9001)])  # a crash: every EURUSD holder's band is left

    assert shard.stats.evaluations - evaluations == 2
    assert {a for a in "abcd" if shard.accounts[a].status.value == "failed"} == {"a", "b"}


def test_tick_when_nobody_holds_the_symbol_then_no_evaluation_but_book_updates() -> None:
    shard = shard_with("a")

    shard.apply([tick("US500", 5900.0, 5900.5)])

    assert shard.stats.evaluations == 0
    assert shard.stats.events == 1
    assert shard.market.book == {"US500": (5900.0, 5900.5)}


def test_index_when_last_position_in_a_symbol_closes_then_account_is_dropped() -> None:
    shard = shard_with("a")
    shard.apply([deal(1, account_id="a"), deal(2, account_id="a")])  # two EURUSD positions

    shard.apply([close(3, position_id=1, account_id="a")])
    assert shard.bands.symbols("a") == {"EURUSD"}

    shard.apply([close(4, position_id=2, account_id="a")])
    evaluations = shard.stats.evaluations
    shard.apply([tick("EURUSD", 1.2)])

    assert "a" not in shard.bands
    assert shard.stats.evaluations == evaluations


def test_index_when_account_holds_two_symbols_then_closing_one_keeps_the_other() -> None:
    shard = shard_with("a")
    shard.apply([deal(1, account_id="a"), deal(2, account_id="a", symbol="US500", price=5900.0)])

    shard.apply([close(3, position_id=1, account_id="a")])

    assert shard.bands.symbols("a") == {"US500"}


@pytest.mark.parametrize(
    "event",
    [deal(1, account_id="ghost"), balance(1, 10.0, account_id="ghost"), disabled(account_id="x")],
    ids=["deal", "balance", "trading_disabled"],
)
def test_event_when_account_is_not_hosted_then_counted_and_ignored(
    event: AnyPlatformEvent,
) -> None:
    shard = shard_with("a")

    effects = shard.apply([event]).effects

    assert effects == []
    assert shard.stats.unknown_account_events == 1
    assert set(shard.accounts) == {"a"}
    assert shard.stats.evaluations == 0


def test_register_when_repeated_then_idempotent_and_state_kept() -> None:
    shard = ShardCore(shard=3)
    assert shard.register([("a", PLAN), ("b", PLAN)]) == 2
    shard.apply([deal(1, account_id="a", commission=-7.0)])

    other = msgspec.structs.replace(PLAN, id="other", initial_balance=5_000.0)
    added = shard.register([("a", other), ("b", PLAN), ("c", PLAN)])

    assert added == 1
    assert shard.stats.accounts == 3
    assert shard.accounts["a"].plan == PLAN
    assert shard.accounts["a"].balance == 9_999_300  # cents


def test_apply_when_tick_breaches_holders_then_effects_and_stats_count_them() -> None:
    shard = shard_with("a", "b")
    shard.apply(
        [
            deal(1, account_id="a", symbol="US500", volume=100.0, price=5000.0),
            deal(2, account_id="b", symbol="US500", volume=1.0, price=5000.0),
        ]
    )

    effects = shard.apply([tick("US500", 4900.0, event_id="t1")]).effects
    effects += shard.apply([disabled("freeze:a:t1", account_id="a")]).effects

    freezes = [e for e in effects if isinstance(e, DisableTrading)]
    assert [f.account_id for f in freezes] == ["a"]
    assert shard.breached() == ["a"]
    assert (shard.stats.breaches, shard.stats.frozen) == (1, 1)
    view = AccountView.of(shard.accounts["a"], shard.market.book)
    assert (view.status, view.frozen, view.equity) == ("failed", True, 90_000.0)


def test_deal_when_book_has_the_symbol_then_new_position_is_marked_from_the_book() -> None:
    shard = shard_with("a")
    shard.apply([tick("EURUSD", 1.0999, 1.1001)])

    shard.apply([deal(1, account_id="a", price=1.1001)])

    assert shard.accounts["a"].floating == -2_000  # cents: long valued at the bid


def _plan_with(**rules: object) -> Plan:
    phase = msgspec.structs.replace(PLAN.phases[0], **rules)
    return msgspec.structs.replace(PLAN, phases=(phase,))


def test_clock_when_a_flat_account_gets_no_events_then_inactivity_still_fails_it_on_time() -> None:
    shard = shard_with("idle", "busy", plan=_plan_with(inactivity=Inactivity(days=2)))
    shard.apply([deal(1, account_id="busy", ts_ns=T0)])  # Monday; starts every account's clock

    # Only "busy" trades (Wednesday, Thursday); "idle" has had Tuesday and Wednesday without one.
    shard.apply([deal(2, account_id="busy", ts_ns=T0 + 2 * DAY_NS)])
    applied = shard.apply([deal(3, account_id="busy", ts_ns=T0 + 3 * DAY_NS)])

    failed = [e for e in applied.effects if isinstance(e, RuleBreached)]
    assert [(b.account_id, b.rule) for b in failed] == [("idle", RuleName.INACTIVITY)]
    assert failed[0].ts_ns == utc_ns(2026, 3, 4, 23)  # Thursday 00:00 in Prague
    assert shard.breached() == ["idle"]
    assert any(isinstance(e, DisableTrading) and e.account_id == "idle" for e in applied.effects)


def test_clock_when_a_paused_account_is_flat_then_it_resumes_at_the_next_boundary() -> None:
    plan = _plan_with(daily_loss=DailyLoss(pct=5.0, action="pause"))
    shard = shard_with("a", "b", plan=plan)
    shard.apply([deal(1, account_id="a", symbol="US500", volume=100.0, price=5000.0)])
    paused = shard.apply([tick("US500", 4_940.0, event_id="t1")]).effects
    closing = deal(
        2,
        account_id="a",
        entry=DealEntry.OUT,
        side=Side.SELL,
        symbol="US500",
        volume=100.0,
        price=4_940.0,
        position_id=1,
        profit=-6_000.0,
    )
    shard.apply([closing])  # the platform closed the position; the account is flat
    assert shard.accounts["a"].status is AccountStatus.PAUSED

    next_day = T0 + DAY_NS
    resumed = shard.apply([deal(3, account_id="b", ts_ns=next_day)]).effects

    assert [type(e).__name__ for e in paused if e.account_id == "a"] == [
        "RuleBreached",
        "AccountPaused",
        "CloseAllPositions",
        "DisableTrading",
    ]
    assert [type(e).__name__ for e in resumed] == ["AccountResumed", "EnableTrading"]
    assert shard.accounts["a"].status is AccountStatus.ACTIVE
    assert shard.accounts["a"].day_start_balance == 9_400_000  # the new day starts at 94,000
