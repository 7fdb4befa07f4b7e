"""Runtime-at-scale benchmark: account shards on Ray under a news burst, and the alternative.

`python -m loadtests scale [--accounts 10000 50000] [--actor-per-account 100] [--json PATH]`

For each size it measures, on the real pipeline (simulator actor -> bridge worker -> shard actors
-> bridge -> simulator), with PostgreSQL journaling:

- memory per idle account: `tracemalloc` around `ShardCore.register` in this process, and the shard
  actors' resident memory (psutil on their pids, via Ray's `__ray_call__`) before and after
  hosting, and after every account opened its positions;
- a news burst: a script built before any timing starts. Every account opens 1-3 positions; a known
  set is pushed near its daily loss (a losing round trip today) or its max loss (losses on the two
  previous days); then ticks on three symbols arrive at `--ticks-per-second`, injected into the
  platform simulator every 10 ms. Prices trend (a news move), so some pushed accounts cross their
  floor at a tick this module computes on its own (the ground truth) and others, sized against the
  worst price of the burst, come close and must not. Reported: events and account evaluations per
  second from the first burst tick until the pipeline is idle again, breach-to-freeze latency (from
  the platform handing the breaching tick to the bridge until it disables the account), missed,
  false and wrong-tick breaches, and the peak RSS of every actor process;
- the alternative design: one dedicated Ray actor per account (`--actor-per-account`, 0 to skip),
  one actor call per event, ticks fanned out to the actors holding the symbol. Reported: creation
  time, RSS per actor, events and evaluations per second on the same kind of script, smaller.

Figures are measured, never assumed; nothing here asserts on speed. Exit status 1 if any breach was
missed or false (in either design).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import os
import platform
import random
import secrets
import sys
import time
import tracemalloc
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import psutil
import ray

from actors.account import Account
from actors.events import RuleBreached
from actors.market import Market
from actors.plans import DEFAULT_PLAN
from actors.runtime import Runtime, RuntimeConfig
from actors.shard import ShardCore
from api.demo import Latency, latency_ms
from bridge.codec import decode_messages
from bridge.connections import EmbeddedConnection
from bridge.events import DealEntry, DealExecuted, PriceTicked, Side
from bridge.instruments import DEFAULT_INSTRUMENTS, Instrument
from bridge.simulator import SIM_EPOCH_NS, SimulatorConfig
from bridge.worker import WorkerConfig
from ledger.database import upgrade
from loadtests.common import local_ray, scratch_database, write_report
from loadtests.entity import _cpu_model

GOAL_BYTES_PER_ACCOUNT = 2048
GOAL_P99_MS = 50.0
AIM_P99_MS = 10.0
GOAL_ACCOUNTS = 50_000

_S = 1_000_000_000
_DAY = 86_400 * _S
BURST_SYMBOLS = {"EURUSD": -1, "GBPUSD": -1, "XAUUSD": +1}  # the news: USD up, gold up
BURST_MOVE = 0.005  # the trend over the burst, a fraction of the price
TARGET_SHARE = 0.02  # accounts pushed near a floor that the burst takes through it
NEAR_SHARE = 0.02  # accounts pushed near a floor that the burst must not take through it
HEADROOM = 100_000  # cents left above the floor for pushed accounts ($1,000)
NORMAL_RISK = 700.0  # at most this many USD lost per position of an ordinary account
PACE_S = 0.01  # burst injection interval
SETUP_CHUNK = 5_000


# The script ---------------------------------------------------------------------------------------


def _quote(instrument: Instrument, mid: float) -> tuple[float, float]:
    half = 10**-instrument.digits
    return round(mid - half, instrument.digits), round(mid + half, instrument.digits)


@dataclass
class PricePath:
    """One burst symbol's ticks: bids, asks and each tick's index in the whole burst."""

    bids: list[float] = field(default_factory=list)
    asks: list[float] = field(default_factory=list)
    index: list[int] = field(default_factory=list)

    def worst_unit_loss(self, buy: bool, open_price: float) -> float:
        """The largest loss of one unit of volume over the path (price units)."""
        return open_price - min(self.bids) if buy else max(self.asks) - open_price


@dataclass
class Script:
    """Everything the run sends, built before timing starts, and the ground truth."""

    accounts: list[str]
    setup: list[bytes]
    burst: list[bytes]
    burst_symbols: list[str]  # the symbol of each burst tick
    holders: dict[str, list[str]]  # symbol -> accounts holding it when the burst starts
    expected: dict[str, str]  # account -> id of the burst tick at which it must breach
    near: list[str]  # pushed accounts that must not breach
    closest_cents: int  # the smallest margin any non-breaching pushed account kept


class _Builder:
    """Builds the script: timestamps, deal numbers, messages, holdings."""

    def __init__(self, seed: int, prefix: str) -> None:
        self.rng = random.Random(seed)
        self.prefix = prefix
        self.instruments = {i.symbol: i for i in DEFAULT_INSTRUMENTS}
        self.opening = {s: _quote(i, i.start_price) for s, i in self.instruments.items()}
        self.messages: list[bytes] = []
        self.holders: dict[str, list[str]] = {s: [] for s in self.instruments}
        self.ts = 0
        self.deal_id = 0

    def at(self, ts_ns: int) -> None:
        """Continue the timeline at `ts_ns` with a tick of every symbol at its opening quote."""
        self.ts = ts_ns
        for symbol, (bid, ask) in self.opening.items():
            self.emit(
                PriceTicked(event_id=self._id(), ts_ns=self._now(), symbol=symbol, bid=bid, ask=ask)
            )

    def emit(self, event: PriceTicked | DealExecuted) -> None:
        self.messages.append(msgspec.json.encode(event))

    def _id(self) -> str:
        return f"{self.prefix}/s{len(self.messages) + 1}"

    def _now(self) -> int:
        self.ts += 1_000
        return self.ts

    def open(self, account: str, symbol: str, buy: bool, volume: float) -> float:
        """Open a position at the opening quote; returns its price."""
        bid, ask = self.opening[symbol]
        self.deal_id += 1
        price = ask if buy else bid
        self.emit(self._deal(account, self.deal_id, self.deal_id, symbol, buy, volume, price, 0.0))
        self.holders[symbol].append(account)
        return price

    def round_trip(self, account: str, loss: float) -> None:
        """A closed AUDUSD position that lost `loss` USD."""
        bid, ask = self.opening["AUDUSD"]
        self.deal_id += 2
        opened, closed = self.deal_id - 1, self.deal_id
        self.emit(self._deal(account, opened, opened, "AUDUSD", True, 1.0, ask, 0.0))
        self.emit(self._deal(account, closed, opened, "AUDUSD", False, 1.0, bid, -loss))

    def _deal(
        self,
        account: str,
        deal: int,
        position: int,
        symbol: str,
        buy: bool,
        volume: float,
        price: float,
        profit: float,
    ) -> DealExecuted:
        return DealExecuted(
            event_id=self._id(),
            ts_ns=self._now(),
            account_id=account,
            deal_id=deal,
            position_id=position,
            symbol=symbol,
            entry=DealEntry.IN if position == deal else DealEntry.OUT,
            side=Side.BUY if buy else Side.SELL,
            volume=volume,
            price=price,
            profit=profit,
        )


def burst_paths(
    ticks: int, ticks_per_second: float, rng: random.Random, prefix: str
) -> tuple[list[bytes], dict[str, PricePath]]:
    """The news burst: symbols in turn, each trending by BURST_MOVE with some jitter."""
    instruments = {i.symbol: i for i in DEFAULT_INSTRUMENTS}
    symbols = list(BURST_SYMBOLS)
    paths = {s: PricePath() for s in symbols}
    messages: list[bytes] = []
    start = SIM_EPOCH_NS + 60 * _S
    step = int(_S / ticks_per_second)
    for k in range(ticks):
        symbol = symbols[k % len(symbols)]
        instrument = instruments[symbol]
        move = BURST_SYMBOLS[symbol] * BURST_MOVE * instrument.start_price
        mid = instrument.start_price + move * (k + 1) / ticks
        mid += rng.gauss(0.0, abs(move) * 0.01)
        bid, ask = _quote(instrument, mid)
        tick = PriceTicked(
            event_id=f"{prefix}/b{k}", ts_ns=start + k * step, symbol=symbol, bid=bid, ask=ask
        )
        messages.append(msgspec.json.encode(tick))
        path = paths[symbol]
        path.bids.append(bid)
        path.asks.append(ask)
        path.index.append(k)
    return messages, paths


def first_crossing(
    path: PricePath,
    buy: bool,
    open_price: float,
    volume: float,
    contract: float,
    balance: int,
    floor: int,
) -> tuple[int | None, int]:
    """The entity's arithmetic over the path (cents, one rounding per position): the index of the
    first tick at which equity is at or below `floor` (or None), and the smallest equity - floor."""
    if buy:
        raw = (np.array(path.bids) - open_price) * volume * contract
    else:
        raw = (open_price - np.array(path.asks)) * volume * contract
    margin = balance + np.rint(raw * 100).astype(np.int64) - floor
    crossed = np.flatnonzero(margin <= 0)
    return (int(crossed[0]) if crossed.size else None), int(margin.min())


@dataclass
class _Pushed:
    """A pushed account: its floor, its balance, and whether the burst must take it through."""

    account: str
    max_loss: bool
    must_breach: bool


def build_script(
    accounts: int, ticks: int, ticks_per_second: float, seed: int, prefix: str
) -> Script:
    """The whole run's messages and ground truth, deterministic for the arguments."""
    b = _Builder(seed, prefix)
    ids = [f"{prefix}-{i:06d}" for i in range(accounts)]
    burst, paths = burst_paths(ticks, ticks_per_second, b.rng, prefix)
    pushed = _choose_pushed(ids, b.rng)
    _history(b, pushed)
    b.at(SIM_EPOCH_NS)
    for p in pushed.values():
        if not p.max_loss:
            b.round_trip(p.account, 4_000.0)
    expected, closest = _open_pushed(b, pushed, paths)
    for account in ids:
        if account not in pushed:
            _open_ordinary(b, account, paths)
    near = sorted(a for a, p in pushed.items() if not p.must_breach)
    symbols = list(BURST_SYMBOLS)
    burst_symbols = [symbols[k % len(symbols)] for k in range(ticks)]
    return Script(ids, b.messages, burst, burst_symbols, b.holders, expected, near, closest)


def _choose_pushed(ids: list[str], rng: random.Random) -> dict[str, _Pushed]:
    targets = max(2, round(len(ids) * TARGET_SHARE))
    near = max(2, round(len(ids) * NEAR_SHARE))
    chosen = rng.sample(ids, targets + near)
    return {
        a: _Pushed(account=a, max_loss=i % 2 == 1, must_breach=i < targets)
        for i, a in enumerate(chosen)
    }


def _history(b: _Builder, pushed: dict[str, _Pushed]) -> None:
    """Max-loss accounts lose $4,500 on each of the two previous days: balance 91,000, so the
    static floor (90,000) binds today, above the daily one (86,000)."""
    for days_ago in (2, 1):
        b.at(SIM_EPOCH_NS - days_ago * _DAY)
        for p in pushed.values():
            if p.max_loss:
                b.round_trip(p.account, 4_500.0)


def _open_pushed(
    b: _Builder, pushed: dict[str, _Pushed], paths: dict[str, PricePath]
) -> tuple[dict[str, str], int]:
    """One position each, against the news. Targets are sized to cross about a random way into
    the burst, near ones to keep $400 at the burst's worst price; the arithmetic decides."""
    expected: dict[str, str] = {}
    closest = HEADROOM
    for p in pushed.values():
        symbol = b.rng.choice(list(BURST_SYMBOLS))
        buy, path = BURST_SYMBOLS[symbol] < 0, paths[symbol]
        contract = b.instruments[symbol].contract_size
        open_price = b.opening[symbol][1 if buy else 0]
        balance, floor = (9_100_000, 9_000_000) if p.max_loss else (9_600_000, 9_500_000)
        volume = _pushed_volume(p, b.rng, path, buy, open_price, contract)
        b.open(p.account, symbol, buy, volume)
        at, margin = first_crossing(path, buy, open_price, volume, contract, balance, floor)
        if p.must_breach != (at is not None):
            raise AssertionError(f"{p} crossed at {at}: the script is not what it should be")
        if at is not None:
            expected[p.account] = f"{b.prefix}/b{path.index[at]}"
        else:
            closest = min(closest, margin)
    return expected, closest


def _pushed_volume(
    p: _Pushed, rng: random.Random, path: PricePath, buy: bool, open_price: float, contract: float
) -> float:
    if p.must_breach:
        k = int(rng.uniform(0.05, 0.95) * len(path.bids))
        unit = (open_price - path.bids[k]) if buy else (path.asks[k] - open_price)
        return max(0.01, round((HEADROOM / 100 + 200) / (unit * contract), 2))
    unit = path.worst_unit_loss(buy, open_price)
    return max(0.01, int((HEADROOM / 100 - 400) / (unit * contract) * 100) / 100)


def _open_ordinary(b: _Builder, account: str, paths: dict[str, PricePath]) -> None:
    """1-3 positions on distinct symbols, each able to lose at most NORMAL_RISK in the burst
    (three of them stay well inside the $5,000 daily allowance)."""
    for symbol in b.rng.sample(list(b.instruments), b.rng.randint(1, 3)):
        buy = b.rng.random() < 0.5
        instrument = b.instruments[symbol]
        if symbol in paths:
            unit = paths[symbol].worst_unit_loss(buy, b.opening[symbol][1 if buy else 0])
        else:
            unit = BURST_MOVE * instrument.start_price  # never ticks in the burst
        cap = NORMAL_RISK / (max(unit, 0.0) + 2 * 10**-instrument.digits) / instrument.contract_size
        volume = max(0.01, int(b.rng.uniform(0.1, 1.0) * cap * 100) / 100)
        b.open(account, symbol, buy, volume)


# Measuring --------------------------------------------------------------------------------------


class Machine(msgspec.Struct, kw_only=True):
    cpu_model: str
    cores: int
    ram_gib: float
    python: str
    ray: str
    msgspec: str
    numpy: str
    platform: str


def machine() -> Machine:
    return Machine(
        cpu_model=_cpu_model(),
        cores=os.cpu_count() or 0,
        ram_gib=round(psutil.virtual_memory().total / 2**30, 1),
        python=platform.python_version(),
        ray=ray.__version__,
        msgspec=msgspec.__version__,
        numpy=np.__version__,
        platform=platform.platform(),
    )


def _pid(actor: object) -> int:
    return os.getpid()


async def pids_of(actors: Sequence[Any]) -> list[int]:
    """The OS process of each actor, asked through Ray's `__ray_call__` (no method needed)."""
    return list(await asyncio.gather(*(a.__ray_call__.remote(_pid) for a in actors)))


def rss_mib(pids: Sequence[int]) -> float:
    return round(sum(psutil.Process(p).memory_info().rss for p in pids) / 2**20, 1)


def peak_rss_mib(pids: Sequence[int]) -> float:
    """The kernel's high-water mark of resident memory (VmHWM), summed over the processes."""
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1]) * 1024
    return round(total / 2**20, 1)


class InProcess(msgspec.Struct, kw_only=True):
    """Python memory measured with tracemalloc in this process (no Ray)."""

    idle_bytes_per_account: float
    open_bytes_per_account: float  # after the setup script: positions open, some losses closed


def traced_memory(script: Script) -> InProcess:
    """`ShardCore.register` of every account, then the setup events applied, under tracemalloc."""
    pairs = [(a, DEFAULT_PLAN) for a in script.accounts]
    events, rejected = decode_messages(script.setup)
    assert not rejected, rejected[:3]
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        core = ShardCore(0)
        core.register(pairs)
        gc.collect()
        idle = tracemalloc.get_traced_memory()[0] - base
        core.apply(events)
        gc.collect()
        loaded = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    n = len(script.accounts)
    return InProcess(
        idle_bytes_per_account=round(idle / n, 1), open_bytes_per_account=round(loaded / n, 1)
    )


# The pipeline on Ray ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    sizes: tuple[int, ...] = (10_000, 50_000)
    actor_per_account: int = 100
    actor_ticks: int = 500
    burst_seconds: float = 5.0
    ticks_per_second: float = 1_000.0
    shards: int = 0
    seed: int = 1
    settle_timeout_s: float = 900.0
    database_url: str | None = None

    @property
    def ticks(self) -> int:
        return max(1, round(self.burst_seconds * self.ticks_per_second))


class Hosting(msgspec.Struct, kw_only=True):
    """Hosting the accounts and opening their positions through the pipeline."""

    shards: int
    host_s: float
    shard_rss_empty_mib: float
    shard_rss_hosted_mib: float
    shard_rss_open_mib: float
    rss_bytes_per_idle_account: float
    rss_bytes_per_open_account: float
    setup_events: int
    setup_s: float
    setup_events_per_s: float


class Burst(msgspec.Struct, kw_only=True):
    """The news burst, from its first tick injected until the pipeline was idle again."""

    ticks: int
    offered_ticks_per_s: float
    injected_s: float
    drain_s: float
    ticks_per_s: float
    events: int
    events_per_s: float
    evaluations: int
    evaluations_per_s: float
    breach_to_freeze_ms: Latency
    latency_samples: int
    expected_breaches: int
    near_misses: int
    closest_near_miss_usd: float
    breached: int
    frozen: int
    missed: list[str]
    false: list[str]
    wrong_tick: list[str]
    settled: bool
    load_average: tuple[float, float]  # 1-minute load before and after: other work skews figures


class PeakRss(msgspec.Struct, kw_only=True):
    """Peak resident memory (VmHWM) of each process of one size's run, MiB."""

    shards_mib: float
    bridge_mib: float
    simulator_mib: float
    driver_mib: float


class SizeReport(msgspec.Struct, kw_only=True):
    accounts: int
    positions: int
    in_process: InProcess
    hosting: Hosting
    burst: Burst
    peak_rss: PeakRss


def runtime_config(options: Options, database_url: str, prefix: str) -> RuntimeConfig:
    quiet = SimulatorConfig(
        seed=options.seed, server=prefix, ticks_per_second=0.0, trades_per_trader_per_minute=0.0
    )
    return RuntimeConfig(
        database_url=database_url,
        shards=options.shards,
        plan=DEFAULT_PLAN,
        connections=(EmbeddedConnection(name=prefix, simulator=quiet),),
    )


async def run_size(options: Options, accounts: int, database_url: str) -> SizeReport:
    """Build the script, measure memory in-process, then run it through a fresh runtime."""
    prefix = f"scale{accounts}-{secrets.token_hex(3)}"
    script = build_script(accounts, options.ticks, options.ticks_per_second, options.seed, prefix)
    say(
        f"[{accounts:,}] script: {len(script.setup):,} setup events, {len(script.burst):,} ticks, "
        f"{len(script.expected)} must breach, {len(script.near)} must not"
    )
    in_process = traced_memory(script)
    runtime = Runtime(runtime_config(options, database_url, prefix))
    try:
        hosting = await host_and_open(runtime, script, options.settle_timeout_s)
        say(f"[{accounts:,}] hosted and opened in {hosting.host_s + hosting.setup_s:.1f} s")
        burst = await news_burst(runtime, script, options)
        peak = await peak_of(runtime)
    finally:
        await runtime.close()
    positions = sum(len(h) for h in script.holders.values())
    return SizeReport(
        accounts=accounts,
        positions=positions,
        in_process=in_process,
        hosting=hosting,
        burst=burst,
        peak_rss=peak,
    )


async def host_and_open(runtime: Runtime, script: Script, timeout_s: float) -> Hosting:
    await runtime.start([])
    pids = await pids_of(runtime.shards)
    empty = rss_mib(pids)
    started = time.perf_counter()
    await runtime.host(script.accounts)
    host_s = time.perf_counter() - started
    hosted = rss_mib(pids)
    started = time.perf_counter()
    for i in range(0, len(script.setup), SETUP_CHUNK):
        await runtime.cell().server.inject.remote(script.setup[i : i + SETUP_CHUNK])
    await drained(runtime, len(script.setup), timeout_s)
    # The burst starts from a quiet runtime: every shard's checkpoint holds the setup (saving
    # ~25,000 changed accounts per shard takes a second, which a burst would otherwise share).
    await asyncio.gather(*(shard.checkpoint.remote() for shard in runtime.shards))
    setup_s = time.perf_counter() - started
    opened = rss_mib(pids)
    n = len(script.accounts)
    return Hosting(
        shards=len(pids),
        host_s=round(host_s, 3),
        shard_rss_empty_mib=empty,
        shard_rss_hosted_mib=hosted,
        shard_rss_open_mib=opened,
        rss_bytes_per_idle_account=round((hosted - empty) * 2**20 / n, 1),
        rss_bytes_per_open_account=round((opened - empty) * 2**20 / n, 1),
        setup_events=len(script.setup),
        setup_s=round(setup_s, 3),
        setup_events_per_s=round(len(script.setup) / setup_s, 1),
    )


async def drained(runtime: Runtime, events: int, timeout_s: float) -> bool:
    """Wait until the bridge has applied `events` in all, then for `Runtime.settle`.

    Counting first closes a gap: between the platform handing a batch over and the bridge holding
    it, both look empty."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if (await runtime.stats()).events >= events:
            break
        await asyncio.sleep(0.02)
    return await runtime.settle(max(0.0, deadline - loop.time()))


def paced_chunks(count: int, per_second: float) -> list[tuple[int, int]]:
    """[start, end) index ranges to inject every PACE_S so that `per_second` arrive per second."""
    bounds = [round(i * PACE_S * per_second) for i in range(int(count / per_second / PACE_S) + 2)]
    bounds = [min(b, count) for b in bounds]
    return [(a, b) for a, b in itertools.pairwise(bounds) if b > a]


async def news_burst(runtime: Runtime, script: Script, options: Options) -> Burst:
    before, load_before = await runtime.stats(), os.getloadavg()[0]
    loop = asyncio.get_running_loop()
    started = loop.time()
    for i, (a, b) in enumerate(paced_chunks(len(script.burst), options.ticks_per_second)):
        delay = started + i * PACE_S - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        await runtime.cell().server.inject.remote(script.burst[a:b])
    injected_s = loop.time() - started
    settled = await drained(runtime, before.events + len(script.burst), options.settle_timeout_s)
    drain_s = loop.time() - started
    after = await runtime.stats()
    verdict = await judge(runtime, script)
    evaluations, events = after.evaluations - before.evaluations, after.events - before.events
    samples = (await runtime.simulator_report()).breach_to_freeze_ns
    return Burst(
        ticks=len(script.burst),
        offered_ticks_per_s=options.ticks_per_second,
        injected_s=round(injected_s, 3),
        drain_s=round(drain_s, 3),
        ticks_per_s=round(len(script.burst) / drain_s, 1),
        events=events,
        events_per_s=round(events / drain_s, 1),
        evaluations=evaluations,
        evaluations_per_s=round(evaluations / drain_s, 1),
        breach_to_freeze_ms=latency_ms(samples),
        latency_samples=len(samples),
        expected_breaches=len(script.expected),
        near_misses=len(script.near),
        closest_near_miss_usd=script.closest_cents / 100,
        settled=settled,
        load_average=(load_before, os.getloadavg()[0]),
        **verdict,
    )


async def judge(runtime: Runtime, script: Script) -> dict[str, Any]:
    """Breaches against the ground truth; a breach caused by another tick than computed is wrong."""
    breached, frozen = set(await runtime.breached()), set(await runtime.frozen())
    expected = set(script.expected)
    wrong: list[str] = []
    for account in sorted(expected & breached):
        view = await runtime.account(account)
        cause = view.breach.caused_by if view is not None and view.breach is not None else None
        if cause != script.expected[account]:
            wrong.append(account)
    return {
        "breached": len(breached),
        "frozen": len(frozen),
        "missed": sorted(expected - frozen),
        "false": sorted((breached | frozen) - expected),
        "wrong_tick": wrong,
    }


async def peak_of(runtime: Runtime) -> PeakRss:
    shards = await pids_of(runtime.shards)
    bridge, simulator = await pids_of([runtime.cell().worker, runtime.cell().server])
    return PeakRss(
        shards_mib=peak_rss_mib(shards),
        bridge_mib=peak_rss_mib([bridge]),
        simulator_mib=peak_rss_mib([simulator]),
        driver_mib=peak_rss_mib([os.getpid()]),
    )


def say(line: str) -> None:
    print(line, flush=True)


# The alternative: one Ray actor per account -------------------------------------------------------


class SoloAccount:
    """One account in its own Ray actor: every event is one actor call, decoded at its edge."""

    def __init__(self, account_id: str) -> None:
        self.account = Account.open(account_id, DEFAULT_PLAN)
        self.market = Market()

    def apply(self, message: bytes) -> int:
        """Apply one JSON platform message; returns the breaches it caused."""
        events, rejected = decode_messages([message])
        if rejected:
            raise ValueError(rejected[0].error)
        event = events[0]
        if isinstance(event, PriceTicked):
            self.market.book[event.symbol] = (event.bid, event.ask)
            effects = self.account.on_tick(event, self.market.book)
        else:
            effects = self.account.apply(event, self.market)
        return sum(1 for effect in effects if isinstance(effect, RuleBreached))


class ActorPerAccount(msgspec.Struct, kw_only=True):
    """The alternative design at a small count, on the same kind of script."""

    actors: int
    creation_s: float
    creation_s_per_actor: float
    rss_mib_per_actor: float  # median, once created
    rss_mib_per_actor_loaded: float  # median, after the script
    rss_mib_total: float
    setup_events: int
    setup_calls: int
    setup_s: float
    ticks: int
    calls: int
    burst_s: float
    events_per_s: float
    evaluations_per_s: float
    expected_breaches: int
    missed: list[str]
    false: list[str]


def _median_rss_mib(pids: Sequence[int]) -> float:
    sizes = sorted(psutil.Process(p).memory_info().rss for p in pids)
    return round(sizes[len(sizes) // 2] / 2**20, 1)


def actor_per_account(options: Options) -> ActorPerAccount:
    """Create one actor per account, send the setup (ticks to all, deals to their account), then
    the burst with each tick sent to every actor holding its symbol, as fast as Ray takes it."""
    count, prefix = options.actor_per_account, f"solo-{secrets.token_hex(3)}"
    script = build_script(
        count, options.actor_ticks, options.ticks_per_second, options.seed, prefix
    )
    remote: Any = ray.remote(num_cpus=0)(SoloAccount)
    started = time.perf_counter()
    actors = {a: remote.remote(a) for a in script.accounts}
    pids: list[int] = ray.get([a.__ray_call__.remote(_pid) for a in actors.values()])
    creation_s = time.perf_counter() - started
    created = _median_rss_mib(pids)
    try:
        setup_calls, setup_s, _ = _calls(actors, _setup_routes(script))
        routes = [
            (m, script.holders[s]) for m, s in zip(script.burst, script.burst_symbols, strict=True)
        ]
        calls, burst_s, breaches = _calls(actors, routes)
        loaded, total = _median_rss_mib(pids), rss_mib(pids)
    finally:
        for actor in actors.values():
            ray.kill(actor)
    expected = set(script.expected)
    return ActorPerAccount(
        actors=count,
        creation_s=round(creation_s, 3),
        creation_s_per_actor=round(creation_s / count, 4),
        rss_mib_per_actor=created,
        rss_mib_per_actor_loaded=loaded,
        rss_mib_total=total,
        setup_events=len(script.setup),
        setup_calls=setup_calls,
        setup_s=round(setup_s, 3),
        ticks=len(script.burst),
        calls=calls,
        burst_s=round(burst_s, 3),
        events_per_s=round(len(script.burst) / burst_s, 1),
        evaluations_per_s=round(calls / burst_s, 1),
        expected_breaches=len(expected),
        missed=sorted(expected - breaches),
        false=sorted(breaches - expected),
    )


def _setup_routes(script: Script) -> list[tuple[bytes, list[str]]]:
    """Setup ticks go to every account (the book must know each symbol), deals to their own."""
    events, _ = decode_messages(script.setup)
    return [
        (m, script.accounts if isinstance(e, PriceTicked) else [e.account_id])
        for m, e in zip(script.setup, events, strict=True)
        if isinstance(e, PriceTicked | DealExecuted)
    ]


def _calls(
    actors: dict[str, Any], routes: list[tuple[bytes, list[str]]]
) -> tuple[int, float, set[str]]:
    """Send every message to its actors, one call each; (calls, seconds, accounts that breached)."""
    started = time.perf_counter()
    refs: list[Any] = []
    owners: list[str] = []
    for message, accounts in routes:
        for account in accounts:
            refs.append(actors[account].apply.remote(message))
            owners.append(account)
    results: list[int] = ray.get(refs)
    elapsed = time.perf_counter() - started
    return len(refs), elapsed, {a for a, n in zip(owners, results, strict=True) if n}


# Report and command line --------------------------------------------------------------------------


class Goals(msgspec.Struct, kw_only=True):
    accounts: int = GOAL_ACCOUNTS
    bytes_per_idle_account: int = GOAL_BYTES_PER_ACCOUNT
    p99_ms: float = GOAL_P99_MS
    aim_p99_ms: float = AIM_P99_MS


class Report(msgspec.Struct, kw_only=True):
    scenario: str
    machine: Machine
    seed: int
    burst_seconds: float
    ticks_per_second: float
    burst_symbols: list[str]
    max_batch: int
    requests_per_second: float
    sizes: list[SizeReport]
    actor_per_account: ActorPerAccount | None
    goals: Goals
    exact: bool  # no missed, false or wrong-tick breach anywhere


async def run(options: Options) -> Report:
    """Every size in turn, then the alternative design; Ray must be initialised."""
    async with database(options.database_url) as url:
        sizes = [await run_size(options, n, url) for n in options.sizes]
    solo = actor_per_account(options) if options.actor_per_account else None
    exact = all(not (s.burst.missed or s.burst.false or s.burst.wrong_tick) for s in sizes)
    exact = exact and (solo is None or not (solo.missed or solo.false))
    return Report(
        scenario="scale",
        machine=machine(),
        seed=options.seed,
        burst_seconds=options.burst_seconds,
        ticks_per_second=options.ticks_per_second,
        burst_symbols=list(BURST_SYMBOLS),
        max_batch=WorkerConfig().max_batch,
        requests_per_second=WorkerConfig().requests_per_second,
        sizes=sizes,
        actor_per_account=solo,
        goals=Goals(),
        exact=exact,
    )


@contextlib.asynccontextmanager
async def database(given: str | None) -> AsyncIterator[str]:
    """`given`, migrated; or a new PostgreSQL database on the local server, dropped afterwards."""
    if given is not None:
        await upgrade(given)
        yield given
        return
    async with scratch_database() as url:
        yield url


def render(report: Report) -> str:
    """The human-readable table: one column per size, then the alternative next to ours."""
    m = report.machine
    lines = [
        "runtime at scale: account shards on Ray under a news burst (real pipeline, PostgreSQL)",
        f"machine   {m.cpu_model}, {m.cores} cores, {m.ram_gib} GiB RAM; Python {m.python}, "
        f"Ray {m.ray}, msgspec {m.msgspec}, numpy {m.numpy}",
        f"burst     {report.burst_seconds:g} s at {report.ticks_per_second:,.0f} ticks/s on "
        f"{', '.join(report.burst_symbols)}; bridge batches up to {report.max_batch:,} messages, "
        f"sends at most {report.requests_per_second:g} requests/s to the platform",
        "",
        _row("accounts", [f"{s.accounts:,}" for s in report.sizes]),
    ]
    lines += [_row(label, [cell(s) for s in report.sizes]) for label, cell in _SIZE_ROWS]
    if report.actor_per_account is not None:
        lines += ["", *_compare(report.actor_per_account, report.sizes)]
    lines += ["", "exact: " + ("yes" if report.exact else "NO (missed, false or wrong-tick)")]
    return "\n".join(lines)


def _row(label: str, cells: Sequence[str], width: int = 44) -> str:
    return f"{label:<{width}}" + "".join(f"{c:>24}" for c in cells)


def _latency(s: SizeReport) -> str:
    t = s.burst.breach_to_freeze_ms
    return f"{t.p50:.1f} / {t.p99:.1f} / {t.max:.1f}"


def _truth(s: SizeReport) -> str:
    b = s.burst
    return f"{b.expected_breaches}/{b.frozen}/{len(b.missed)}/{len(b.false)}/{len(b.wrong_tick)}"


_SIZE_ROWS: list[tuple[str, Any]] = [
    ("shards", lambda s: f"{s.hosting.shards}"),
    ("open positions", lambda s: f"{s.positions:,}"),
    (
        "tracemalloc B/idle account (ShardCore)",
        lambda s: f"{s.in_process.idle_bytes_per_account:,.0f}",
    ),
    (
        "tracemalloc B/account, positions open",
        lambda s: f"{s.in_process.open_bytes_per_account:,.0f}",
    ),
    (
        "shard RSS empty/hosted/open MiB",
        lambda s: (
            f"{s.hosting.shard_rss_empty_mib:,.0f}/"
            f"{s.hosting.shard_rss_hosted_mib:,.0f}/{s.hosting.shard_rss_open_mib:,.0f}"
        ),
    ),
    ("shard RSS B/idle account", lambda s: f"{s.hosting.rss_bytes_per_idle_account:,.0f}"),
    (
        "shard RSS B/account, positions open",
        lambda s: f"{s.hosting.rss_bytes_per_open_account:,.0f}",
    ),
    ("hosting s", lambda s: f"{s.hosting.host_s:.2f}"),
    (
        "setup events (deals), events/s",
        lambda s: f"{s.hosting.setup_events:,}, {s.hosting.setup_events_per_s:,.0f}",
    ),
    ("burst ticks, injected over s", lambda s: f"{s.burst.ticks:,}, {s.burst.injected_s:.2f}"),
    ("burst drained after s", lambda s: f"{s.burst.drain_s:.2f}"),
    ("ticks/s processed", lambda s: f"{s.burst.ticks_per_s:,.0f}"),
    ("events/s ingested", lambda s: f"{s.burst.events_per_s:,.0f}"),
    ("account evaluations/s (sustained)", lambda s: f"{s.burst.evaluations_per_s:,.0f}"),
    ("breach->freeze ms p50/p99/max", _latency),
    ("latency samples", lambda s: f"{s.burst.latency_samples}"),
    ("breaches expect/frozen/miss/false/wrong", _truth),
    (
        "near misses (closest $)",
        lambda s: f"{s.burst.near_misses} ({s.burst.closest_near_miss_usd:,.0f})",
    ),
    (
        "1-min load average before/after burst",
        lambda s: "{:.1f} / {:.1f}".format(*s.burst.load_average),
    ),
    (
        "peak RSS MiB shards/bridge/sim/driver",
        lambda s: (
            f"{s.peak_rss.shards_mib:,.0f}/"
            f"{s.peak_rss.bridge_mib:,.0f}/{s.peak_rss.simulator_mib:,.0f}/{s.peak_rss.driver_mib:,.0f}"
        ),
    ),
    (
        "goal: < 2 KB Python memory per idle account",
        lambda s: _yes(s.in_process.idle_bytes_per_account < GOAL_BYTES_PER_ACCOUNT),
    ),
    (
        "goal: p99 breach->freeze < 50 ms",
        lambda s: _yes(s.burst.breach_to_freeze_ms.p99 < GOAL_P99_MS),
    ),
    (
        "aim: p99 < 10 ms at the offered tick rate",
        lambda s: _yes(s.burst.breach_to_freeze_ms.p99 < AIM_P99_MS),
    ),
]


def _yes(met: bool) -> str:
    return "met" if met else "NOT met"


def _compare(solo: ActorPerAccount, sizes: list[SizeReport]) -> list[str]:
    """Per account, the alternative next to ours at each size."""
    head = [
        f"one Ray actor per account ({solo.actors} actors)",
        *[f"ours at {s.accounts:,}" for s in sizes],
    ]
    return [
        _row(f"{'per account':<44}", head[:1], 0) + "".join(f"{h:>24}" for h in head[1:]),
        _row(
            "resident memory per account",
            [f"{solo.rss_mib_per_actor_loaded:,.1f} MiB"]
            + [f"{s.hosting.rss_bytes_per_open_account / 1024:,.2f} KiB" for s in sizes],
        ),
        _row(
            "start-up per account",
            [f"{solo.creation_s_per_actor * 1000:,.0f} ms"]
            + [f"{s.hosting.host_s / s.accounts * 1e6:,.1f} us" for s in sizes],
        ),
        _row(
            "account evaluations/s",
            [f"{solo.evaluations_per_s:,.0f}"]
            + [f"{s.burst.evaluations_per_s:,.0f}" for s in sizes],
        ),
        _row(
            "ticks/s processed",
            [f"{solo.events_per_s:,.0f}"] + [f"{s.burst.ticks_per_s:,.0f}" for s in sizes],
        ),
        f"  actors: {solo.actors} created in {solo.creation_s:.1f} s; median RSS "
        f"{solo.rss_mib_per_actor:.1f} MiB each, {solo.rss_mib_total:,.0f} MiB in all; "
        f"{solo.ticks} ticks = {solo.calls:,} calls in {solo.burst_s:.2f} s; setup "
        f"{solo.setup_calls:,} calls in {solo.setup_s:.2f} s; breaches expected "
        f"{solo.expected_breaches}, missed {len(solo.missed)}, false {len(solo.false)}",
    ]


def _parser() -> argparse.ArgumentParser:
    defaults = Options()
    parser = argparse.ArgumentParser(
        prog="python -m loadtests scale",
        description="Account shards on Ray at scale under a news burst, and one actor per account.",
    )
    parser.add_argument("--accounts", type=int, nargs="+", default=list(defaults.sizes))
    parser.add_argument(
        "--actor-per-account",
        type=int,
        default=defaults.actor_per_account,
        help="accounts for the one-actor-per-account run (0 skips it)",
    )
    parser.add_argument(
        "--actor-ticks",
        type=int,
        default=defaults.actor_ticks,
        help="burst ticks for the one-actor-per-account run",
    )
    parser.add_argument("--burst-seconds", type=float, default=defaults.burst_seconds)
    parser.add_argument("--ticks-per-second", type=float, default=defaults.ticks_per_second)
    parser.add_argument("--shards", type=int, default=defaults.shards, help="0: one per CPU")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--settle-timeout", type=float, default=defaults.settle_timeout_s)
    parser.add_argument(
        "--database-url",
        default=None,
        help="default: a new database on 127.0.0.1:5432, dropped afterwards",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    return parser


def main(argv: Sequence[str]) -> int:
    """Run the benchmark (starting a local Ray unless one is up); 1 if any breach was wrong."""
    args = _parser().parse_args(argv)
    options = Options(
        sizes=tuple(args.accounts),
        actor_per_account=args.actor_per_account,
        actor_ticks=args.actor_ticks,
        burst_seconds=args.burst_seconds,
        ticks_per_second=args.ticks_per_second,
        shards=args.shards,
        seed=args.seed,
        settle_timeout_s=args.settle_timeout,
        database_url=args.database_url,
    )
    with local_ray():
        report = asyncio.run(run(options))
    say(render(report))
    if args.json is not None:
        write_report(args.json, report)
    return 0 if report.exact else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
