"""What counts as a difference between the platform's account and ours."""

from __future__ import annotations

import pytest

from actors.reconcile import ReconcileConfig, compare
from actors.shard import Money
from bridge.platform import AccountState

CONFIG = ReconcileConfig(balance_tolerance_cents=0, equity_tolerance_pct=0.25)


def platform(balance: int, equity: int) -> AccountState:
    return AccountState(
        account_id="a",
        currency="USD",
        balance_cents=balance,
        credit_cents=0,
        equity_cents=equity,
        enabled=True,
    )


def test_compare_when_both_sides_agree_within_the_mark_tolerance_then_none() -> None:
    # $100,000 balance: equity may differ by up to $250 (ticks in flight mark it differently).
    assert (
        compare("a", Money(10_000_000, 9_950_000), platform(10_000_000, 9_975_000), CONFIG) is None
    )


def test_compare_when_balance_is_one_cent_off_then_a_difference_naming_it() -> None:
    found = compare("a", Money(10_000_000, 10_000_000), platform(10_000_001, 10_000_001), CONFIG)

    assert found is not None
    assert found.detail == "balance differs by +0.01"
    assert (found.balance, found.platform_balance) == (10_000_000, 10_000_001)


def test_compare_when_equity_is_beyond_tolerance_then_a_difference_naming_the_tolerance() -> None:
    found = compare("a", Money(10_000_000, 9_950_000), platform(10_000_000, 9_924_999), CONFIG)

    assert found is not None
    assert found.detail == "equity differs by -250.01 (tolerance 250.00)"


def test_compare_when_the_platform_has_no_such_account_then_a_difference_saying_so() -> None:
    found = compare("a", Money(10_000_000, 10_000_000), None, CONFIG)

    assert found is not None
    assert (found.platform_balance, found.platform_equity) == (None, None)
    assert found.detail == "the platform has no such account"


def test_config_when_tolerance_is_negative_then_rejected() -> None:
    with pytest.raises(ValueError, match="tolerances"):
        ReconcileConfig(balance_tolerance_cents=-1)
