"""Absurd ticks are refused; a lone bad print costs nothing, a real gap costs one tick."""

from __future__ import annotations

from bridge.events import PriceTicked
from bridge.validation import TickGuard, TickLimits


def tick(n: int, bid: float, ask: float, symbol: str = "EURUSD") -> PriceTicked:
    return PriceTicked(event_id=f"t{n}", ts_ns=n, symbol=symbol, bid=bid, ask=ask)


def test_guard_when_mid_jumps_past_the_limit_then_the_tick_is_refused_naming_the_move() -> None:
    guard = TickGuard(TickLimits(max_jump=0.1))
    assert guard.refuse(tick(1, 1.1000, 1.1001)) is None
    reason = guard.refuse(tick(2, 0.5000, 0.5001))
    assert reason is not None
    assert all(part in reason for part in ("t2", "EURUSD", "-54"))


def test_guard_when_bad_print_is_followed_by_normal_prices_then_only_it_is_refused() -> None:
    guard = TickGuard(TickLimits(max_jump=0.1))
    guard.refuse(tick(1, 1.1000, 1.1001))
    assert guard.refuse(tick(2, 11.0, 11.0001)) is not None
    assert guard.refuse(tick(3, 1.1002, 1.1003)) is None
    assert guard.refuse(tick(4, 1.1004, 1.1005)) is None


def test_guard_when_a_gap_is_confirmed_by_the_next_tick_then_the_new_level_is_accepted() -> None:
    guard = TickGuard(TickLimits(max_jump=0.1))
    guard.refuse(tick(1, 1.2000, 1.2001))
    assert guard.refuse(tick(2, 0.9000, 0.9001)) is not None  # e.g. a 25% central-bank gap
    assert guard.refuse(tick(3, 0.9010, 0.9011)) is None
    assert guard.refuse(tick(4, 0.9020, 0.9021)) is None


def test_guard_when_spread_is_absurdly_wide_then_the_tick_is_refused() -> None:
    guard = TickGuard(TickLimits(max_spread=0.01))
    reason = guard.refuse(tick(1, 1.0, 1.5))
    assert "spread" in (reason or "")


def test_guard_when_symbols_differ_then_each_has_its_own_reference() -> None:
    guard = TickGuard(TickLimits(max_jump=0.1))
    guard.refuse(tick(1, 1.1, 1.1001))
    assert guard.refuse(tick(2, 2300.0, 2300.5, symbol="XAUUSD")) is None
