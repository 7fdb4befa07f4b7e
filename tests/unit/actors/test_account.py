"""The account entity: MetaTrader balance arithmetic, equity floors, breaches, dedupe, rollover.

Money on the entity is integer cents; `c(...)` writes an expected amount in currency units.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from actors.account import Account, Effect
from actors.events import (
    AccountFrozen,
    AccountStatus,
    BreachAction,
    PhaseFailed,
    RuleBreached,
    RuleName,
)
from actors.market import Market, Quote
from actors.plans import DailyLoss, MaxLoss, Plan
from bridge.commands import DisableTrading
from bridge.events import AnyPlatformEvent, DealEntry, PriceTicked, Side

from .builders import PLAN, T0, balance, deal, disabled, tick, utc_ns

DAY_NS = 86_400 * 1_000_000_000


def c(amount: float) -> int:
    """An amount in cents."""
    return round(amount * 100)


class Desk:
    """An account and its market, fed as a shard feeds it: a tick updates the book first."""

    def __init__(self, account: Account) -> None:
        self.account = account
        self.market = Market()

    def apply(
        self, event: AnyPlatformEvent, quotes: dict[str, Quote] | None = None
    ) -> list[Effect]:
        self.market.book.update(quotes or {})
        if isinstance(event, PriceTicked):
            self.market.book[event.symbol] = (event.bid, event.ask)
        return self.account.apply(event, self.market)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.account, name)


def fresh(plan: Plan = PLAN, account_id: str = "A") -> Desk:
    return Desk(Account.open(account_id, plan))


def snapshot(account: Desk) -> bytes:
    return msgspec.msgpack.encode(account.account)


def long_us500(account: Desk, lots: float = 100.0, deal_id: int = 1, ts_ns: int = T0) -> None:
    """A long US500 position at 5000: a point on a lot is one dollar, so losses are exact."""
    account.apply(deal(deal_id, symbol="US500", volume=lots, price=5000.0, ts_ns=ts_ns))


def realise(account: Desk, deal_id: int, profit: float, ts_ns: int) -> None:
    """Open and close a position in one go, realising `profit`."""
    account.apply(deal(deal_id, symbol="US500", price=5000.0, ts_ns=ts_ns))
    closing = deal(
        deal_id + 1,
        entry=DealEntry.OUT,
        side=Side.SELL,
        symbol="US500",
        price=5000.0,
        position_id=deal_id,
        profit=profit,
        ts_ns=ts_ns,
    )
    account.apply(closing)


# -- balance and floating ------------------------------------------------------------------------


def test_deal_in_when_commission_charged_then_balance_drops_by_commission_only() -> None:
    account = fresh()

    account.apply(deal(1, commission=-7.0))

    assert account.balance == c(99_993.0)
    assert list(account.positions) == [1]


def test_deal_out_when_profit_commission_and_swap_then_balance_moves_by_their_sum() -> None:
    account = fresh()
    account.apply(deal(1, commission=-7.0))

    closing = deal(
        2,
        entry=DealEntry.OUT,
        side=Side.SELL,
        position_id=1,
        price=1.1015,
        profit=150.0,
        commission=-7.0,
        swap=-1.2,
    )
    account.apply(closing)

    assert account.balance == c(100_000.0) - c(7.0) + c(150.0) - c(7.0) - c(1.2)
    assert account.positions == {}
    assert account.equity == account.balance


def test_balance_operation_when_deposit_and_withdrawal_then_balance_follows() -> None:
    account = fresh()

    account.apply(balance(1, 2_500.0))
    account.apply(balance(2, -1_000.0))

    assert account.balance == c(101_500.0)


def test_long_position_when_ticked_then_floating_is_marked_at_the_bid() -> None:
    account = fresh()
    account.apply(deal(1, side=Side.BUY, volume=1.0, price=1.1))

    account.apply(tick("EURUSD", 1.101, 1.1012))

    assert account.floating == c(100.0)
    assert account.equity == c(100_100.0)


def test_short_position_when_ticked_then_floating_is_marked_at_the_ask() -> None:
    account = fresh()
    account.apply(deal(1, side=Side.SELL, volume=1.0, price=1.1))

    account.apply(tick("EURUSD", 1.098, 1.099))

    assert account.floating == c(100.0)


def test_new_position_when_book_has_a_quote_then_it_is_marked_at_once() -> None:
    account = fresh()

    account.apply(deal(1, side=Side.BUY, price=1.1001), {"EURUSD": (1.0999, 1.1001)})

    assert account.floating == c(-20.0)


def test_tick_when_for_another_symbol_then_floating_is_unchanged() -> None:
    account = fresh()
    long_us500(account)
    account.apply(tick("US500", 5010.0))

    account.apply(tick("EURUSD", 0.5))

    assert account.floating == c(1_000.0)


def test_partial_close_when_half_a_position_closes_then_rest_stays_marked() -> None:
    account = fresh()
    account.apply(deal(1, volume=2.0, price=1.1))
    account.apply(tick("EURUSD", 1.102, 1.1022))
    book = {"EURUSD": (1.102, 1.1022)}

    partial = deal(
        2, entry=DealEntry.OUT, side=Side.SELL, volume=0.5, price=1.102, position_id=1, profit=100.0
    )
    account.apply(partial, book)

    assert account.balance == c(100_100.0)
    assert account.positions[1].volume == 1.5
    assert account.floating == c(300.0)

    rest = deal(
        3, entry=DealEntry.OUT, side=Side.SELL, volume=1.5, price=1.102, position_id=1, profit=300.0
    )
    account.apply(rest, book)

    assert account.positions == {}
    assert account.floating == 0
    assert account.equity == c(100_400.0)


def test_partial_close_when_book_has_no_quote_then_floating_shrinks_with_the_volume() -> None:
    account = fresh()
    account.apply(deal(1, volume=2.0, price=1.1))
    account.apply(tick("EURUSD", 1.102, 1.1022))

    partial = deal(2, entry=DealEntry.OUT, side=Side.SELL, volume=0.5, position_id=1, profit=100.0)
    account.apply(partial)

    assert account.floating == c(300.0)


def test_adding_to_a_position_when_same_position_id_then_open_price_is_volume_weighted() -> None:
    account = fresh()
    account.apply(deal(1, volume=1.0, price=1.1))

    account.apply(deal(2, volume=3.0, price=1.104, position_id=1))
    account.apply(tick("EURUSD", 1.104, 1.1042))

    position = account.positions[1]
    assert list(account.positions) == [1]
    assert position.volume == 4.0
    assert position.open_price == pytest.approx(1.103, abs=1e-12)
    assert account.floating == c(400.0)


# -- dedupe --------------------------------------------------------------------------------------


@pytest.mark.parametrize("replayed_id", [5, 4, 1])
def test_deal_when_same_or_lower_deal_id_arrives_again_then_nothing_changes(
    replayed_id: int,
) -> None:
    account = fresh()
    account.apply(deal(1, commission=-3.0))
    account.apply(deal(5, symbol="US500", price=5000.0, commission=-3.0))
    before = snapshot(account)

    effects = account.apply(deal(replayed_id, commission=-1_000.0))
    effects += account.apply(balance(replayed_id, -50_000.0))

    assert effects == []
    assert snapshot(account) == before


# -- limits --------------------------------------------------------------------------------------


def test_daily_loss_when_floating_loss_crosses_limit_then_account_breaches() -> None:
    account = fresh()
    long_us500(account)

    effects = account.apply(tick("US500", 4_900.0, event_id="t1"))

    assert account.status is AccountStatus.FAILED
    assert [type(e) for e in effects] == [RuleBreached, PhaseFailed, DisableTrading]
    assert account.breach is not None
    assert account.breach.rule is RuleName.DAILY_LOSS
    assert (account.breach.value, account.breach.limit) == (90_000.0, 95_000.0)


def test_daily_loss_when_equity_exactly_at_floor_then_it_counts_as_a_breach() -> None:
    account = fresh()
    long_us500(account)

    effects = account.apply(tick("US500", 4_950.0, event_id="t1"))

    assert account.equity == account.daily_floor == c(95_000.0)
    assert effects == [
        RuleBreached(
            event_id="breach:A:daily_loss:t1",
            ts_ns=T0,
            account_id="A",
            caused_by="t1",
            rule=RuleName.DAILY_LOSS,
            action=BreachAction.FAIL,
            value=95_000.0,
            limit=95_000.0,
            phase="challenge",
        ),
        PhaseFailed(
            event_id="failed:A:challenge",
            ts_ns=T0,
            account_id="A",
            caused_by="t1",
            phase="challenge",
            rule=RuleName.DAILY_LOSS,
        ),
        DisableTrading(
            command_id="freeze:A:t1", account_id="A", reason="daily_loss", caused_by="t1"
        ),
    ]


def test_daily_loss_when_equity_a_cent_above_floor_then_no_breach() -> None:
    account = fresh()
    long_us500(account)

    effects = account.apply(tick("US500", 4_950.0001, event_id="t1"))

    assert account.equity > account.daily_floor
    assert effects == []
    assert account.status is AccountStatus.ACTIVE


def test_breach_when_caused_by_a_deal_commission_then_deal_event_is_the_cause() -> None:
    account = fresh()

    effects = account.apply(deal(9, commission=-5_000.0))

    assert [type(e) for e in effects] == [RuleBreached, PhaseFailed, DisableTrading]
    assert effects[0] == account.breach
    assert account.breach is not None
    assert account.breach.caused_by == "d9"


def test_max_loss_when_it_is_the_binding_floor_then_max_loss_breaches() -> None:
    phase = msgspec.structs.replace(
        PLAN.phases[0], daily_loss=DailyLoss(pct=8.0), max_loss=MaxLoss(pct=5.0)
    )
    account = fresh(msgspec.structs.replace(PLAN, phases=(phase,)))
    long_us500(account)

    effects = account.apply(tick("US500", 4_950.0, event_id="t1"))

    assert account.breach is not None
    assert account.breach.rule is RuleName.MAX_LOSS
    assert account.breach.limit == 95_000.0
    assert effects[2] == DisableTrading(
        command_id="freeze:A:t1", account_id="A", reason="max_loss", caused_by="t1"
    )


def test_max_loss_when_losing_days_push_daily_floor_below_static_then_max_loss_binds() -> None:
    account = fresh()
    realise(account, 1, -4_000.0, T0)  # Monday: balance 96 000
    realise(account, 3, -3_000.0, T0 + DAY_NS)  # Tuesday opens at 96 000, ends at 93 000
    account.apply(tick("US500", 5_000.0, event_id="wed", ts_ns=T0 + 2 * DAY_NS))
    assert (account.day_start_balance, account.daily_floor) == (c(93_000.0), c(88_000.0))

    wednesday = T0 + 2 * DAY_NS
    long_us500(account, lots=30.0, deal_id=10, ts_ns=wednesday)
    effects = account.apply(tick("US500", 4_900.0, event_id="t9", ts_ns=wednesday))

    assert account.equity == c(90_000.0)
    assert account.breach is not None
    assert (account.breach.rule, account.breach.limit) == (RuleName.MAX_LOSS, 90_000.0)
    assert len(effects) == 3


def test_breached_account_when_loss_deepens_then_no_second_breach() -> None:
    account = fresh()
    long_us500(account)
    account.apply(tick("US500", 4_900.0, event_id="t1"))
    first = account.breach

    later = account.apply(tick("US500", 4_000.0, event_id="t2"))
    later += account.apply(deal(2, commission=-50_000.0))

    assert later == []
    assert account.breach == first


def test_breach_ids_when_same_events_applied_to_two_entities_then_effects_are_identical() -> None:
    effects = []
    for _ in range(2):
        account = fresh()
        long_us500(account)
        effects.append(account.apply(tick("US500", 4_900.0, event_id="t1")))

    assert effects[0] == effects[1]
    breach, _, freeze = effects[0]
    assert isinstance(breach, RuleBreached)
    assert isinstance(freeze, DisableTrading)
    assert (breach.event_id, freeze.command_id) == ("breach:A:daily_loss:t1", "freeze:A:t1")


# -- freeze confirmation -------------------------------------------------------------------------


def test_trading_disabled_when_confirmed_then_one_account_frozen_and_repeat_yields_nothing() -> (
    None
):
    account = fresh()
    long_us500(account)
    account.apply(tick("US500", 4_900.0, event_id="t1"))

    first = account.apply(disabled("freeze:A:t1"))
    repeat = account.apply(disabled("freeze:A:t1"))
    other = account.apply(disabled("freeze:A:t2"))

    assert first == [
        AccountFrozen(
            event_id="frozen:A:freeze:A:t1",
            ts_ns=T0,
            account_id="A",
            caused_by="td:freeze:A:t1",
            command_id="freeze:A:t1",
            reason="daily_loss",
        )
    ]
    assert repeat == other == []
    assert account.frozen == first[0]


def test_trading_disabled_when_no_breach_then_frozen_for_a_manual_reason() -> None:
    account = fresh()

    effects = account.apply(disabled("ops-42"))

    assert [(type(e), getattr(e, "reason", None)) for e in effects] == [(AccountFrozen, "manual")]
    assert account.status is AccountStatus.ACTIVE


# -- trading day ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "last_before", "midnight"),
    [
        # winter, CET: midnight in Prague is 23:00 UTC
        (utc_ns(2026, 3, 2, 9), utc_ns(2026, 3, 2, 22, 59, 59), utc_ns(2026, 3, 2, 23)),
        # the night of the March change (Sat -> Sun) is still CET
        (utc_ns(2026, 3, 28, 9), utc_ns(2026, 3, 28, 22, 59, 59), utc_ns(2026, 3, 28, 23)),
        # first midnight after the March change is CEST: 22:00 UTC
        (utc_ns(2026, 3, 29, 9), utc_ns(2026, 3, 29, 21, 59, 59), utc_ns(2026, 3, 29, 22)),
        # summer
        (utc_ns(2026, 7, 1, 9), utc_ns(2026, 7, 1, 21, 59, 59), utc_ns(2026, 7, 1, 22)),
        # first midnight after the October change is CET again
        (utc_ns(2026, 10, 25, 9), utc_ns(2026, 10, 25, 22, 59, 59), utc_ns(2026, 10, 25, 23)),
    ],
    ids=["winter", "march-change-night", "after-march-change", "summer", "after-october-change"],
)
def test_rollover_when_first_event_after_prague_midnight_then_day_start_is_balance_then(
    first: int, last_before: int, midnight: int
) -> None:
    account = fresh()
    account.apply(tick("EURUSD", 1.1, ts_ns=first))
    realise(account, 1, -3_000.0, first + 1)

    account.apply(tick("EURUSD", 1.1, ts_ns=last_before))
    assert account.day_start_balance == c(100_000.0)

    account.apply(deal(7, commission=-10.0, ts_ns=midnight))

    assert account.day_start_balance == c(97_000.0)  # the balance before the day's first deal
    assert account.balance == c(96_990.0)
    assert account.daily_floor == c(92_000.0)


def test_rollover_when_several_days_pass_without_events_then_one_roll_to_current_balance() -> None:
    account = fresh()
    realise(account, 1, -2_000.0, T0)

    account.apply(tick("EURUSD", 1.1, ts_ns=T0 + 5 * DAY_NS))
    realise(account, 3, -1_000.0, T0 + 5 * DAY_NS)
    account.apply(tick("EURUSD", 1.1, ts_ns=T0 + 5 * DAY_NS + 3_600 * 10**9))

    assert account.day_start_balance == c(98_000.0)
    assert account.balance == c(97_000.0)


def test_rollover_when_an_event_lands_a_nanosecond_before_midnight_then_midnight_still_rolls() -> (
    None
):
    midnight = utc_ns(2026, 3, 2, 23)
    account = fresh()
    account.apply(tick("EURUSD", 1.1, ts_ns=midnight - 1))
    realise(account, 1, -3_000.0, midnight - 1)

    account.apply(tick("EURUSD", 1.1, ts_ns=midnight + 60 * 10**9))

    assert account.day_start_balance == c(97_000.0)


# -- snapshot ------------------------------------------------------------------------------------


def test_snapshot_when_round_tripped_through_msgpack_then_state_and_behaviour_are_equal() -> None:
    account = fresh()
    account.apply(deal(1, volume=2.0, price=1.1))
    long_us500(account, deal_id=2)
    account.apply(tick("US500", 4_900.0, event_id="t1"))
    account.apply(disabled("freeze:A:t1"))

    restored = msgspec.msgpack.decode(snapshot(account), type=Account)

    assert restored == account.account
    assert restored.breach is not None
    assert restored.frozen is not None
    assert restored.positions[1].buy is True
    later = deal(3, entry=DealEntry.OUT, side=Side.SELL, position_id=1, volume=2.0, profit=-50.0)
    market = account.market
    assert restored.apply(later, market) == account.apply(later)
    assert restored.apply(deal(3), market) == []
    assert restored == account.account


def test_withdrawal_when_max_loss_trails_then_the_peak_drops_by_the_payout() -> None:
    # OANDA's prop-trading rules: the high-water mark "will decrease by the amount
    # of the payout request".
    phase = msgspec.structs.replace(
        PLAN.phases[0], daily_loss=None, max_loss=MaxLoss(pct=10.0, mode="trailing_closed_balance")
    )
    account = fresh(msgspec.structs.replace(PLAN, phases=(phase,)))
    realise(account, 1, 6_000.0, T0)  # a closed high of 106,000: floor 96,000
    assert account.max_floor == c(96_000.0)

    effects = account.apply(balance(3, -5_000.0))  # a payout of 5,000

    assert effects == []
    assert (account.balance, account.peak, account.max_floor) == (c(101_000), c(101_000), c(91_000))
