"""What counts as a difference between the platform's account and ours, and what a pass does
with one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from actors.reconcile import ReconcileConfig, Reconciler, compare
from actors.shard import Money
from bridge.platform import AccountState, NotFound, Refused
from ledger.database import create_engine, upgrade
from ledger.journal import Journal

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


class Remote:
    """A method as a Ray handle exposes it: `handle.method.remote(...)`, awaited."""

    def __init__(self, function: Any) -> None:
        self.remote = function


class FakeShard:
    """One shard's side: balances the test sets, in cents (flat accounts: equity = balance)."""

    def __init__(self, balances: dict[str, int]) -> None:
        self.balances = balances
        self.hosted = Remote(self._hosted)
        self.money = Remote(self._money)

    async def _hosted(self) -> list[str]:
        return list(self.balances)

    async def _money(self, account_ids: list[str]) -> dict[str, Money]:
        return {a: Money(self.balances[a], self.balances[a]) for a in account_ids}


class FakeWorker:
    """The platform's side, asked through the worker: a balance, an error, or no answer."""

    def __init__(self, answers: dict[str, int | Exception | None]) -> None:
        self.answers = answers
        self.asked: list[str] = []
        self.account_states = Remote(self._account_states)

    async def _account_states(self, account_ids: list[str]) -> list[AccountState | Exception]:
        """As `BridgeWorker.account_states`: asked together, a refusal is that account's
        answer, anything else fails the call."""
        answers = await asyncio.gather(
            *(self._account_state(a) for a in account_ids), return_exceptions=True
        )
        for answer in answers:
            if isinstance(answer, BaseException) and not isinstance(answer, Refused):
                raise answer
        return answers  # type: ignore[return-value]

    async def _account_state(self, account_id: str) -> AccountState:
        self.asked.append(account_id)
        answer = self.answers[account_id]
        if answer is None:
            await asyncio.sleep(3600)  # the platform never answers
        if isinstance(answer, Exception):
            raise answer
        assert isinstance(answer, int)
        return platform(answer, answer)


class OneShardPlacement:
    shard_count = 1

    def shard_of(self, account_id: str) -> int:
        return 0


def reconciler(shard: FakeShard, worker: FakeWorker, database_url: str) -> Reconciler:
    config = ReconcileConfig(recheck_after_s=0.01, query_timeout_s=0.2)
    return Reconciler(config, [shard], OneShardPlacement(), worker, database_url)


@pytest.fixture
async def migrated_sqlite(sqlite_url: str) -> str:
    await upgrade(sqlite_url)
    return sqlite_url


async def journaled(database_url: str) -> list[str]:
    engine = create_engine(database_url)
    try:
        return [f"{e.kind}:{e.account_id}" for e in await Journal(engine).read()]
    finally:
        await engine.dispose()


async def test_pass_when_a_difference_clears_by_the_recheck_then_no_mismatch(
    migrated_sqlite: str,
) -> None:
    shard = FakeShard({"a": 10_000_000})
    worker = FakeWorker({"a": 10_050_000})  # a deposit the bridge has not delivered yet
    found = reconciler(shard, worker, migrated_sqlite)
    task = asyncio.ensure_future(found.run_pass())
    await asyncio.sleep(0.005)
    shard.balances["a"] = 10_050_000  # ... and now has
    report = await task

    assert (report.rechecked, report.mismatches, report.errors) == (1, [], 0)
    assert worker.asked == ["a", "a"]
    assert await journaled(migrated_sqlite) == []


async def test_pass_when_a_mismatch_persists_then_journaled_once_and_cleared_when_it_agrees(
    migrated_sqlite: str,
) -> None:
    shard = FakeShard({"a": 10_000_000, "b": 10_000_000})
    worker = FakeWorker({"a": 10_000_000, "b": 9_990_000})
    found = reconciler(shard, worker, migrated_sqlite)

    first = await found.run_pass()
    second = await found.run_pass()
    assert [d.account_id for d in first.mismatches] == ["b"]
    assert second.mismatches == first.mismatches
    assert await journaled(migrated_sqlite) == ["reconciliation_mismatch:b"]  # once
    assert (await found.ping()).trouble == "1 account differs from the platform"

    shard.balances["b"] = 9_990_000  # the lost event is recovered
    await found.run_pass()
    assert (await found.report()).differing == []
    assert (await found.ping()).trouble == ""
    await found.close()


async def test_pass_when_platform_refuses_then_error_not_mismatch(migrated_sqlite: str) -> None:
    shard = FakeShard({"gone": 10_000_000, "locked": 10_000_000, "fine": 10_000_000})
    worker = FakeWorker(
        {
            "gone": NotFound("no account"),
            "locked": Refused("401 session expired"),
            "fine": 10_000_000,
        }
    )
    found = reconciler(shard, worker, migrated_sqlite)

    report = await found.run_pass()

    # No such account on the platform is a mismatch; a refusal is not known yet.
    assert [(d.account_id, d.detail) for d in report.mismatches] == [
        ("gone", "the platform has no such account")
    ]
    assert report.errors == 1
    assert sorted(worker.asked) == ["fine", "gone", "gone", "locked"]  # "gone": rechecked


async def test_pass_when_platform_does_not_answer_then_the_accounts_asked_with_it_are_errors(
    migrated_sqlite: str,
) -> None:
    # Asked together (a batch call answers them at once): a time-out leaves all of them unknown.
    shard = FakeShard({"gone": 10_000_000, "slow": 10_000_000})
    worker = FakeWorker({"gone": NotFound("no account"), "slow": None})
    found = reconciler(shard, worker, migrated_sqlite)

    report = await found.run_pass()

    assert (report.mismatches, report.errors) == ([], 2)
