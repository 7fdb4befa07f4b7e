"""Entity benchmark: account evaluations per second on one core, with every rule on.

`python -m loadtests entity [--accounts N] [--ticks M] [--seed S] [--json PATH]`

Builds N accounts on a plan that enables every rule (and the warning levels), gives each a short,
realistic history (round trips on earlier days, a news window, near-limit and near-target traders)
and 1-3 open positions across six symbols, two of them (EURJPY, EURGBP) and USDJPY itself valued
through a conversion pair. It then drives a seeded random walk of M ticks: every tick is applied to
every account holding that symbol or converting through it, the way a shard does
(`market.book[symbol] = (bid, ask)`, then `account.on_tick(tick, book)`). One evaluation is one
account processing one tick. The deals that build the accounts are timed apart and reported as a
second figure; they are not mixed into the tick figure.

Only the entity is measured: one process, no Ray, no I/O. The first pass over the stream is a
warm-up that also counts, from outside the entity, how many evaluations left the fast path (a day
boundary, effects, or equity outside the account's `[low, high]` band); it is excluded from the
timings. Each timed repetition rebuilds the accounts and replays the same stream, so every
repetition does the same work. Not a timed test: nothing here asserts on speed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import math
import os
import platform
import random
import resource
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from actors.account import Account
from actors.events import RuleBreached
from actors.market import Impact, Market, NewsCalendar, NewsScheduled, Quote
from actors.plans import Plan
from bridge.events import DealEntry, DealExecuted, PriceTicked, Side
from loadtests.common import positive, write_report

GOAL = 250_000
"""Evaluations per second on one core that the entity should reach (the issue's goal)."""

_S = 1_000_000_000
_MIN = 60 * _S
_HOUR = 60 * _MIN


def _utc(year: int, month: int, day: int, hour: int, minute: int = 0) -> int:
    moment = dt.datetime(year, month, day, hour, minute, tzinfo=dt.UTC)
    return int(moment.timestamp()) * _S


# The timeline, in UTC. Prague is UTC+1 in March until the 29th, so the trading day ends 23:00 UTC.
HISTORY_DAYS = (_utc(2026, 2, 25, 10), _utc(2026, 2, 26, 10), _utc(2026, 2, 27, 10))  # Wed-Fri
TODAY_CLOSE = _utc(2026, 3, 2, 20, 30)  # Monday: an earlier round trip closed today
TODAY_OPENS = _utc(2026, 3, 2, 22)  # Monday 22:00-22:20: the open positions
TICKS_START = _utc(2026, 3, 2, 22, 30)  # the stream: one hour across the 23:00 day boundary
TICKS_SPAN = _HOUR

PLAN: dict[str, Any] = {
    "id": "bench-all-rules",
    "name": "Benchmark, every rule on",
    "currency": "USD",
    "initial_balance": 100_000,
    "warning_levels": [50, 80, 90],
    "phases": [
        {
            "name": "challenge",
            "daily_loss": {"pct": 5, "reference": "day_start_max_balance_equity"},
            "max_loss": {"pct": 10, "mode": "trailing_equity", "lock_at": "initial"},
            "profit_target": {"pct": 10, "basis": "equity"},
            "min_trading_days": {"days": 4},
            "max_days": {"days": 30},
            "consistency": {"max_best_day_pct": 40},
            "news_trading": {
                "minutes_before": 2,
                "minutes_after": 2,
                "impact": "high",
                "action": "strike",
                "strikes": 2,
            },
            "weekend_holding": {"action": "fail"},
            "max_lots": {"per_order": 5},
            "min_hold_time": {"seconds": 60, "max_share_pct": 30},
            "inactivity": {"days": 5},
        }
    ],
}

NEWS: tuple[tuple[str, Impact, str, int], ...] = (
    ("EUR", Impact.HIGH, "ECB minutes", HISTORY_DAYS[1]),
    ("USD", Impact.HIGH, "ISM manufacturing", TODAY_OPENS + 10 * _MIN),
    ("JPY", Impact.MEDIUM, "Tankan", TICKS_START + 15 * _MIN),
    ("GBP", Impact.HIGH, "BoE speech", TICKS_START + 50 * _MIN),
    ("USD", Impact.LOW, "Redbook", TICKS_START + 40 * _MIN),
)


@dataclass(frozen=True)
class Walk:
    """One symbol's random walk: start mid, spread, price digits, share of ticks, hourly sigma."""

    symbol: str
    mid: float
    spread: float
    digits: int
    weight: float
    hourly_pct: float = 0.15


WALKS: tuple[Walk, ...] = (
    Walk("EURUSD", 1.08500, 0.00008, 5, 0.25),
    Walk("GBPUSD", 1.26500, 0.00012, 5, 0.15),
    Walk("USDJPY", 150.250, 0.012, 3, 0.15),
    Walk("EURJPY", 163.000, 0.018, 3, 0.15),
    Walk("EURGBP", 0.85800, 0.00010, 5, 0.10),
    Walk("XAUUSD", 2650.00, 0.30, 2, 0.20),
)


@dataclass(frozen=True)
class Config:
    """Scenario size and measurement settings."""

    accounts: int = 10_000
    ticks: int = 1_000
    seed: int = 1
    repetitions: int = 5
    cpu: int | None = None


# Report -----------------------------------------------------------------------------------------


class Machine(msgspec.Struct, kw_only=True):
    """Where the figures were measured."""

    cpu_model: str
    cores: int
    usable_cores: int
    pinned_cpu: int | None
    python: str
    implementation: str
    platform: str
    msgspec: str


class Rate(msgspec.Struct, kw_only=True):
    """A figure over the timed repetitions: their median and their best."""

    median: float
    best: float


class Report(msgspec.Struct, kw_only=True):
    """What one run measured; `evaluations_per_s` is the headline figure."""

    scenario: str
    machine: Machine
    load_average: tuple[float, float]  # 1-minute load average before and after the timed passes
    seed: int
    accounts: int
    positions: int
    ticks: int
    evaluations: int
    repetitions: int
    evaluations_per_s: Rate
    ns_per_evaluation: Rate
    cpu_evaluations_per_s: float
    wall_s: list[float]
    cpu_s: list[float]
    deals: int
    deal_evaluations_per_s: float
    slow_path_evaluations: int
    slow_path_share: float
    slow_path_by_reason: dict[str, int]
    effects: dict[str, int]
    breaches: int
    breaches_at_deals: int
    breaches_by_rule: dict[str, int]
    accounts_by_status: dict[str, int]
    deterministic: bool
    peak_rss_mib: float
    goal: int
    meets_goal: bool


# Scenario data ----------------------------------------------------------------------------------


def plan() -> Plan:
    """The benchmark plan: every rule enabled, warning levels on."""
    return msgspec.convert(PLAN, type=Plan)


def start_book() -> dict[str, Quote]:
    """The quotes every symbol starts from (the book when the positions are opened)."""
    return {w.symbol: _quote(w, w.mid) for w in WALKS}


def calendar() -> NewsCalendar:
    """The news calendar: releases in the history, in the opening window and during the stream."""
    cal = NewsCalendar()
    for currency, impact, title, ts_ns in NEWS:
        cal.add(NewsScheduled(currency=currency, impact=impact, title=title, ts_ns=ts_ns))
    return cal


def _quote(walk: Walk, mid: float) -> Quote:
    half = walk.spread / 2
    return round(mid - half, walk.digits), round(mid + half, walk.digits)


def make_ticks(count: int, rng: random.Random) -> list[PriceTicked]:
    """A seeded random walk per symbol; sigma per tick is scaled so that the hour's move has the
    same spread whatever `count` is (so breaches do not depend on the stream's length)."""
    chosen = rng.choices(range(len(WALKS)), weights=[w.weight for w in WALKS], k=count)
    per_symbol = Counter(chosen)
    mids = [w.mid for w in WALKS]
    step = TICKS_SPAN // max(count, 1)
    ticks: list[PriceTicked] = []
    for i, k in enumerate(chosen):
        walk = WALKS[k]
        mids[k] += rng.gauss(0.0, walk.mid * walk.hourly_pct / 100 / math.sqrt(per_symbol[k]))
        bid, ask = _quote(walk, mids[k])
        ticks.append(
            PriceTicked(
                event_id=f"t{i}", ts_ns=TICKS_START + i * step, symbol=walk.symbol, bid=bid, ask=ask
            )
        )
    return ticks


class _Script:
    """Builds one account's deals in time order, numbering deals and positions."""

    def __init__(self, account_id: str, rng: random.Random) -> None:
        self.account_id = account_id
        self.rng = rng
        self.deals: list[DealExecuted] = []
        self.next_id = 1

    def deal(
        self, walk: Walk, entry: DealEntry, buy: bool, volume: float, ts_ns: int, **money: float
    ) -> int:
        deal_id = self.next_id
        self.next_id += 1
        bid, ask = _quote(walk, walk.mid)
        position = deal_id if entry is DealEntry.IN else deal_id - 1
        self.deals.append(
            DealExecuted(
                event_id=f"{self.account_id}:d{deal_id}",
                ts_ns=ts_ns,
                account_id=self.account_id,
                deal_id=deal_id,
                position_id=position,
                symbol=walk.symbol,
                entry=entry,
                side=Side.BUY if buy else Side.SELL,
                volume=volume,
                price=ask if buy else bid,
                **money,
            )
        )
        return deal_id

    def round_trip(self, ts_ns: int, profit: float) -> None:
        """Open and fully close a position; ~10% are held under a minute (short trades)."""
        walk = self.rng.choice(WALKS)
        buy = self.rng.random() < 0.5
        volume = round(self.rng.uniform(0.1, 3.0), 2)
        hold = self.rng.randint(5, 59) if self.rng.random() < 0.1 else self.rng.randint(60, 7200)
        self.deal(walk, DealEntry.IN, buy, volume, ts_ns, commission=-3.5 * volume)
        self.deal(walk, DealEntry.OUT, not buy, volume, ts_ns + hold * _S, profit=profit)

    def open_positions(self) -> None:
        """1-3 open positions on distinct symbols, 22:00-22:20 (a USD release at 22:10)."""
        walks = self.rng.sample(WALKS, self.rng.randint(1, 3))
        ts = TODAY_OPENS
        for walk in walks:
            ts += self.rng.randint(1, 400) * _S
            top = 1.0 if walk.symbol == "XAUUSD" else 3.0
            volume = round(self.rng.uniform(0.1, top), 2)
            if self.rng.random() < 0.003:
                volume = 6.0  # above max_lots: fails the phase
            buy = self.rng.random() < 0.5
            self.deal(walk, DealEntry.IN, buy, volume, ts, commission=-3.5 * volume)


def _history(rng: random.Random) -> tuple[list[float], float]:
    """(profit per earlier day, profit of a round trip closed today) for a trader profile."""
    profile = rng.random()
    if profile < 0.12:  # lost most of today's allowance already: near the daily floor
        return [rng.uniform(-300, 600)], rng.uniform(-4_900, -3_900)
    if profile < 0.20:  # deep drawdown: near the max-loss floor
        return [rng.uniform(-3_300, -2_700) for _ in range(3)], 0.0
    if profile < 0.30:  # near the target with enough days: may pass during the stream
        return [rng.uniform(2_900, 3_280) for _ in range(3)], 0.0
    if profile < 0.35:  # near the target, too few days and inconsistent: the pass is blocked
        return [rng.uniform(9_300, 9_900)], 0.0
    days = rng.randint(0, 3)
    return [rng.uniform(-800, 1_500) for _ in range(days)], 0.0


def account_deals(index: int, rng: random.Random) -> list[DealExecuted]:
    """One account's deals: earlier round trips, maybe one closed today, then open positions."""
    script = _Script(f"acc-{index:06d}", rng)
    earlier, today = _history(rng)
    for day, profit in zip(HISTORY_DAYS[-len(earlier) :] if earlier else (), earlier, strict=True):
        script.round_trip(day + rng.randint(-1800, 1800) * _S, round(profit, 2))
    if today:
        script.round_trip(TODAY_CLOSE, round(today, 2))
    script.open_positions()
    return script.deals


# Measurement ------------------------------------------------------------------------------------


@dataclass
class Setup:
    """Accounts built for one pass, indexed by the symbols whose ticks move them."""

    accounts: list[Account]
    holders: dict[str, list[Account]]
    market: Market
    deal_ns: int
    breaches: int


def build(scripts: Sequence[list[DealExecuted]], the_plan: Plan, market: Market) -> Setup:
    """Open the accounts and apply their deals (timed apart); index them by symbol."""
    market.book.clear()
    market.book.update(start_book())
    accounts: list[Account] = []
    breaches = 0
    started = time.perf_counter_ns()
    for script in scripts:
        account = Account.open(script[0].account_id, the_plan)
        for deal in script:
            breaches += _count_breaches(account.apply(deal, market))
        accounts.append(account)
    deal_ns = time.perf_counter_ns() - started
    holders: defaultdict[str, list[Account]] = defaultdict(list)
    for account in accounts:
        for symbol in sorted(account.symbols()):
            holders[symbol].append(account)
    return Setup(accounts, dict(holders), market, deal_ns, breaches)


def _count_breaches(effects: Sequence[object]) -> int:
    return sum(1 for effect in effects if type(effect) is RuleBreached)


def drive(
    ticks: Sequence[PriceTicked], holders: dict[str, list[Account]], book: dict[str, Quote]
) -> int:
    """The timed loop, as a shard runs it; returns the breaches seen."""
    breaches = 0
    empty: list[Account] = []
    for tick in ticks:
        book[tick.symbol] = (tick.bid, tick.ask)
        for account in holders.get(tick.symbol, empty):
            effects = account.on_tick(tick, book)
            if effects:
                breaches += _count_breaches(effects)
    return breaches


@dataclass
class Observed:
    """What the warm-up pass saw from outside the entity."""

    slow: Counter[str]
    effects: Counter[str]


def drive_observed(
    ticks: Sequence[PriceTicked], holders: dict[str, list[Account]], book: dict[str, Quote]
) -> Observed:
    """The warm-up: the same loop, counting slow-path evaluations by reason and effects by type.

    An evaluation took the fast path iff it crossed no day boundary, returned no effects and left
    equity strictly inside the `[low, high]` band the account held before it (the entity's own
    test, plus the day boundary, whose roll runs rules whatever the equity)."""
    seen = Observed(Counter(), Counter())
    empty: list[Account] = []
    for tick in ticks:
        book[tick.symbol] = (tick.bid, tick.ask)
        for account in holders.get(tick.symbol, empty):
            before = (account.low, account.high, account.peak, account.day)
            effects = account.on_tick(tick, book)
            reason = _slow_reason(account, before, bool(effects))
            if reason is not None:
                seen.slow[reason] += 1
            seen.effects.update(type(effect).__name__ for effect in effects)
    return seen


def _slow_reason(account: Account, before: tuple[int, int, int, int], effects: bool) -> str | None:
    """Why an evaluation left the fast path, or None if it did not. `effects`: it emitted some;
    `rollover`: it crossed a day boundary; `new_peak`: a new trailing-equity peak; `high`: equity
    reached `high` otherwise (the target, with the pass blocked); `low`: equity at or below `low`
    with nothing emitted."""
    low, high, peak, day = before
    equity = account.equity
    if effects:
        return "effects"
    if account.day != day:
        return "rollover"
    if low < equity < high:
        return None
    if account.peak > peak:
        return "new_peak"
    return "high" if equity >= high else "low"


def machine(cpu: int | None) -> Machine:
    """The machine the figures were measured on."""
    return Machine(
        cpu_model=_cpu_model(),
        cores=os.cpu_count() or 0,
        usable_cores=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0,
        pinned_cpu=cpu,
        python=platform.python_version(),
        implementation=platform.python_implementation(),
        platform=platform.platform(),
        msgspec=msgspec.__version__,
    )


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


@dataclass
class _Runs:
    wall_ns: list[int]
    cpu_ns: list[int]
    deal_ns: list[int]
    breaches: list[tuple[int, int]]  # (at deals, on ticks) per repetition
    load_average: tuple[float, float] = (0.0, 0.0)  # 1-minute load before and after


@dataclass
class _WarmUp:
    evaluations: int
    positions: int
    breaches_at_deals: int
    seen: Observed
    by_rule: Counter[str]
    status: Counter[str]


def run(config: Config) -> Report:
    """Build the scenario, warm up, time `config.repetitions` passes and report."""
    if config.cpu is not None:
        os.sched_setaffinity(0, {config.cpu})
    rng = random.Random(config.seed)
    the_plan = plan()
    scripts = [account_deals(i, rng) for i in range(config.accounts)]
    ticks = make_ticks(config.ticks, rng)
    market = Market(calendar=calendar())
    warm = _warm_up(scripts, the_plan, market, ticks)
    runs = _repeat(config.repetitions, scripts, the_plan, market, ticks)
    return _report(config, sum(len(s) for s in scripts), warm, runs)


def _warm_up(
    scripts: Sequence[list[DealExecuted]],
    the_plan: Plan,
    market: Market,
    ticks: Sequence[PriceTicked],
) -> _WarmUp:
    """One untimed pass that counts the work and what happened (slow path, effects, outcomes)."""
    setup = build(scripts, the_plan, market)
    seen = drive_observed(ticks, setup.holders, market.book)
    return _WarmUp(
        evaluations=sum(len(setup.holders.get(t.symbol, ())) for t in ticks),
        positions=sum(len(a.positions) for a in setup.accounts),
        breaches_at_deals=setup.breaches,
        seen=seen,
        by_rule=Counter(b.rule.value for a in setup.accounts for b in a.breaches),
        status=Counter(a.status.value for a in setup.accounts),
    )


def _repeat(
    repetitions: int,
    scripts: Sequence[list[DealExecuted]],
    the_plan: Plan,
    market: Market,
    ticks: Sequence[PriceTicked],
) -> _Runs:
    """The timed passes; each rebuilds the accounts so that every pass does the same work."""
    runs = _Runs([], [], [], [])
    before = os.getloadavg()[0]
    for _ in range(repetitions):
        setup = build(scripts, the_plan, market)
        gc.collect()
        wall, cpu = time.perf_counter_ns(), time.process_time_ns()
        breaches = drive(ticks, setup.holders, market.book)
        runs.cpu_ns.append(time.process_time_ns() - cpu)
        runs.wall_ns.append(time.perf_counter_ns() - wall)
        runs.deal_ns.append(setup.deal_ns)
        runs.breaches.append((setup.breaches, breaches))
        del setup
    runs.load_average = (before, os.getloadavg()[0])
    return runs


def _report(config: Config, deals: int, warm: _WarmUp, runs: _Runs) -> Report:
    slow, effects, evaluations = warm.seen.slow, warm.seen.effects, warm.evaluations
    median_ns = statistics.median(runs.wall_ns)
    best_ns = min(runs.wall_ns)
    return Report(
        scenario="entity",
        machine=machine(config.cpu),
        load_average=runs.load_average,
        seed=config.seed,
        accounts=config.accounts,
        positions=warm.positions,
        ticks=config.ticks,
        evaluations=evaluations,
        repetitions=config.repetitions,
        evaluations_per_s=Rate(
            median=_per_s(evaluations, median_ns), best=_per_s(evaluations, best_ns)
        ),
        ns_per_evaluation=Rate(
            median=round(median_ns / max(evaluations, 1), 1),
            best=round(best_ns / max(evaluations, 1), 1),
        ),
        cpu_evaluations_per_s=_per_s(evaluations, statistics.median(runs.cpu_ns)),
        wall_s=[round(ns / 1e9, 4) for ns in runs.wall_ns],
        cpu_s=[round(ns / 1e9, 4) for ns in runs.cpu_ns],
        deals=deals,
        deal_evaluations_per_s=_per_s(deals, statistics.median(runs.deal_ns)),
        slow_path_evaluations=slow.total(),
        slow_path_share=round(slow.total() / evaluations, 6) if evaluations else 0.0,
        slow_path_by_reason=dict(sorted(slow.items())),
        effects=dict(sorted(effects.items())),
        breaches=effects.get("RuleBreached", 0),
        breaches_at_deals=warm.breaches_at_deals,
        breaches_by_rule=dict(sorted(warm.by_rule.items())),
        accounts_by_status=dict(sorted(warm.status.items())),
        deterministic=set(runs.breaches) <= {(warm.breaches_at_deals, effects["RuleBreached"])},
        peak_rss_mib=round(_peak_rss_mib(), 1),
        goal=GOAL,
        meets_goal=_per_s(evaluations, median_ns) >= GOAL,
    )


def _per_s(count: int, ns: float) -> float:
    return round(count * 1e9 / ns, 1) if ns else 0.0


# Output -----------------------------------------------------------------------------------------


def render(report: Report) -> str:
    """The human-readable report."""
    m, rate, per = report.machine, report.evaluations_per_s, report.ns_per_evaluation
    pinned = f", pinned to CPU {m.pinned_cpu}" if m.pinned_cpu is not None else ""
    lines = [
        "entity benchmark: one account evaluation = one account processing one tick",
        f"machine      {m.cpu_model}, {m.cores} cores ({m.usable_cores} usable{pinned})",
        f"             {m.implementation} {m.python}, msgspec {m.msgspec}, {m.platform}",
        f"load         1-minute load average {report.load_average[0]:.2f} before, "
        f"{report.load_average[1]:.2f} after the timed passes (other work skews wall time)",
        f"scenario     {report.accounts:,} accounts, {report.positions:,} open positions, "
        f"{report.ticks:,} ticks, seed {report.seed}, every rule on",
        f"evaluations  {report.evaluations:,} per repetition, {report.repetitions} repetitions "
        "(warm-up excluded)",
        f"throughput   {rate.median:,.0f}/s median, {rate.best:,.0f}/s best "
        f"(CPU time: {report.cpu_evaluations_per_s:,.0f}/s); goal {report.goal:,}/s: "
        + ("met" if report.meets_goal else "NOT met"),
        f"latency      {per.median:,.0f} ns per evaluation median, {per.best:,.0f} ns best",
        f"wall s       {', '.join(f'{s:.3f}' for s in report.wall_s)}",
        f"slow path    {report.slow_path_evaluations:,} evaluations "
        f"({report.slow_path_share:.2%}) ran rules (a day boundary or equity out of its band); "
        "by reason "
        f"{report.slow_path_by_reason}",
        f"breaches     {report.breaches:,} on ticks, {report.breaches_at_deals:,} on deals; "
        f"by rule {report.breaches_by_rule}",
        f"effects      {report.effects}",
        f"accounts     {report.accounts_by_status}",
        f"deals        {report.deals:,} applied at {report.deal_evaluations_per_s:,.0f}/s "
        "(building the accounts, not in the figure above)",
        f"peak RSS     {report.peak_rss_mib:,.1f} MiB",
    ]
    if not report.deterministic:
        lines.append("WARNING: repetitions saw different breaches; the run is not deterministic")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests entity",
        description="Account evaluations per second on one core, every rule on.",
    )
    defaults = Config()
    parser.add_argument("--accounts", type=positive, default=defaults.accounts)
    parser.add_argument("--ticks", type=positive, default=defaults.ticks)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--repetitions", type=positive, default=defaults.repetitions)
    parser.add_argument("--cpu", type=int, default=None, help="pin the process to this CPU")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the scenario from the command line; print the report, optionally write it as JSON."""
    args = _parser().parse_args(argv)
    config = Config(
        accounts=args.accounts,
        ticks=args.ticks,
        seed=args.seed,
        repetitions=args.repetitions,
        cpu=args.cpu,
    )
    report = run(config)
    print(render(report))
    if args.json is not None:
        write_report(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
