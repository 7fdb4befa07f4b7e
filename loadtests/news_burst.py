"""News burst: the tick rate on a few symbols multiplied while many accounts sit near their
limits, measured against a ground-truth oracle, next to the designs a firm would otherwise use.

`python -m loadtests news_burst [--accounts 10000] [--duration 30] [--rate 7] [--multiplier 50]
[--deals-per-second 20] [--shards 0] [--actor-per-account 20] [--poll 1 5 15 60 300]
[--json PATH]`

The script (`loadtests.scale.build_script`, built before any timing starts) gives every account
1-3 open positions and pushes 2% of them near their daily or maximum loss floor so that the news
takes them through it, at a tick the oracle computes on its own with the entity's arithmetic, and
2% more near a floor that the news must not take them through. The burst: `--rate` x
`--multiplier` ticks per second on each of three symbols (EURUSD, GBPUSD, XAUUSD) trending with
the news for `--duration` seconds, with `--deals-per-second` round trips by ordinary accounts
mixed in (journaled account events, so a lost one is found by id).

The same script then runs through four designs, in this order:

- **shards on Ray** (ours): the real pipeline, simulated platform -> bridge -> account shards ->
  bridge -> platform, journal on PostgreSQL, the burst injected into the platform at its real
  pace. Figures: events and account evaluations per second, breach-to-freeze latency (from the
  platform handing the breaching tick to the bridge until it disabled the account), lost events
  (account events missing from the journal, or fewer events applied than injected), CPU use of
  the whole machine and per process (CPU per event and peak RSS count the processes a firm
  runs: shards, bridge, risk hub, reconciler, supervisor; not the simulated platform or this
  driver), memory per account; a breach counts only once the platform disabled the account;
- **single process, no Ray**: the same `ShardCore` in this process, the script applied as fast as
  it goes (what Ray costs: CPU per event against the pipeline's);
- **polling**: the accounts in one process take prices as they come but rules run only on a
  timer, a full scan of every account every `--poll` seconds, as a firm's cron job does.
  Detection latency is the time from the breaching tick (in the script's clock, which the burst
  follows in real time) to the scan that saw it, plus the measured scan time; a breach the price
  took back before the next scan is found later or missed. Each interval runs with four scan
  schedules (offset by a quarter of the interval each) and pools them, so the figures are those
  of a breach at any point of the cron cycle, not of one lucky or unlucky timing;
- **one Ray actor per account** (`--actor-per-account` accounts, a smaller script of the same
  kind; 0 skips it): one actor call per event.

Every design is judged against the same oracle: missed breaches, false breaches, breaches on the
wrong tick. Nothing asserts on speed; exit status 1 if ours or the single process missed a
breach, found a false one, or lost an event (polling misses by design and is reported).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import secrets
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import msgspec
import psutil
from sqlalchemy import select

from actors.events import RuleBreached
from actors.plans import DEFAULT_PLAN
from actors.runtime import Runtime
from actors.shard import ShardCore
from api.demo import Latency, latency_ms
from bridge.codec import decode_messages
from bridge.events import AnyPlatformEvent, DealEntry, DealExecuted, PriceTicked, Side
from bridge.instruments import DEFAULT_INSTRUMENTS
from ledger.database import create_engine
from ledger.schema import journal
from loadtests import scale
from loadtests.common import local_ray, positive, write_report

ROUND_TRIP_SYMBOL = "AUDUSD"  # never ticks in the burst: a round trip's outcome is fixed
ROUND_TRIP_LOSS = 5.0  # USD: far inside any ordinary account's allowance
CHUNK = 2_000  # events per `ShardCore.apply` in the single process, as a shard's batches


@dataclass(frozen=True)
class Settings:
    accounts: int = 10_000
    duration_s: float = 30.0
    rate: float = 7.0  # ticks per second per burst symbol before the news
    multiplier: float = 50.0
    deals_per_second: float = 20.0
    shards: int = 0
    seed: int = 1
    actor_per_account: int = 20
    actor_ticks: int = 300
    polls_s: tuple[float, ...] = (1.0, 5.0, 15.0, 60.0, 300.0)
    settle_timeout_s: float = 600.0
    scenario: str = "news_burst"

    @property
    def ticks_per_second(self) -> float:
        """All burst symbols together."""
        return self.rate * self.multiplier * len(scale.BURST_SYMBOLS)

    def options(self) -> scale.Options:
        return scale.Options(
            sizes=(self.accounts,),
            actor_per_account=self.actor_per_account,
            actor_ticks=self.actor_ticks,
            burst_seconds=self.duration_s,
            ticks_per_second=self.ticks_per_second,
            shards=self.shards,
            seed=self.seed,
            settle_timeout_s=self.settle_timeout_s,
        )


# The script ---------------------------------------------------------------------------------------


@dataclass
class Run:
    """The script with the round trips mixed into its burst, and when each burst tick happens."""

    script: scale.Script
    deals: list[str]  # event ids of the round trips in the burst
    tick_ts: dict[str, int]  # burst tick id -> its time
    start_ns: int
    end_ns: int


def prepare(settings: Settings, prefix: str) -> Run:
    options = settings.options()
    script = scale.build_script(
        settings.accounts, options.ticks, options.ticks_per_second, settings.seed, prefix
    )
    ticks = [msgspec.json.decode(m, type=PriceTicked) for m in script.burst]
    tick_ts = {t.event_id: t.ts_ns for t in ticks}
    start, end = ticks[0].ts_ns, ticks[-1].ts_ns
    ordinary = sorted(set(script.accounts) - set(script.expected) - set(script.near))
    trips = _round_trips(settings, prefix, ordinary, start, end)
    mixed = sorted([*((t.ts_ns, m) for t, m in zip(ticks, script.burst, strict=True)), *trips])
    deals = [msgspec.json.decode(m, type=DealExecuted).event_id for _, m in trips]
    burst = [m for _, m in mixed]
    symbols = [_symbol_of(m) for m in burst]
    script = replace(script, burst=burst, burst_symbols=symbols)
    return Run(script=script, deals=deals, tick_ts=tick_ts, start_ns=start, end_ns=end)


def _round_trips(
    settings: Settings, prefix: str, ordinary: list[str], start: int, end: int
) -> list[tuple[int, bytes]]:
    """(time, message) of `deals_per_second` round trips over the burst: a position opened and
    closed 1 ms later at a small loss, by ordinary accounts in turn."""
    count = int(settings.deals_per_second * settings.duration_s)
    if not ordinary or count == 0:
        return []
    rng = random.Random(settings.seed + 1)
    instrument = next(i for i in DEFAULT_INSTRUMENTS if i.symbol == ROUND_TRIP_SYMBOL)
    bid, ask = scale._quote(instrument, instrument.start_price)
    trips: list[tuple[int, bytes]] = []
    for n in range(count):
        account = ordinary[n % len(ordinary)]
        ts = start + int((end - start) * rng.random()) + 7  # never on a tick's nanosecond
        opened, closed = 1_000_000_000 + 2 * n, 1_000_000_001 + 2 * n  # above the setup's deals
        for deal, price, profit, when in (
            (opened, ask, 0.0, ts),
            (closed, bid, -ROUND_TRIP_LOSS, ts + 10**6),
        ):
            event = DealExecuted(
                event_id=f"{prefix}/d{deal}",
                ts_ns=when,
                account_id=account,
                deal_id=deal,
                position_id=opened,
                symbol=ROUND_TRIP_SYMBOL,
                entry=DealEntry.IN if deal == opened else DealEntry.OUT,
                side=Side.BUY if deal == opened else Side.SELL,
                volume=0.1,
                price=price,
                profit=profit,
            )
            trips.append((when, msgspec.json.encode(event)))
    return trips


def _symbol_of(message: bytes) -> str:
    return str(msgspec.json.decode(message, type=dict[str, Any]).get("symbol", ""))


# The oracle ---------------------------------------------------------------------------------------


class Verdict(msgspec.Struct, kw_only=True):
    """A design's breaches against the script's ground truth."""

    expected: int
    missed: list[str]
    false: list[str]
    wrong_tick: list[str]  # breached, but caused by another event than the oracle computed


def judge(script: scale.Script, causes: dict[str, str | None]) -> Verdict:
    """`causes`: every account the design found breached -> the event id it names as the cause."""
    expected = set(script.expected)
    found = set(causes)
    return Verdict(
        expected=len(expected),
        missed=sorted(expected - found),
        false=sorted(found - expected),
        wrong_tick=sorted(a for a in expected & found if causes[a] != script.expected[a]),
    )


# Single process, no Ray ---------------------------------------------------------------------------


class SingleProcess(msgspec.Struct, kw_only=True):
    events: int
    seconds: float
    cpu_s: float
    events_per_s: float
    evaluations_per_s: float
    cpu_us_per_event: float
    verdict: Verdict


def load(script: scale.Script) -> tuple[ShardCore, list[AnyPlatformEvent]]:
    """A core hosting every account with the setup applied, and the burst decoded."""
    core = ShardCore(0)
    core.register([(a, DEFAULT_PLAN) for a in script.accounts])
    setup, rejected = decode_messages(script.setup)
    burst, rejected_burst = decode_messages(script.burst)
    if rejected or rejected_burst:
        raise AssertionError(f"the script has rejected messages: {(rejected + rejected_burst)[:3]}")
    core.apply(setup)
    return core, burst


def single_process(script: scale.Script) -> SingleProcess:
    """The burst through one `ShardCore` in this process, in shard-sized batches, timed."""
    core, burst = load(script)
    before = core.stats.evaluations
    cpu, started = time.process_time(), time.perf_counter()
    for i in range(0, len(burst), CHUNK):
        core.apply(burst[i : i + CHUNK])
    seconds, cpu_s = time.perf_counter() - started, time.process_time() - cpu
    causes = {
        a: (core.accounts[a].breach.caused_by if core.accounts[a].breach else None)  # type: ignore[union-attr]
        for a in core.breached()
    }
    return SingleProcess(
        events=len(burst),
        seconds=round(seconds, 3),
        cpu_s=round(cpu_s, 3),
        events_per_s=round(len(burst) / seconds, 1),
        evaluations_per_s=round((core.stats.evaluations - before) / seconds, 1),
        cpu_us_per_event=round(cpu_s / len(burst) * 1e6, 2),
        verdict=judge(script, causes),
    )


# Polling ------------------------------------------------------------------------------------------


class Polling(msgspec.Struct, kw_only=True):
    interval_s: float
    phases: int  # scan schedules tried, offset by interval / phases from the burst's start
    scans: int  # over every phase
    scan_ms: float  # median wall time of one scan of every account
    cpu_share: float  # of one core, spent scanning at this interval
    detection_ms: Latency  # pooled over the phases: a breach at a random time of the cycle
    verdict: Verdict  # missed: in at least one phase


PHASES = 4


def polling(run: Run, interval_s: float, phases: int = PHASES) -> Polling:
    """A cron job's view: prices and deals applied as they come, every rule run only at each
    scan, on every account. A scan's timing against the news decides what it sees, so the run
    is repeated with the scans offset by 0, 1/`phases`, ... of the interval from the burst's
    start, and the detection times pooled."""
    latencies: list[int] = []
    missed: set[str] = set()
    false: set[str] = set()
    durations: list[float] = []
    for k in range(phases):
        found, scans = _scan_schedule(run, interval_s, interval_s * (k + 1) / phases)
        durations += scans
        scan_ns = int(sorted(scans)[len(scans) // 2] * 1e9)
        latencies += [
            at - run.tick_ts[run.script.expected[a]] + scan_ns
            for a, at in found.items()
            if a in run.script.expected
        ]
        # A scan cannot name the tick that crossed the floor: it is judged on whether it found
        # the breach at all, not on the cause it records.
        verdict = judge(run.script, {a: run.script.expected.get(a) for a in found})
        missed |= set(verdict.missed)
        false |= set(verdict.false)
    scan_s = sorted(durations)[len(durations) // 2]
    return Polling(
        interval_s=interval_s,
        phases=phases,
        scans=len(durations),
        scan_ms=round(scan_s * 1e3, 3),
        cpu_share=round(scan_s / interval_s, 5),
        detection_ms=latency_ms(latencies),
        verdict=Verdict(
            expected=len(run.script.expected),
            missed=sorted(missed),
            false=sorted(false),
            wrong_tick=[],
        ),
    )


def _scan_schedule(
    run: Run, interval_s: float, first_s: float
) -> tuple[dict[str, int], list[float]]:
    """One schedule: scans `first_s` after the burst's start, then every `interval_s`, the last
    the first after the burst's end. (account -> detection time, scans, each scan's seconds)."""
    core, burst = load(run.script)
    step = int(interval_s * 1e9)
    next_scan = run.start_ns + int(first_s * 1e9)
    detected: dict[str, int] = {}
    scans: list[float] = []
    last: PriceTicked | None = None

    def scan(at_ns: int) -> None:
        cause = last.event_id if last is not None else "scan"
        started = time.perf_counter()
        for account in core.accounts.values():
            effects = account.advance(at_ns, cause, core.market.book)
            if account.account_id not in detected and any(
                isinstance(e, RuleBreached) for e in effects
            ):
                detected[account.account_id] = at_ns
        scans.append(time.perf_counter() - started)

    for event in burst:
        while event.ts_ns >= next_scan:
            scan(next_scan)
            next_scan += step
        if isinstance(event, PriceTicked):
            core.market.book[event.symbol] = (event.bid, event.ask)
            last = event
        else:
            core.apply([event])
    scan(next_scan)
    return detected, scans


# Shards on Ray (ours) -----------------------------------------------------------------------------


class Ours(msgspec.Struct, kw_only=True):
    shards: int
    offered_ticks_per_s: float
    injected_s: float
    drain_s: float
    events: int
    events_per_s: float
    evaluations_per_s: float
    breach_to_freeze_ms: Latency
    latency_samples: int  # freezes the platform carried out (one per expected breach)
    lost_events: int
    extra_events: int  # applied beyond the burst and the platform's freeze confirmations
    journal_missing: list[str]
    cpu_busy_pct: float  # the whole machine, over the burst
    cpu_s: dict[str, float]  # per process kind, over the burst
    # the processes a firm runs (shards, bridge, risk hub, reconciler, supervisor); the
    # simulated platform and the driver injecting the burst are the test's, and PostgreSQL is
    # counted only in `cpu_busy_pct`
    cpu_us_per_event: float
    rss_mb: float  # the same processes: the sum of each one's peak resident memory
    bytes_per_account: float  # shard RSS growth per account, positions open
    python_bytes_per_account: float  # tracemalloc, in this process
    verdict: Verdict
    settled: bool


async def ours(run: Run, settings: Settings, database_url: str, prefix: str) -> Ours:
    options = settings.options()
    script = run.script
    in_process = scale.traced_memory(script)
    runtime = Runtime(scale.runtime_config(options, database_url, prefix))
    try:
        hosting = await scale.host_and_open(runtime, script, options.settle_timeout_s)
        before = await runtime.stats()
        pids = await _pids(runtime)
        cpu_before = {kind: _cpu_s(p) for kind, p in pids.items()}
        psutil.cpu_percent(None)
        started = time.perf_counter()
        injected_s = await _inject(runtime, script.burst, settings, run)
        settled = await scale.drained(
            runtime, before.events + len(script.burst), options.settle_timeout_s
        )
        drain_s = time.perf_counter() - started
        busy = psutil.cpu_percent(None)
        cpu = {kind: round(_cpu_s(p) - cpu_before[kind], 3) for kind, p in pids.items()}
        after = await runtime.stats()
        breached = await runtime.breached()
        causes: dict[str, str | None] = {}
        for account in breached:
            view = await runtime.account(account)
            causes[account] = view.breach.caused_by if view and view.breach else None
        samples = (await runtime.simulator_report()).breach_to_freeze_ns
        frozen = set(await runtime.frozen())
        peak = sum(scale.peak_rss_mib(pids[kind]) for kind in OURS)
        missing = await _not_journaled(database_url, run.deals)
    finally:
        await runtime.close()
    events = after.events - before.events
    confirmations = after.frozen - before.frozen  # the platform's TradingDisabled events
    surplus = events - confirmations - len(script.burst)
    verdict = judge(script, causes)
    # A breach counts only once the platform disabled the account.
    unfrozen = set(script.expected) - frozen
    verdict.missed = sorted(set(verdict.missed) | unfrozen)
    return Ours(
        shards=hosting.shards,
        offered_ticks_per_s=settings.ticks_per_second,
        injected_s=round(injected_s, 3),
        drain_s=round(drain_s, 3),
        events=events,
        events_per_s=round(events / drain_s, 1),
        evaluations_per_s=round((after.evaluations - before.evaluations) / drain_s, 1),
        breach_to_freeze_ms=latency_ms(samples),
        latency_samples=len(samples),
        lost_events=max(-surplus, len(missing), 0),
        extra_events=max(surplus, 0),
        journal_missing=missing[:20],
        cpu_busy_pct=round(busy, 1),
        cpu_s=cpu,
        cpu_us_per_event=round(sum(cpu[k] for k in OURS) / max(1, events) * 1e6, 2),
        rss_mb=round(peak, 1),
        bytes_per_account=hosting.rss_bytes_per_open_account,
        python_bytes_per_account=in_process.open_bytes_per_account,
        verdict=verdict,
        settled=settled,
    )


async def _inject(runtime: Runtime, burst: list[bytes], settings: Settings, run: Run) -> float:
    """Hand the burst to the platform at the script's pace (its clock, in real time)."""
    server = runtime.cell().server
    times = [msgspec.json.decode(m, type=_Stamped).ts_ns for m in burst]
    loop = asyncio.get_running_loop()
    started = loop.time()
    i = 0
    while i < len(burst):
        due = (loop.time() - started) * 1e9 + run.start_ns
        j = i
        while j < len(burst) and times[j] <= due:
            j += 1
        if j > i:
            await server.inject.remote(burst[i:j])
            i = j
        else:
            await asyncio.sleep(scale.PACE_S)
    return loop.time() - started


class _Stamped(msgspec.Struct):
    ts_ns: int


OURS = ("shards", "bridge", "hub", "reconciler", "supervisor")
"""The process kinds a firm runs; the others (simulator, driver) are the test's."""


async def _pids(runtime: Runtime) -> dict[str, list[int]]:
    cell = runtime.cell()
    shards = await scale.pids_of(runtime.shards)
    found = await scale.pids_of(
        [cell.worker, cell.reconciler, runtime.hub, runtime.supervisor, cell.server]
    )
    bridge, reconciler, hub, supervisor, simulator = found
    return {
        "shards": shards,
        "bridge": [bridge],
        "hub": [hub],
        "reconciler": [reconciler],
        "supervisor": [supervisor],
        "simulator": [simulator],
        "driver": [os.getpid()],
    }


def _cpu_s(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


async def _not_journaled(database_url: str, deals: list[str]) -> list[str]:
    if not deals:
        return []
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            found: set[str] = set()
            for i in range(0, len(deals), 5_000):
                part = deals[i : i + 5_000]
                rows = await conn.execute(
                    select(journal.c.event_id).where(journal.c.event_id.in_(part))
                )
                found.update(r.event_id for r in rows)
    finally:
        await engine.dispose()
    return sorted(set(deals) - found)


# The report ---------------------------------------------------------------------------------------


class Report(msgspec.Struct, kw_only=True):
    scenario: str
    machine: scale.Machine
    parameters: dict[str, Any]
    # the headline figures of our design (the names), then every design in full
    accounts: int
    events_per_s: float
    evaluations_per_s: float
    breach_to_freeze_ms: Latency
    missed_breaches: int
    false_breaches: int
    lost_events: int
    rss_mb: float
    bytes_per_account: float
    cpu_busy_pct: float
    ours: Ours
    single_process: SingleProcess
    polling: list[Polling]
    actor_per_account: scale.ActorPerAccount | None
    exact: bool  # ours and the single process: no missed/false/wrong breach, none lost, settled
    command: str = ""  # the command line that made this report


async def measure(settings: Settings) -> Report:
    prefix = f"{settings.scenario}-{secrets.token_hex(3)}"
    run = prepare(settings, prefix)
    script = run.script
    scale.say(
        f"script: {settings.accounts:,} accounts, {len(script.setup):,} setup events, "
        f"{len(script.burst):,} burst events over {settings.duration_s:g} s "
        f"({settings.ticks_per_second:,.0f} ticks/s, {len(run.deals):,} deals), "
        f"{len(script.expected)} must breach, {len(script.near)} must not"
    )
    async with scale.database(None) as url:
        pipeline = await ours(run, settings, url, prefix)
    scale.say(f"ours: {pipeline.events_per_s:,.0f} events/s, lost {pipeline.lost_events}")
    single = single_process(script)
    scale.say(f"single process: {single.events_per_s:,.0f} events/s")
    polls = [polling(run, interval) for interval in settings.polls_s]
    solo = scale.actor_per_account(settings.options()) if settings.actor_per_account else None
    v = pipeline.verdict
    exact = not (v.missed or v.false or v.wrong_tick or pipeline.lost_events)
    exact = exact and pipeline.settled and not pipeline.extra_events
    exact = exact and not (single.verdict.missed or single.verdict.false)
    return Report(
        scenario=settings.scenario,
        machine=scale.machine(),
        parameters={
            "accounts": settings.accounts,
            "duration_s": settings.duration_s,
            "rate_per_symbol": settings.rate,
            "multiplier": settings.multiplier,
            "ticks_per_s": settings.ticks_per_second,
            "burst_symbols": list(scale.BURST_SYMBOLS),
            "deals_per_s": settings.deals_per_second,
            "seed": settings.seed,
            "polls_s": list(settings.polls_s),
        },
        accounts=settings.accounts,
        events_per_s=pipeline.events_per_s,
        evaluations_per_s=pipeline.evaluations_per_s,
        breach_to_freeze_ms=pipeline.breach_to_freeze_ms,
        missed_breaches=len(v.missed),
        false_breaches=len(v.false),
        lost_events=pipeline.lost_events,
        rss_mb=pipeline.rss_mb,
        bytes_per_account=pipeline.bytes_per_account,
        cpu_busy_pct=pipeline.cpu_busy_pct,
        ours=pipeline,
        single_process=single,
        polling=polls,
        actor_per_account=solo,
        exact=exact,
    )


def render(report: Report) -> str:
    m, o, s = report.machine, report.ours, report.single_process
    p = report.parameters
    lat = o.breach_to_freeze_ms
    lines = [
        f"{report.scenario}: {report.accounts:,} accounts, {p['ticks_per_s']:,.0f} ticks/s on "
        f"{', '.join(p['burst_symbols'])} for {p['duration_s']:g} s, {p['deals_per_s']:g} deals/s",
        f"machine              {m.cpu_model}, {m.cores} cores, {m.ram_gib} GiB; Python {m.python}",
        f"ours (shards on Ray) {o.events_per_s:,.0f} events/s, {o.evaluations_per_s:,.0f} "
        f"evaluations/s, breach->freeze p50 {lat.p50} / p99 {lat.p99} / max {lat.max} ms",
        f"                     missed {report.missed_breaches}, false {report.false_breaches}, "
        f"wrong tick {len(o.verdict.wrong_tick)}, lost events {o.lost_events}; CPU "
        f"{o.cpu_busy_pct:g}% busy, {o.cpu_us_per_event:g} µs/event; RSS {o.rss_mb:,.0f} MB; "
        f"{o.bytes_per_account:,.0f} B/account",
        f"single process       {s.events_per_s:,.0f} events/s, {s.evaluations_per_s:,.0f} "
        f"evaluations/s, {s.cpu_us_per_event:g} µs/event; missed {len(s.verdict.missed)}, "
        f"false {len(s.verdict.false)}",
    ]
    for poll in report.polling:
        d = poll.detection_ms
        lines.append(
            f"polling every {poll.interval_s:>5g} s detection p50 {d.p50:,.0f} / p99 {d.p99:,.0f}"
            f" / max {d.max:,.0f} ms; missed {len(poll.verdict.missed)}; scan "
            f"{poll.scan_ms:,.1f} ms ({poll.cpu_share:.2%} of a core)"
        )
    if (a := report.actor_per_account) is not None:
        lines.append(
            f"actor per account    {a.actors} actors: {a.events_per_s:,.0f} events/s, "
            f"{a.rss_mib_per_actor:g} MiB each, created in {a.creation_s_per_actor * 1e3:,.0f} ms "
            f"each; missed {len(a.missed)}, false {len(a.false)}"
        )
    lines.append("exact: " + ("yes" if report.exact else "NO (missed, false, wrong-tick or lost)"))
    return "\n".join(lines)


def parser(
    scenario: str = "news_burst", defaults: Settings | None = None
) -> argparse.ArgumentParser:
    d = defaults or Settings()
    parser = argparse.ArgumentParser(prog=f"python -m loadtests {scenario}", description=__doc__)
    parser.add_argument("--accounts", type=positive, default=d.accounts)
    parser.add_argument("--duration", type=float, default=d.duration_s, help="seconds")
    parser.add_argument("--rate", type=float, default=d.rate, help="ticks/s per symbol before")
    parser.add_argument("--multiplier", type=float, default=d.multiplier)
    parser.add_argument("--deals-per-second", type=float, default=d.deals_per_second)
    parser.add_argument("--shards", type=int, default=d.shards, help="0: one per CPU")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument(
        "--actor-per-account",
        type=_actors,
        default=d.actor_per_account,
        help="accounts of the one-actor-per-account run: 0 skips it, else at least 4",
    )
    parser.add_argument("--actor-ticks", type=int, default=d.actor_ticks)
    parser.add_argument("--poll", type=float, nargs="*", default=list(d.polls_s), help="seconds")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    return parser


def _actors(text: str) -> int:
    """The script pushes at least two accounts to breach and two near: four at the least."""
    value = int(text)
    if 0 < value < 4:
        raise argparse.ArgumentTypeError(f"0 (skip) or at least 4, got {value}")
    return value


def settings_of(args: argparse.Namespace, scenario: str) -> Settings:
    return Settings(
        accounts=args.accounts,
        duration_s=args.duration,
        rate=args.rate,
        multiplier=args.multiplier,
        deals_per_second=args.deals_per_second,
        shards=args.shards,
        seed=args.seed,
        actor_per_account=args.actor_per_account,
        actor_ticks=args.actor_ticks,
        polls_s=tuple(args.poll),
        scenario=scenario,
    )


def execute(settings: Settings, json_path: Path | None, argv: Sequence[str]) -> int:
    with local_ray():
        report = asyncio.run(measure(settings))
    report.command = " ".join(["python -m loadtests", settings.scenario, *argv])
    scale.say(render(report))
    if json_path is not None:
        write_report(json_path, report)
    return 0 if report.exact else 1


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    return execute(settings_of(args, "news_burst"), args.json, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
