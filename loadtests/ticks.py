"""Tick benchmark: the plain holder loop against the price-band index, same accounts, same ticks.

`python -m loadtests ticks [--accounts N] [--symbols K] [--ticks M] [--repetitions R] [--json PATH]`

Builds N accounts (one process, no Ray, no I/O) on a plan with daily and trailing-equity loss
limits, warning levels and an equity profit target. Each has a round trip closed earlier today
(most a small loss, so equity sits between the floors and the trailing peak; some lost nearly the
day's allowance; some are near the target) and one or two open positions on the first K symbols,
some valued through a conversion pair. A seeded random walk of M ticks (all inside one trading
day) then runs through two designs, each on its own fresh copy of the accounts:

- `plain`: every tick goes to every account holding the symbol or converting through it
  (`Account.on_tick`), as `ShardCore._apply_tick` does today;
- `bands`: a `BandIndex` names the accounts whose band the quote leaves; only those get
  `on_tick`, then `update`. Building the index is timed apart.

Per design: µs per tick (median and best of the repetitions), ticks per second on one core and
account evaluations (`on_tick` calls) per tick. Both designs must emit the same effects per account
and end with the same statuses; if not, the run says so and exits 1. Nothing asserts on speed.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import random
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from actors.account import Account, Effect
from actors.bands import BandIndex
from actors.events import RuleBreached
from actors.market import Market, Quote
from actors.plans import Plan
from bridge.events import DealEntry, DealExecuted, PriceTicked, Side
from loadtests.common import positive, write_report
from loadtests.entity import Machine, Rate, Walk, machine

_S = 1_000_000_000
_MIN = 60 * _S
HISTORY = 1_772_445_600 * _S  # Monday 2026-03-02 10:00 UTC (11:00 in Prague)
OPENS = HISTORY + 5 * _MIN
TICKS_START = HISTORY + 10 * _MIN
TICKS_SPAN = 60 * _MIN  # the stream's hour; the Prague day ends at 23:00 UTC

# The symbols, in the order `--symbols` takes them: every conversion pair comes before the symbols
# that need it (EURGBP converts through GBPUSD, the JPY crosses through USDJPY, GER40 via EURUSD).
WALKS: tuple[Walk, ...] = (
    Walk("EURUSD", 1.08500, 0.00008, 5, 0.20),
    Walk("GBPUSD", 1.26500, 0.00012, 5, 0.12),
    Walk("USDJPY", 150.250, 0.012, 3, 0.12),
    Walk("XAUUSD", 2650.00, 0.30, 2, 0.12),
    Walk("US500", 5900.00, 0.50, 2, 0.08),
    Walk("AUDUSD", 0.65500, 0.00008, 5, 0.06),
    Walk("EURGBP", 0.85800, 0.00010, 5, 0.06),
    Walk("EURJPY", 163.000, 0.018, 3, 0.08),
    Walk("USDCHF", 0.88000, 0.00010, 5, 0.04),
    Walk("USDCAD", 1.36000, 0.00012, 5, 0.04),
    Walk("NZDUSD", 0.60000, 0.00010, 5, 0.03),
    Walk("GBPJPY", 190.100, 0.025, 3, 0.03),
    Walk("GER40", 18000.0, 1.00, 1, 0.02),
)
LOTS: dict[str, float] = {"XAUUSD": 0.5, "US500": 20.0, "GER40": 5.0}  # most per position; 2 else

PLAN: dict[str, Any] = {
    "id": "bench-ticks",
    "name": "Tick benchmark",
    "currency": "USD",
    "initial_balance": 100_000,
    "warning_levels": [50, 80, 90],
    "phases": [
        {
            "name": "challenge",
            "daily_loss": {"pct": 5, "reference": "day_start_balance"},
            "max_loss": {"pct": 10, "mode": "trailing_equity", "lock_at": "initial"},
            "profit_target": {"pct": 10, "basis": "equity"},
        }
    ],
}


@dataclass(frozen=True)
class Config:
    accounts: int = 50_000
    symbols: int = 10
    ticks: int = 2_000
    seed: int = 1
    repetitions: int = 3


# Report -----------------------------------------------------------------------------------------


class Design(msgspec.Struct, kw_only=True):
    """One design's figures over the timed repetitions."""

    name: str
    us_per_tick: Rate
    ticks_per_s: float  # at the median
    evaluations_per_tick: float
    quiet_tick_share: float  # ticks that evaluated no account
    wall_s: list[float]


class Report(msgspec.Struct, kw_only=True):
    scenario: str
    machine: Machine
    numpy: str
    load_average: tuple[float, float]
    seed: int
    accounts: int
    symbols: list[str]
    positions: int
    ticks: int
    repetitions: int
    plain: Design
    bands: Design
    speedup: float  # plain median µs per tick / bands median µs per tick
    index_build_ms: float  # median time to place every account in a fresh index
    effects: dict[str, int]
    breaches: int
    agree: bool
    disagreements: list[str]  # the first accounts whose effects or status differ


# Scenario data ----------------------------------------------------------------------------------


def plan() -> Plan:
    return msgspec.convert(PLAN, type=Plan)


def _quote(walk: Walk, mid: float) -> Quote:
    half = walk.spread / 2
    return round(mid - half, walk.digits), round(mid + half, walk.digits)


def start_book(walks: Sequence[Walk]) -> dict[str, Quote]:
    return {w.symbol: _quote(w, w.mid) for w in walks}


def make_ticks(walks: Sequence[Walk], count: int, rng: random.Random) -> list[PriceTicked]:
    """A seeded random walk per symbol; per-tick sigma is scaled so that the hour's move has the
    same spread whatever `count` is."""
    chosen = rng.choices(range(len(walks)), weights=[w.weight for w in walks], k=count)
    per_symbol = Counter(chosen)
    mids = [w.mid for w in walks]
    step = TICKS_SPAN // max(count, 1)
    ticks: list[PriceTicked] = []
    for i, k in enumerate(chosen):
        walk = walks[k]
        mids[k] += rng.gauss(0.0, walk.mid * walk.hourly_pct / 100 / math.sqrt(per_symbol[k]))
        bid, ask = _quote(walk, mids[k])
        ticks.append(
            PriceTicked(
                event_id=f"t{i}", ts_ns=TICKS_START + i * step, symbol=walk.symbol, bid=bid, ask=ask
            )
        )
    return ticks


def account_deals(index: int, walks: Sequence[Walk], rng: random.Random) -> list[DealExecuted]:
    """A round trip closed today (its profit places the account), then 1-2 open positions."""
    account_id = f"acc-{index:06d}"
    profile = rng.random()
    if profile < 0.08:  # lost most of the day's $5,000 allowance
        profit = rng.uniform(-4_900.0, -4_300.0)
    elif profile < 0.12:  # near the $10,000 target (and at its trailing peak)
        profit = rng.uniform(9_000.0, 9_800.0)
    else:  # far from every limit, below its peak
        profit = rng.uniform(-2_500.0, -300.0)
    book = start_book(walks)
    deals = [
        _deal(account_id, 1, walks[0].symbol, True, 1.0, book, HISTORY, DealEntry.IN),
        _deal(account_id, 2, walks[0].symbol, False, 1.0, book, HISTORY + _MIN, DealEntry.OUT),
    ]
    deals[1] = msgspec.structs.replace(deals[1], position_id=1, profit=round(profit, 2))
    for n, walk in enumerate(rng.sample(list(walks), rng.randint(1, min(2, len(walks)))), 3):
        volume = round(rng.uniform(0.05, 1.0) * LOTS.get(walk.symbol, 2.0), 2)
        buy = rng.random() < 0.5
        deals.append(_deal(account_id, n, walk.symbol, buy, volume, book, OPENS, DealEntry.IN))
    return deals


def _deal(
    account_id: str,
    deal_id: int,
    symbol: str,
    buy: bool,
    volume: float,
    book: dict[str, Quote],
    ts_ns: int,
    entry: DealEntry,
) -> DealExecuted:
    bid, ask = book[symbol]
    return DealExecuted(
        event_id=f"{account_id}:d{deal_id}",
        ts_ns=ts_ns + deal_id * _S,
        account_id=account_id,
        deal_id=deal_id,
        position_id=deal_id,
        symbol=symbol,
        entry=entry,
        side=Side.BUY if buy else Side.SELL,
        volume=volume,
        price=ask if buy else bid,
    )


# The two designs --------------------------------------------------------------------------------


@dataclass
class Setup:
    """One fresh copy of the accounts, indexed by the symbols whose ticks move them."""

    accounts: dict[str, Account]
    holders: dict[str, list[Account]]
    book: dict[str, Quote]


def build(scripts: Sequence[list[DealExecuted]], the_plan: Plan, walks: Sequence[Walk]) -> Setup:
    market = Market()
    market.book.update(start_book(walks))
    accounts: dict[str, Account] = {}
    holders: defaultdict[str, list[Account]] = defaultdict(list)
    for script in scripts:
        account = accounts[script[0].account_id] = Account.open(script[0].account_id, the_plan)
        for deal in script:
            account.apply(deal, market)
        for symbol in sorted(account.symbols()):
            holders[symbol].append(account)
    return Setup(accounts, dict(holders), market.book)


@dataclass
class Pass:
    """What one pass of a design did: its time, its work and every effect per account."""

    wall_ns: int
    evaluations: int
    quiet_ticks: int
    effects: dict[str, list[Effect]]


def drive_plain(ticks: Sequence[PriceTicked], setup: Setup) -> Pass:
    """Every holder on every tick, as the shard does today."""
    book, holders, empty = setup.book, setup.holders, list[Account]()
    effects: defaultdict[str, list[Effect]] = defaultdict(list)
    evaluations = quiet = 0
    started = time.perf_counter_ns()
    for tick in ticks:
        book[tick.symbol] = (tick.bid, tick.ask)
        accounts = holders.get(tick.symbol, empty)
        for account in accounts:
            found = account.on_tick(tick, book)
            if found:
                effects[account.account_id].extend(found)
        evaluations += len(accounts)
        quiet += not accounts
    return Pass(time.perf_counter_ns() - started, evaluations, quiet, dict(effects))


def index_all(setup: Setup) -> tuple[BandIndex, int]:
    """A fresh index holding every account's band; the time it took."""
    started = time.perf_counter_ns()
    index = BandIndex()
    for account_id, account in setup.accounts.items():
        index.update(account_id, account, setup.book)
    return index, time.perf_counter_ns() - started


def drive_bands(ticks: Sequence[PriceTicked], setup: Setup, index: BandIndex) -> Pass:
    """Only the accounts whose band the quote leaves, each re-banded after its tick."""
    book, accounts = setup.book, setup.accounts
    effects: defaultdict[str, list[Effect]] = defaultdict(list)
    evaluations = quiet = 0
    started = time.perf_counter_ns()
    for tick in ticks:
        book[tick.symbol] = (tick.bid, tick.ask)
        leaving = index.leaving(tick.symbol, tick.bid, tick.ask)
        for account_id in leaving:
            account = accounts[account_id]
            found = account.on_tick(tick, book)
            if found:
                effects[account_id].extend(found)
            index.update(account_id, account, book)
        evaluations += len(leaving)
        quiet += not leaving
    return Pass(time.perf_counter_ns() - started, evaluations, quiet, dict(effects))


def disagreements(plain: Pass, bands: Pass, a: Setup, b: Setup) -> list[str]:
    """Accounts whose effects or final status differ between the designs (sorted)."""
    differ = {
        i
        for i in plain.effects.keys() | bands.effects.keys()
        if plain.effects.get(i) != bands.effects.get(i)
    }
    differ.update(i for i, account in a.accounts.items() if account.status != b.accounts[i].status)
    return sorted(differ)


# Measurement ------------------------------------------------------------------------------------


@dataclass
class _Runs:
    plain: list[Pass]
    bands: list[Pass]
    build_ns: list[int]
    differ: list[str]
    positions: int


def run(config: Config) -> Report:
    """Build the scenario; time `config.repetitions` passes of each design, each on fresh
    accounts; compare what the designs emitted."""
    walks = WALKS[: config.symbols]
    rng = random.Random(config.seed)
    the_plan = plan()
    scripts = [account_deals(i, walks, rng) for i in range(config.accounts)]
    ticks = make_ticks(walks, config.ticks, rng)
    before = os.getloadavg()[0]
    runs = _Runs([], [], [], [], 0)
    for _ in range(config.repetitions):
        a, b = build(scripts, the_plan, walks), build(scripts, the_plan, walks)
        runs.positions = sum(len(x.positions) for x in a.accounts.values())
        gc.collect()
        runs.plain.append(drive_plain(ticks, a))
        index, build_ns = index_all(b)
        gc.collect()
        runs.bands.append(drive_bands(ticks, b, index))
        runs.build_ns.append(build_ns)
        runs.differ = sorted(
            set(runs.differ) | set(disagreements(runs.plain[-1], runs.bands[-1], a, b))
        )
        del a, b, index
    return _report(config, walks, runs, (before, os.getloadavg()[0]))


def _design(name: str, passes: list[Pass], ticks: int) -> Design:
    walls = [p.wall_ns for p in passes]
    median = statistics.median(walls)
    return Design(
        name=name,
        us_per_tick=Rate(
            median=round(median / ticks / 1e3, 3), best=round(min(walls) / ticks / 1e3, 3)
        ),
        ticks_per_s=round(ticks * 1e9 / median, 1) if median else 0.0,
        evaluations_per_tick=round(passes[0].evaluations / ticks, 3),
        quiet_tick_share=round(passes[0].quiet_ticks / ticks, 4),
        wall_s=[round(w / 1e9, 4) for w in walls],
    )


def _report(
    config: Config, walks: Sequence[Walk], runs: _Runs, load: tuple[float, float]
) -> Report:
    plain = _design("plain", runs.plain, config.ticks)
    bands = _design("bands", runs.bands, config.ticks)
    effects = Counter(type(e).__name__ for found in runs.plain[0].effects.values() for e in found)
    return Report(
        scenario="ticks",
        machine=machine(None),
        numpy=np.__version__,
        load_average=load,
        seed=config.seed,
        accounts=config.accounts,
        symbols=[w.symbol for w in walks],
        positions=runs.positions,
        ticks=config.ticks,
        repetitions=config.repetitions,
        plain=plain,
        bands=bands,
        speedup=round(plain.us_per_tick.median / bands.us_per_tick.median, 1)
        if bands.us_per_tick.median
        else 0.0,
        index_build_ms=round(statistics.median(runs.build_ns) / 1e6, 1),
        effects=dict(sorted(effects.items())),
        breaches=effects.get(RuleBreached.__name__, 0),
        agree=not runs.differ,
        disagreements=runs.differ[:20],
    )


# Output -----------------------------------------------------------------------------------------


def render(report: Report) -> str:
    m = report.machine
    lines = [
        "ticks benchmark: every holder on every tick (plain) vs the price-band index (bands)",
        f"machine      {m.cpu_model}, {m.cores} cores ({m.usable_cores} usable)",
        f"             {m.implementation} {m.python}, numpy {report.numpy}, "
        f"msgspec {m.msgspec}, {m.platform}",
        f"load         1-minute load average {report.load_average[0]:.2f} before, "
        f"{report.load_average[1]:.2f} after",
        f"scenario     {report.accounts:,} accounts, {report.positions:,} open positions on "
        f"{len(report.symbols)} symbols ({' '.join(report.symbols)}), {report.ticks:,} ticks, "
        f"seed {report.seed}, {report.repetitions} repetitions",
    ]
    for design in (report.plain, report.bands):
        lines.append(
            f"{design.name:<12} {design.us_per_tick.median:,.1f} µs/tick median "
            f"({design.us_per_tick.best:,.1f} best), {design.ticks_per_s:,.0f} ticks/s on one "
            f"core, {design.evaluations_per_tick:,.2f} evaluations/tick, "
            f"{design.quiet_tick_share:.1%} of ticks evaluate nobody"
        )
    lines += [
        f"speedup      {report.speedup:,.1f}x; building the index: {report.index_build_ms:,.1f} ms",
        f"effects      {report.effects} (per design)",
        "agreement    "
        + ("both designs emitted the same effects and statuses" if report.agree else "DIFFER"),
    ]
    if not report.agree:
        lines.append(f"differ       {', '.join(report.disagreements)}")
    return "\n".join(lines)


def _symbols(text: str) -> int:
    value = positive(text)
    if value > len(WALKS):
        raise argparse.ArgumentTypeError(f"at most {len(WALKS)} symbols, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests ticks",
        description="µs per tick: every holder on every tick vs the price-band index.",
    )
    defaults = Config()
    parser.add_argument("--accounts", type=positive, default=defaults.accounts)
    parser.add_argument("--symbols", type=_symbols, default=defaults.symbols)
    parser.add_argument("--ticks", type=positive, default=defaults.ticks)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--repetitions", type=positive, default=defaults.repetitions)
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run both designs; print the figures; exit 1 if they did not emit the same effects."""
    args = _parser().parse_args(argv)
    config = Config(
        accounts=args.accounts,
        symbols=args.symbols,
        ticks=args.ticks,
        seed=args.seed,
        repetitions=args.repetitions,
    )
    report = run(config)
    print(render(report))
    if args.json is not None:
        write_report(args.json, report)
    return 0 if report.agree else 1


if __name__ == "__main__":
    sys.exit(main())
