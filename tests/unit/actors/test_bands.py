"""Price bands: a tick inside an account's band cannot change what `on_tick` does.

The proof is `test_bands_when_random_plans_and_streams_then_same_effects_as_every_holder`: two
copies of the same accounts, one given every tick of its symbols (as `ShardCore` does today), the
other only the ticks `BandIndex.leaving` names, must emit the same effects in the same order.
`test_half_width_when_quotes_move_inside_the_band_then_equity_stays_inside_the_bracket` checks the
bound itself at the band's corners, where sign flips of the raw P&L change the conversion side.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from actors.account import Account, Effect, Position
from actors.bands import EPS_MAX, EVERY_TICK, NEVER, SAFETY, BandIndex, half_width
from actors.events import AccountStatus, PhasePassed, RuleBreached, RuleProgressed
from actors.market import Market, Quote
from actors.plans import Plan
from actors.rules import NO_LIMIT, NO_TRIGGER
from bridge.events import DealEntry, DealExecuted, PriceTicked, Side
from bridge.instruments import DEFAULT_SYMBOLS

from .desk import MONDAY, make_plan

SECOND = 1_000_000_000
MIDS: dict[str, float] = {
    "EURUSD": 1.085,
    "GBPUSD": 1.265,
    "USDJPY": 150.25,
    "EURGBP": 0.858,
    "GBPJPY": 190.1,
    "EURJPY": 163.0,
    "XAUUSD": 2650.0,
}
SYMBOLS = tuple(MIDS)
LOTS = {"XAUUSD": 0.5}  # largest lot per symbol; 2 lots otherwise
CALM = make_plan(
    initial=100_000.0,
    warning_levels=[50, 80],
    daily_loss={"pct": 5},
    max_loss={"pct": 10},
    profit_target={"pct": 10, "basis": "equity"},
)
"""Far from every limit after opening (a static floor: no trailing peak right above equity)."""


def book_at(mids: dict[str, float], spread: float = 1e-4) -> dict[str, Quote]:
    """Bids just under the mids; asks `spread` above them (a wider spread moves only the ask)."""
    return {s: (m * (1 - 5e-5), m * (1 - 5e-5) * (1 + spread)) for s, m in mids.items()}


def opening(
    account_id: str,
    deal_id: int,
    symbol: str,
    buy: bool,
    lots: float,
    book: dict[str, Quote],
    ts_ns: int,
) -> DealExecuted:
    bid, ask = book[symbol]
    return DealExecuted(
        event_id=f"{account_id}:d{deal_id}",
        ts_ns=ts_ns,
        account_id=account_id,
        deal_id=deal_id,
        position_id=deal_id,
        symbol=symbol,
        entry=DealEntry.IN,
        side=Side.BUY if buy else Side.SELL,
        volume=lots,
        price=ask if buy else bid,
    )


def closing(
    account: Account, position_id: int, deal_id: int, book: dict[str, Quote], ts_ns: int
) -> DealExecuted:
    position = account.positions[position_id]
    return DealExecuted(
        event_id=f"{account.account_id}:d{deal_id}",
        ts_ns=ts_ns,
        account_id=account.account_id,
        deal_id=deal_id,
        position_id=position_id,
        symbol=position.symbol,
        entry=DealEntry.OUT,
        side=Side.SELL if position.buy else Side.BUY,
        volume=position.volume,
        price=book[position.symbol][0 if position.buy else 1],
        profit=position.value(book) / 100,
    )


def account_with(
    plan: Plan, *positions: tuple[str, bool, float], book: dict[str, Quote]
) -> Account:
    market = Market()
    market.book.update(book)
    account = Account.open("A", plan)
    for n, (symbol, buy, lots) in enumerate(positions, start=1):
        account.apply(opening("A", n, symbol, buy, lots, book, MONDAY), market)
    return account


# Unit tests ----------------------------------------------------------------------------------


def test_half_width_when_far_from_limits_then_capped_at_eps_max() -> None:
    book = book_at(MIDS)
    account = account_with(CALM, ("EURUSD", True, 0.01), book=book)

    assert half_width(account, book) == EPS_MAX


def test_half_width_when_account_failed_then_never_leaves() -> None:
    book = book_at(MIDS)
    account = account_with(CALM, ("EURUSD", True, 1.0), book=book)
    account.status = AccountStatus.FAILED
    account.low, account.high = NO_LIMIT, NO_TRIGGER

    assert half_width(account, book) == NEVER


def test_half_width_when_a_conversion_quote_is_missing_then_every_tick() -> None:
    book = book_at(MIDS)
    account = account_with(CALM, ("EURGBP", True, 1.0), book=book)
    del book["GBPUSD"]

    assert half_width(account, book) == EVERY_TICK


def test_half_width_when_equity_one_cent_above_low_then_every_tick() -> None:
    book = book_at(MIDS)
    account = account_with(CALM, ("EURUSD", True, 1.0), book=book)
    account.low = account.balance + account.credit + account.floating - 2  # room: 2 - 1 - 1 = 0

    assert half_width(account, book) == EVERY_TICK


def test_half_width_when_nearer_the_limit_then_narrower() -> None:
    book = book_at(MIDS)
    far = account_with(CALM, ("EURUSD", True, 2.0), book=book)
    near = account_with(CALM, ("EURUSD", True, 2.0), book=book)
    near.low = near.balance + near.floating - 10_000  # $100 above the floor

    assert 0 < half_width(near, book) < half_width(far, book)


def test_leaving_when_quote_inside_band_then_nobody_and_outside_then_the_account() -> None:
    book = book_at(MIDS)
    account = account_with(CALM, ("EURUSD", True, 2.0), ("XAUUSD", False, 0.1), book=book)
    account.low = account.balance + account.floating - 50_000  # $500 of room
    index = BandIndex()
    index.update("A", account, book)
    width = half_width(account, book)
    bid, ask = book["EURUSD"]

    assert index.leaving("EURUSD", bid * (1 + width / 2), ask * (1 + width / 2)) == []
    assert index.leaving("EURUSD", bid * (1 - 2 * width), ask) == ["A"]
    assert index.leaving("XAUUSD", *book["XAUUSD"]) == []
    assert index.leaving("US500", 5900.0, 5900.5) == []


def test_update_when_position_converts_then_band_covers_the_conversion_symbol() -> None:
    book = book_at(MIDS)
    account = account_with(CALM, ("EURGBP", True, 1.0), book=book)
    index = BandIndex()

    index.update("A", account, book)

    assert (index.slots("EURGBP"), index.slots("GBPUSD"), index.slots("EURUSD")) == (1, 1, 0)
    assert index.leaving("GBPUSD", 0.5, 0.5001) == ["A"]


def test_update_when_account_is_flat_then_it_holds_no_slot() -> None:
    book = book_at(MIDS)
    account = account_with(CALM, ("EURUSD", True, 1.0), book=book)
    index = BandIndex()
    index.update("A", account, book)
    account.positions.clear()

    index.update("A", account, book)

    assert index.slots("EURUSD") == 0
    assert "A" not in index
    assert index.leaving("EURUSD", 0.1, 0.1001) == []


def test_update_when_quote_missing_then_every_tick_of_its_symbols_leaves() -> None:
    book = book_at(MIDS)
    account = account_with(CALM, ("USDJPY", False, 1.0), book=book)
    index = BandIndex()
    del book["USDJPY"]

    index.update("A", account, book)

    assert index.leaving("USDJPY", 150.25, 150.26) == ["A"]


def test_remove_when_slot_freed_then_it_never_matches_and_is_reused() -> None:
    book = book_at(MIDS)
    index = BandIndex()
    for name in ("a", "b", "c"):
        account = account_with(CALM, ("EURUSD", True, 1.0), book=book)
        account.low = account.balance + account.floating  # no room: every tick
        index.update(name, account, book)

    index.remove("b")

    assert index.leaving("EURUSD", *book["EURUSD"]) == ["a", "c"]
    assert index.slots("EURUSD") == 2
    index.update("d", account, book)
    assert index.leaving("EURUSD", *book["EURUSD"]) == ["a", "d", "c"]  # d took b's slot


def test_index_when_more_accounts_than_capacity_then_grows_and_keeps_slot_order() -> None:
    book = book_at(MIDS)
    account = account_with(CALM, ("EURUSD", True, 1.0), book=book)
    account.low = account.balance + account.floating
    index = BandIndex()
    names = [f"acc-{i:04d}" for i in range(1000)]
    for name in names:
        index.update(name, account, book)

    assert index.slots("EURUSD") == len(index) == 1000
    assert index.leaving("EURUSD", *book["EURUSD"]) == names


# The bound, at the corners of the band ------------------------------------------------------

CONVERTED = ("EURGBP", "GBPJPY", "USDJPY", "EURJPY", "EURUSD", "XAUUSD")


@st.composite
def marked_accounts(draw: st.DrawFn) -> tuple[Account, dict[str, Quote]]:
    """A started account with positions opened near the book (raw P&L near zero: sign flips),
    a random bracket around its equity, and a book with spreads from tight to wide."""
    market = Market()
    spreads = {s: draw(st.sampled_from([0.0, 1e-5, 1e-4, 3e-3, 0.05])) for s in MIDS}
    mids = {s: m * draw(st.floats(0.9, 1.1)) for s, m in MIDS.items()}
    book = {s: (m, m * (1 + spreads[s])) for s, m in mids.items()}
    account = Account.open("A", CALM)
    for n in range(draw(st.integers(1, 4))):
        symbol = draw(st.sampled_from(CONVERTED))
        spec = DEFAULT_SYMBOLS[symbol]
        conversion = market.conversion(spec.quote, "USD")
        offset = draw(st.sampled_from([0.0, 1e-6, -1e-6, 1e-4, -3e-3, 2e-2, 0.5, -0.4]))
        account.positions[n] = Position(
            symbol=symbol,
            buy=draw(st.booleans()),
            volume=draw(st.floats(0.01, 5.0)),
            open_price=mids[symbol] * (1 + offset),
            contract_size=spec.contract_size,
            conversion=conversion[0] if conversion else None,
            inverted=conversion[1] if conversion else False,
            opened_ns=MONDAY,
            open_day=0,
        )
    equity = account.balance + sum(p.value(book) for p in account.positions.values())
    account.low = equity - draw(st.integers(1, 2_000_000))
    account.high = draw(st.sampled_from([NO_TRIGGER, equity + draw(st.integers(1, 2_000_000))]))
    if draw(st.booleans()):
        _tighten(account, equity, book)
    return account, book


def _tighten(account: Account, equity: int, book: dict[str, Quote]) -> None:
    """Set `low` so that the width before the safety factor is EPS_MAX: the second-order terms of
    the bound (the rate moving while the price moves) then count."""
    slop = len(account.positions) + 1
    account.low, account.high = equity - 1_000 - slop, NO_TRIGGER
    width = half_width(account, book)
    if 0 < width < EPS_MAX:
        total = SAFETY * 1_000 / (100 * width)  # ΣS, read back from the width
        account.low = equity - math.ceil(100 * EPS_MAX * total) - slop


@settings(max_examples=200, deadline=None)
@given(case=marked_accounts(), corners=st.randoms(use_true_random=False))
def test_half_width_when_quotes_move_inside_the_band_then_equity_stays_inside_the_bracket(
    case: tuple[Account, dict[str, Quote]], corners: random.Random
) -> None:
    account, book = case
    width = half_width(account, book)
    if not 0 < width <= EPS_MAX:
        return
    # The derivation holds without the safety factor: test it there, where every term counts.
    reach = min(width * 0.999 / SAFETY, EPS_MAX)
    for _ in range(30):
        moved = dict(book)
        for symbol in account.symbols():
            bid, ask = book[symbol]
            moved[symbol] = (bid * (1 + _edge(corners) * reach), ask * (1 + _edge(corners) * reach))
        equity = account.balance + sum(p.value(moved) for p in account.positions.values())
        assert account.low < equity < account.high


def _edge(rng: random.Random) -> float:
    """A relative move in [-1, 1], mostly at its ends (where the bound is tight)."""
    return rng.choice((-1.0, 1.0, -1.0, 1.0, rng.uniform(-1.0, 1.0)))


# Two copies of the same accounts: every holder on every tick, or only the ones leaving -------


@dataclass
class Copy:
    """One copy of the accounts and its market; effects per account in the order emitted."""

    accounts: dict[str, Account]
    market: Market
    effects: defaultdict[str, list[Effect]] = field(default_factory=lambda: defaultdict(list))
    evaluations: int = 0
    quiet_ticks: int = 0  # ticks that evaluated nobody


def build(plan: Plan, portfolios: list[list[tuple[str, bool, float]]]) -> Copy:
    market = Market()
    market.book.update(book_at(MIDS))
    copy = Copy({}, market)
    for i, portfolio in enumerate(portfolios):
        account_id = f"acc-{i}"
        account = copy.accounts[account_id] = Account.open(account_id, plan)
        for n, (symbol, buy, lots) in enumerate(portfolio, start=1):
            deal = opening(account_id, n, symbol, buy, lots, market.book, MONDAY)
            copy.effects[account_id].extend(account.apply(deal, market))
    return copy


@dataclass(frozen=True)
class Tick:
    symbol: str
    move: float  # relative move of the mid
    spread: float = 1e-4  # relative: a widening spread moves the ask without the bid


@dataclass(frozen=True)
class Trade:
    account: int
    symbol: str
    buy: bool
    lots: float
    close: bool  # close the account's oldest position instead (if any)


Op = Tick | Trade


def run(
    plan: Plan, portfolios: list[list[tuple[str, bool, float]]], ops: list[Op]
) -> tuple[Copy, Copy]:
    """Replay `ops` through both copies; returns (reference, banded)."""
    reference, banded = build(plan, portfolios), build(plan, portfolios)
    index = BandIndex()
    for account_id, account in banded.accounts.items():
        index.update(account_id, account, banded.market.book)
    mids = dict(MIDS)
    for step, op in enumerate(ops):
        ts_ns = MONDAY + (step + 1) * SECOND
        if isinstance(op, Tick):
            mids[op.symbol] *= 1 + op.move
            quote = book_at({op.symbol: mids[op.symbol]}, op.spread)[op.symbol]
            tick = PriceTicked(
                event_id=f"t{step}", ts_ns=ts_ns, symbol=op.symbol, bid=quote[0], ask=quote[1]
            )
            _tick_every_holder(reference, tick)
            _tick_leaving(banded, index, tick)
        else:
            for copy in (reference, banded):
                _trade(copy, op, step, ts_ns)
            account_id = f"acc-{op.account}"
            index.update(account_id, banded.accounts[account_id], banded.market.book)
    return reference, banded


def _tick_every_holder(copy: Copy, tick: PriceTicked) -> None:
    copy.market.book[tick.symbol] = (tick.bid, tick.ask)
    holders = [a for a in copy.accounts.values() if tick.symbol in a.symbols()]
    for account in holders:
        copy.effects[account.account_id].extend(account.on_tick(tick, copy.market.book))
    copy.evaluations += len(holders)
    copy.quiet_ticks += not holders


def _tick_leaving(copy: Copy, index: BandIndex, tick: PriceTicked) -> None:
    book = copy.market.book
    book[tick.symbol] = (tick.bid, tick.ask)
    leaving = index.leaving(tick.symbol, tick.bid, tick.ask)
    for account_id in leaving:
        account = copy.accounts[account_id]
        copy.effects[account_id].extend(account.on_tick(tick, book))
        index.update(account_id, account, book)
    copy.evaluations += len(leaving)
    copy.quiet_ticks += not leaving


def _trade(copy: Copy, op: Trade, step: int, ts_ns: int) -> None:
    account = copy.accounts[f"acc-{op.account}"]
    deal_id = 1000 + step
    if op.close and account.positions:
        deal = closing(account, min(account.positions), deal_id, copy.market.book, ts_ns)
    else:
        deal = opening(
            account.account_id, deal_id, op.symbol, op.buy, op.lots, copy.market.book, ts_ns
        )
    copy.effects[account.account_id].extend(account.apply(deal, copy.market))


def assert_same(reference: Copy, banded: Copy) -> None:
    assert dict(banded.effects) == dict(reference.effects)
    for account_id, ours in banded.accounts.items():
        theirs = reference.accounts[account_id]
        assert (ours.status, ours.balance, ours.peak, ours.warned) == (
            theirs.status,
            theirs.balance,
            theirs.peak,
            theirs.warned,
        )
        assert (ours.low, ours.high, ours.breaches) == (theirs.low, theirs.high, theirs.breaches)
    assert banded.evaluations <= reference.evaluations


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    rules: dict[str, Any] = {
        "max_loss": {
            "pct": draw(st.sampled_from([3, 6, 10])),
            "mode": draw(st.sampled_from(["trailing_equity", "static", "trailing_closed_balance"])),
            "lock_at": draw(st.sampled_from(["never", "initial"])),
        }
    }
    if draw(st.booleans()):
        rules["daily_loss"] = {
            "pct": draw(st.sampled_from([2, 4])),
            "reference": draw(st.sampled_from(["day_start_balance", "day_start_equity"])),
            "action": draw(st.sampled_from(["fail", "pause"])),
        }
    if draw(st.booleans()):
        rules["profit_target"] = {"pct": draw(st.sampled_from([1, 3, 8])), "basis": "equity"}
    levels: list[float] = draw(st.sampled_from([[], [50.0], [30.0, 60.0, 90.0]]))
    return make_plan(initial=10_000.0, warning_levels=levels, **rules)


def positions() -> st.SearchStrategy[tuple[str, bool, float]]:
    return st.tuples(
        st.sampled_from(SYMBOLS),
        st.booleans(),
        st.sampled_from([0.01, 0.1, 0.3, 1.0, 2.0]),
    ).map(lambda p: (p[0], p[1], min(p[2], LOTS.get(p[0], p[2]))))


def ops(accounts: int) -> st.SearchStrategy[Op]:
    move = st.one_of(
        st.floats(-3e-4, 3e-4),  # calm
        st.floats(-0.01, 0.01),  # large
        st.sampled_from([0.0, 0.02, -0.02]),
    )
    spread = st.sampled_from([1e-4, 1e-4, 0.0, 2e-3, 1e-2])
    tick = st.builds(Tick, symbol=st.sampled_from(SYMBOLS), move=move, spread=spread)
    trade = st.builds(
        Trade,
        account=st.integers(0, accounts - 1),
        symbol=st.sampled_from(SYMBOLS),
        buy=st.booleans(),
        lots=st.sampled_from([0.01, 0.2, 0.5]),
        close=st.booleans(),
    )
    return st.one_of(tick, tick, tick, tick, tick, tick, tick, tick, trade)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Plan, list[list[tuple[str, bool, float]]], list[Op]]:
    portfolios = draw(
        st.lists(st.lists(positions(), min_size=0, max_size=3), min_size=1, max_size=6)
    )
    return draw(plans()), portfolios, draw(st.lists(ops(len(portfolios)), max_size=120))


@settings(max_examples=300, deadline=None)
@given(scenario=scenarios())
def test_bands_when_random_plans_and_streams_then_same_effects_as_every_holder(
    scenario: tuple[Plan, list[list[tuple[str, bool, float]]], list[Op]],
) -> None:
    reference, banded = run(*scenario)

    assert_same(reference, banded)


def _stream(seed: int, count: int, large: float) -> list[Op]:
    rng = random.Random(seed)
    stream: list[Op] = []
    for _ in range(count):
        move = rng.gauss(0.0, large if rng.random() < 0.2 else 5e-5)
        spread = 1e-4 if rng.random() < 0.9 else rng.choice((0.0, 3e-4, 4e-3))
        stream.append(Tick(rng.choice(SYMBOLS), move, spread))
    return stream


def _portfolios(seed: int, count: int, lots: float) -> list[list[tuple[str, bool, float]]]:
    rng = random.Random(seed)
    return [
        [(s, rng.random() < 0.5, min(lots, LOTS.get(s, lots))) for s in rng.sample(SYMBOLS, 2)]
        for _ in range(count)
    ]


def test_bands_when_stream_is_stormy_then_effects_happen_and_both_copies_agree() -> None:
    plan = make_plan(
        initial=10_000.0,
        warning_levels=[30, 60, 90],
        daily_loss={"pct": 4, "action": "pause"},
        max_loss={"pct": 6, "mode": "trailing_equity"},
        profit_target={"pct": 3, "basis": "equity"},
    )
    reference, banded = run(plan, _portfolios(3, 40, 1.0), _stream(4, 1500, 2e-3))

    assert_same(reference, banded)
    kinds = {type(e) for effects in reference.effects.values() for e in effects}
    assert {RuleBreached, RuleProgressed, PhasePassed} <= kinds


def test_bands_when_stream_is_calm_then_most_ticks_evaluate_nobody() -> None:
    reference, banded = run(CALM, _portfolios(5, 50, 0.5), _stream(6, 1000, 1e-4))

    assert_same(reference, banded)
    assert reference.quiet_ticks == 0
    assert banded.quiet_ticks >= 0.9 * 1000
    assert banded.evaluations <= 0.02 * reference.evaluations
