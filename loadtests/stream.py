"""Risk stream under load: websocket clients of `GET /api/v1/stream` while the shards publish
equity updates, with some clients deliberately slow.

`python -m loadtests stream_fanout [--clients 100] [--slow 10] [--lag-clients 10] [--accounts 300]
[--shards 2] [--tick-interval-ms 20] [--seconds 30] [--warmup 3] [--sleepy-read-s 1]
[--clients-nice 0] [--max-stall-s 10] [--max-behind-s 10] [--ring-size 100000] [--no-probes]
[--admin-url URL] [--json PATH]`

Everything is real: a local Ray, `--shards` `AccountShard` actors publishing to a named `RiskHub`
actor, a scratch PostgreSQL database (created on `--admin-url`'s server, migrated, dropped
afterwards) holding the traders and accounts the hub resolves, and the admin app
(`api.app.create_app` with the hub) served in this process on uvloop. The shards' bridge is a
stand-in actor that only counts the commands it is sent (nothing is meant to breach).

The load: `--accounts` accounts on a plan with daily and max loss limits, each holding one or two
positions on six symbols, spread over the shards. A feeder actor sends every shard, every
`--tick-interval-ms`, one tick per symbol (a bounded random walk that moves every price), as the
bridge would, with `apply_batch`, waiting for the shards before the next batch. Every account's
equity moves with each batch, so each shard publishes every account at each of its publications
(`ShardConfig.publish_interval_s`). The rate reported is the one the hub measured (its `rows`
counter over the timed window), never the offered one.

The clients run in a separate process (spawned; `--clients-nice` lowers its priority), all
subscribing to everything: `--clients - --slow` follow the stream as fast as they can, and
`--lag-clients` of them decode every frame and record each account message's lag (the others
receive the same frames and count their account messages without decoding them, which keeps the
client process's share of the CPU down); of the `--slow` ones, half are raw sockets that send the
websocket handshake and a subscribe, then never read again (stalled), the other half read a
frame, then sleep `--sleepy-read-s` (sleepy). Before the clients connect, the load runs until
this process's stream ring (`--ring-size` messages) is full, so the memory it holds is in the
baseline. Then `--warmup` seconds, then the timed window of `--seconds`.

Measured over the window: account messages per second the hub emitted; each recorded message's
lag (the client's wall clock on receipt minus `applied_ns`, when the shard applied the batch behind
the row) in an HDR histogram, p50/p99/max, and apart the sleepy clients'; how many slow clients
the server dropped (close code 4008) and when; this process's resident memory (sampled every
0.25 s, with Python's allocated blocks: before the load, with the ring full, at the window's
start, its peak, its end, and after `malloc_trim` returned glibc's free heap) and the most
messages a client had pending; CPU used by each process (server, clients, hub, shards, feeder),
the rest of the machine, and its load average.

Where the lag accrues (unless `--no-probes`): the hub and the shards are subclasses of the real
actors that time each publication (`ProbedShard`: applied -> sent; `ProbedHub`: applied -> taken
up, -> emitted), and this run's server has its `Mirror.apply` and its hub handle wrapped on the
instance (`ReadProbe`: applied -> read; `TimedReads`: each read's round trip and the reader's wait
for the event loop). The server's code is not changed.

The goal (100 clients, 10,000 updates per second, p99 under 100 ms) is reported, never
asserted; the exit status is 1 only if a fast client was disconnected or received no update in
the window.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ctypes
import gc
import itertools
import multiprocessing
import os
import random
import socket
import statistics
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import numpy as np
import psutil
import ray
from aiohttp import WSMsgType, web
from hdrh.histogram import HdrHistogram
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from actors.hub import AccountUpdate, HubConfig, RemoteRiskHub, RiskHub, StreamMessage
from actors.plans import Plan
from actors.shard_actor import AccountShard, RemoteAccountShard, ShardConfig
from api.app import create_app
from api.auth import Role, create_token
from api.demo import Latency, serve_http
from api.stream import STREAM, Entry, Mirror, StreamConfig, StreamServer
from bridge.codec import decode_command_batch, encode_batch
from bridge.events import DealEntry, DealExecuted, PriceTicked, Side
from ledger.database import create_engine
from ledger.schema import accounts, traders
from loadtests.common import DEFAULT_ADMIN_URL, positive, scratch_database, write_report
from loadtests.scale import Machine, machine, pids_of

GOAL_MS = 100.0
GOAL_UPDATES_PER_S = 10_000.0
GOAL_CLIENTS = 100
ACCOUNTS_PER_TRADER = 5
SAMPLE_S = 0.25
FILL_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 30.0
DRAIN_S = 3.0  # a stalled client reads what is left for this long at the end
_HOUR_US = 3_600_000_000
_S = 1_000_000_000
MARKET_START = 1_772_445_600 * _S  # Monday 2026-03-02 10:00 UTC: inside a trading day

PLAN: dict[str, Any] = {
    "id": "bench-stream",
    "name": "Stream benchmark",
    "currency": "USD",
    "initial_balance": 100_000,
    "phases": [
        {
            "name": "challenge",
            "daily_loss": {"pct": 5},
            "max_loss": {"pct": 10},
            "profit_target": {"pct": 10},
        }
    ],
}


@dataclass(frozen=True)
class Quoted:
    """A symbol's walk: its start mid, price digits, and the most lots a position holds."""

    symbol: str
    mid: float
    digits: int
    max_lots: float

    @property
    def point(self) -> float:
        return 10.0**-self.digits


# Each moves every tick by 1-5 points and stays within 300 points of its start, so no position
# of at most `max_lots` loses more than a few hundred dollars: nothing breaches, no alert fires.
SYMBOLS: tuple[Quoted, ...] = (
    Quoted("EURUSD", 1.08500, 5, 1.0),
    Quoted("GBPUSD", 1.26500, 5, 1.0),
    Quoted("USDJPY", 150.250, 3, 1.0),
    Quoted("AUDUSD", 0.65500, 5, 1.0),
    Quoted("EURGBP", 0.85800, 5, 1.0),  # valued through GBPUSD
    Quoted("XAUUSD", 2650.00, 2, 0.3),
)
SPREAD_POINTS = 10
MAX_DRIFT_POINTS = 300


class Options(msgspec.Struct, frozen=True, kw_only=True):
    """What a run sets up and measures (reported as is)."""

    clients: int = 100
    slow: int = 10
    lag_clients: int = 10  # fast clients that decode every frame (the others count messages)
    accounts: int = 300
    shards: int = 2
    tick_interval_ms: float = 20.0
    seconds: float = 30.0
    warmup_s: float = 3.0
    sleepy_read_s: float = 1.0
    clients_nice: int = 0  # added to the client process's niceness (Ray's actors run at 15)
    max_stall_s: float = StreamConfig().max_stall_s
    max_behind_s: float = StreamConfig().max_behind_s
    ring_size: int = StreamConfig().ring_size
    publish_interval_s: float = ShardConfig().publish_interval_s
    seed: int = 7
    probes: bool = True  # the hub and shards time each publication (`ProbedHub`, `ProbedShard`)

    @property
    def stalled(self) -> int:
        return self.slow - self.slow // 2

    @property
    def sleepy(self) -> int:
        return self.slow // 2

    @property
    def fast(self) -> int:
        return self.clients - self.slow


# The scenario's data ----------------------------------------------------------------------------


def plan() -> Plan:
    return msgspec.convert(PLAN, type=Plan)


def account_id(index: int) -> str:
    return f"str-{index:05d}"


def trader_id(index: int) -> str:
    return f"trd-str-{index // ACCOUNTS_PER_TRADER:05d}"


def quote(symbol: Quoted, mid: float) -> tuple[float, float]:
    half = SPREAD_POINTS * symbol.point / 2
    return round(mid - half, symbol.digits), round(mid + half, symbol.digits)


def opening_deals(index: int, rng: random.Random, ts_ns: int) -> list[DealExecuted]:
    """One or two positions on distinct symbols at the opening quotes."""
    account = account_id(index)
    count = 2 if rng.random() < 0.6 else 1
    deals: list[DealExecuted] = []
    for deal_id, symbol in enumerate(rng.sample(SYMBOLS, count), start=1):
        buy = rng.random() < 0.5
        bid, ask = quote(symbol, symbol.mid)
        deals.append(
            DealExecuted(
                event_id=f"{account}:d{deal_id}",
                ts_ns=ts_ns + deal_id,
                account_id=account,
                deal_id=deal_id,
                position_id=deal_id,
                symbol=symbol.symbol,
                entry=DealEntry.IN,
                side=Side.BUY if buy else Side.SELL,
                volume=round(rng.uniform(0.1, symbol.max_lots), 2),
                price=ask if buy else bid,
            )
        )
    return deals


def setup_batches(options: Options) -> list[tuple[list[str], bytes]]:
    """Per shard: its accounts, and one batch of the opening ticks and their deals."""
    rng = random.Random(options.seed)
    opening = [
        PriceTicked(event_id=f"open-{s.symbol}", ts_ns=MARKET_START, symbol=s.symbol, bid=b, ask=a)
        for s in SYMBOLS
        for b, a in [quote(s, s.mid)]
    ]
    per_shard: list[tuple[list[str], list[PriceTicked | DealExecuted]]] = [
        ([], list(opening)) for _ in range(options.shards)
    ]
    for index in range(options.accounts):
        ids, events = per_shard[index % options.shards]
        ids.append(account_id(index))
        events.extend(opening_deals(index, rng, MARKET_START + index * 10))
    return [(ids, encode_batch(events)) for ids, events in per_shard]


class Walker:
    """Every symbol's price, moved by 1-5 points at each step, back towards its start once it
    is `MAX_DRIFT_POINTS` away."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.mids = [s.mid for s in SYMBOLS]
        self.count = 0

    def step(self, ts_ns: int) -> list[PriceTicked]:
        ticks: list[PriceTicked] = []
        for k, symbol in enumerate(SYMBOLS):
            drift = (self.mids[k] - symbol.mid) / symbol.point
            sign = -1 if drift > MAX_DRIFT_POINTS else 1 if drift < -MAX_DRIFT_POINTS else 0
            sign = sign or self.rng.choice((-1, 1))
            self.mids[k] += sign * self.rng.randint(1, 5) * symbol.point
            bid, ask = quote(symbol, self.mids[k])
            self.count += 1
            ticks.append(
                PriceTicked(
                    event_id=f"t{self.count}", ts_ns=ts_ns, symbol=symbol.symbol, bid=bid, ask=ask
                )
            )
        return ticks


# Actors: the platform edge and the tick feeder --------------------------------------------------


class PlatformEdge:
    """The shards' bridge, reduced to what they call: it counts the commands it is sent."""

    def __init__(self) -> None:
        self.commands = 0

    async def submit(self, payload: bytes) -> None:
        self.commands += len(decode_command_batch(payload))

    async def redeliver(self, shard: int) -> None:
        return None

    async def count(self) -> int:
        return self.commands


class FeedStats(msgspec.Struct, kw_only=True):
    batches: int
    ticks: int
    seconds: float
    late: int  # batches that started more than one interval behind their schedule


class TickFeeder:
    """Sends every shard, every `interval_s`, one tick per symbol, and waits for the shards."""

    def __init__(self, shards: list[Any], interval_s: float, seed: int) -> None:
        self.shards = shards
        self.interval_s = interval_s
        self.walker = Walker(seed)
        self.stopping = False

    async def run(self) -> FeedStats:
        loop = asyncio.get_running_loop()
        started = next_at = loop.time()
        wall_start = time.time_ns()
        batches = late = 0
        while not self.stopping:
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif -delay > self.interval_s:
                late += 1
                next_at = loop.time()
            ticks = self.walker.step(MARKET_START + 60 * _S + time.time_ns() - wall_start)
            payload = encode_batch(ticks)
            await asyncio.gather(*(shard.apply_batch.remote(payload) for shard in self.shards))
            batches += 1
            next_at += self.interval_s
        seconds = loop.time() - started
        return FeedStats(
            batches=batches, ticks=self.walker.count, seconds=round(seconds, 3), late=late
        )

    async def stop(self) -> None:
        self.stopping = True


# Stage probes: the real actors, subclassed to time each publication over the window ---------


class Stage:
    """A lag histogram (µs, each value counted once per row it stands for) over a window."""

    def __init__(self) -> None:
        self.histogram = HdrHistogram(1, _HOUR_US, 3)
        self.start_ns = self.end_ns = 0

    def record(self, now_ns: int, applied_ns: int, rows: int) -> None:
        if rows and self.start_ns <= now_ns <= self.end_ns:
            lag_us = min(max(1, (now_ns - applied_ns) // 1_000), _HOUR_US)
            self.histogram.record_value(lag_us, rows)


class ShardProbe(msgspec.Struct, kw_only=True):
    sent: bytes  # encoded histogram: applied -> the shard sent the publication
    publications: int  # sent in the window
    held: int  # times the shard had rows to send but `publish_in_flight` were unanswered


class ProbedShard(AccountShard):
    """`AccountShard` as it is, timing when each publication leaves (applied -> sent)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.probe_stage = Stage()
        self.probe_publications = self.probe_held = 0

    async def publish(self) -> int:
        feed = self.core.feed
        applied_ns = feed.applied_ns if feed is not None else 0
        await self._reap_published()
        full = len(self.publishing) >= self.config.publish_in_flight
        rows = await super().publish()
        now = time.time_ns()
        if self.probe_stage.start_ns <= now <= self.probe_stage.end_ns:
            self.probe_held += full and applied_ns > 0
            self.probe_publications += rows > 0
        self.probe_stage.record(now, applied_ns or now, rows)
        return rows

    async def probe_window(self, start_ns: int, end_ns: int) -> None:
        self.probe_stage.start_ns, self.probe_stage.end_ns = start_ns, end_ns

    async def probe(self) -> ShardProbe:
        return ShardProbe(
            sent=self.probe_stage.histogram.encode(),
            publications=self.probe_publications,
            held=self.probe_held,
        )


class _Stamp(msgspec.Struct):
    """Of a `Published` payload, what the hub probe looks at (rows left encoded)."""

    rows: list[msgspec.Raw]
    applied_ns: int


_decode_stamp = msgspec.msgpack.Decoder(_Stamp)


class HubProbe(msgspec.Struct, kw_only=True):
    arrived: bytes  # encoded histograms: applied -> the hub took the publication up
    emitted: bytes  # applied -> the hub had numbered its messages (readers can have them)


class ProbedHub(RiskHub):
    """`RiskHub` as it is, timing each publication's arrival and its messages' emission."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.probe_arrived, self.probe_emitted = Stage(), Stage()

    async def publish(self, payload: bytes) -> str:
        arrived = time.time_ns()
        stamp = _decode_stamp.decode(payload)
        epoch = await super().publish(payload)
        self.probe_arrived.record(arrived, stamp.applied_ns, len(stamp.rows))
        self.probe_emitted.record(time.time_ns(), stamp.applied_ns, len(stamp.rows))
        return epoch

    async def probe_window(self, start_ns: int, end_ns: int) -> None:
        for stage in (self.probe_arrived, self.probe_emitted):
            stage.start_ns, stage.end_ns = start_ns, end_ns

    async def probe(self) -> HubProbe:
        return HubProbe(
            arrived=self.probe_arrived.histogram.encode(),
            emitted=self.probe_emitted.histogram.encode(),
        )


RemotePlatformEdge: Any = ray.remote(PlatformEdge)
RemoteTickFeeder: Any = ray.remote(TickFeeder)
RemoteProbedShard: Any = ray.remote(ProbedShard)
RemoteProbedHub: Any = ray.remote(ProbedHub)


# The client process -----------------------------------------------------------------------------


class ClientSpec(msgspec.Struct, kw_only=True):
    host: str
    port: int
    token: str
    fast: int
    lag_clients: int  # of the fast ones, those that decode every frame and record lags
    stalled: int
    sleepy: int
    sleepy_read_s: float
    warmup_s: float
    seconds: float
    nice: int  # added to the client process's niceness


class Ready(msgspec.Struct, kw_only=True):
    connected_ns: int
    start_ns: int
    end_ns: int


class Tally(msgspec.Struct, kw_only=True):
    """One client's count: frames and account messages received in the window, the snapshot's
    messages, and how its connection ended (None: still open at the end)."""

    kind: str  # fast, sleepy, stalled
    measured: bool = False  # decoded every frame and recorded the lag of each account message
    frames: int = 0
    account_messages: int = 0
    snapshot_messages: int = 0
    ended: str | None = None


class ClientsResult(msgspec.Struct, kw_only=True):
    tallies: list[Tally]
    fast_lag: bytes  # HdrHistogram.encode(), microseconds
    sleepy_lag: bytes
    gc: list[GcPauses]
    loop: LoopDelay


class _Message(msgspec.Struct):
    type: str
    applied_ns: int = 0


class _Frame(msgspec.Struct):
    type: str
    messages: list[_Message] = msgspec.field(default_factory=list)


_decode_frame = msgspec.json.Decoder(_Frame)
_SNAPSHOT = '{"type":"snapshot"'  # how the server starts a snapshot frame
_APPLIED = '"applied_ns":'  # once in each account message, in no other kind


@dataclass
class _Window:
    start_ns: float = float("inf")
    end_ns: float = float("inf")


@dataclass
class _Lags:
    """Lags in microseconds, kept compactly until the run ends (folding them during the run
    would pause the clients it measures)."""

    chunks: list[np.ndarray[Any, np.dtype[np.int64]]] = field(default_factory=list)

    def add(self, received_ns: int, applied: list[int]) -> None:
        if applied:
            values = (received_ns - np.array(applied, dtype=np.int64)) // 1_000
            self.chunks.append(values)

    def histogram(self) -> HdrHistogram:
        found = HdrHistogram(1, _HOUR_US, 3)
        if self.chunks:
            values = np.clip(np.concatenate(self.chunks), 1, _HOUR_US)
            for value, count in zip(*np.unique(values, return_counts=True), strict=True):
                found.record_value(int(value), int(count))
        return found


class GcPauses(msgspec.Struct, kw_only=True):
    """The garbage collector's pauses of one generation in one process over the window."""

    generation: int
    collections: int
    max_ms: float
    total_ms: float


class LoopDelay(msgspec.Struct, kw_only=True):
    """How late a 10 ms timer fired on one process's event loop over the window: a late timer is
    a loop that ran something else (or a process the OS did not run), and every message waits."""

    p99_ms: float
    max_ms: float
    over_50_ms: int  # timers more than 50 ms late


class LoopWatch:
    """Times a 10 ms sleep on this process's loop, again and again, over the window."""

    def __init__(self) -> None:
        self.start_ns = self.end_ns = 0
        self.late = HdrHistogram(1, _HOUR_US, 3)
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            before = time.perf_counter_ns()
            await asyncio.sleep(0.01)
            late_us = (time.perf_counter_ns() - before) // 1_000 - 10_000
            if self.start_ns <= time.time_ns() <= self.end_ns:
                self.late.record_value(min(max(1, late_us), _HOUR_US))

    async def close(self) -> LoopDelay:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        over = sum(
            item.count_at_value_iterated_to
            for item in self.late.get_recorded_iterator()
            if item.value_iterated_to > 50_000
        )
        return LoopDelay(
            p99_ms=self.late.get_value_at_percentile(99) / 1_000,
            max_ms=self.late.get_max_value() / 1_000,
            over_50_ms=over,
        )


class GcWatch:
    """Times this process's garbage collections (a `gc.callbacks` hook) that end in the window:
    a full collection stops every task in the process, so it shows as lag."""

    def __init__(self) -> None:
        self.start_ns = self.end_ns = 0
        self.began = 0
        self.pauses: list[list[float]] = [[], [], []]
        gc.callbacks.append(self._called)

    def _called(self, phase: str, info: dict[str, int]) -> None:
        now = time.perf_counter_ns()
        if phase == "start":
            self.began = now
        elif self.start_ns <= time.time_ns() <= self.end_ns:
            self.pauses[info["generation"]].append((now - self.began) / 1e6)

    def close(self) -> list[GcPauses]:
        gc.callbacks.remove(self._called)
        return [
            GcPauses(
                generation=g,
                collections=len(p),
                max_ms=round(max(p, default=0.0), 1),
                total_ms=round(sum(p), 1),
            )
            for g, p in enumerate(self.pauses)
        ]


def clients_process(conn: Connection) -> None:
    """The spawned process's entry: take a `ClientSpec`, answer `Ready`, then the results."""
    import uvloop

    spec = msgspec.msgpack.decode(conn.recv_bytes(), type=ClientSpec)
    os.nice(spec.nice)
    result = uvloop.run(_run_clients(spec, conn))
    conn.send_bytes(msgspec.msgpack.encode(result))
    conn.close()


async def _run_clients(spec: ClientSpec, conn: Connection) -> ClientsResult:
    window = _Window()
    collector = GcWatch()
    looping = LoopWatch()
    lags = {"fast": _Lags(), "sleepy": _Lags()}
    stop = asyncio.Event()
    tallies: list[Tally] = []
    connected: list[asyncio.Future[None]] = []
    tasks: list[asyncio.Task[None]] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        for kind, count in (("fast", spec.fast), ("sleepy", spec.sleepy)):
            for n in range(count):
                tally, ready = Tally(kind=kind), asyncio.get_running_loop().create_future()
                pause = spec.sleepy_read_s if kind == "sleepy" else 0.0
                sink = lags[kind] if kind == "sleepy" or n < spec.lag_clients else None
                tally.measured = sink is not None
                client = _follow(session, spec, tally, sink, window, ready, pause)
                tallies.append(tally)
                connected.append(ready)
                tasks.append(asyncio.create_task(client))
        for _ in range(spec.stalled):
            tally, ready = Tally(kind="stalled"), asyncio.get_running_loop().create_future()
            tallies.append(tally)
            connected.append(ready)
            tasks.append(asyncio.create_task(_stall(spec, tally, ready, stop)))
        await asyncio.wait_for(asyncio.gather(*connected), timeout=CONNECT_TIMEOUT_S)
        gc.freeze()  # as the server does once started: sessions and sockets leave the collector
        now = time.time_ns()
        window.start_ns = now + round(spec.warmup_s * _S)
        window.end_ns = window.start_ns + round(spec.seconds * _S)
        collector.start_ns, collector.end_ns = int(window.start_ns), int(window.end_ns)
        looping.start_ns, looping.end_ns = collector.start_ns, collector.end_ns
        ready_message = Ready(
            connected_ns=now, start_ns=int(window.start_ns), end_ns=int(window.end_ns)
        )
        conn.send_bytes(msgspec.msgpack.encode(ready_message))
        await asyncio.sleep((window.end_ns - time.time_ns()) / _S)
        # Connected until the server process has counted the window's end.
        await asyncio.get_running_loop().run_in_executor(None, conn.recv_bytes)
        stop.set()
        for task, tally in zip(tasks, tallies, strict=True):
            if tally.kind != "stalled":
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return ClientsResult(
        tallies=tallies,
        fast_lag=lags["fast"].histogram().encode(),
        sleepy_lag=lags["sleepy"].histogram().encode(),
        gc=collector.close(),
        loop=await looping.close(),
    )


async def _follow(
    session: aiohttp.ClientSession,
    spec: ClientSpec,
    tally: Tally,
    lags: _Lags | None,
    window: _Window,
    ready: asyncio.Future[None],
    pause_s: float,
) -> None:
    """A websocket client that subscribes to everything (token in the subscribe message) and
    reads every frame, sleeping `pause_s` after each. With `lags`, it decodes each frame and
    records each account message's lag; without, it counts them."""
    url = f"http://{spec.host}:{spec.port}/api/v1/stream"
    async with session.ws_connect(url, max_msg_size=0) as ws:
        await ws.send_str(msgspec.json.encode({"type": "subscribe", "token": spec.token}).decode())
        while True:
            message = await ws.receive()
            received = time.time_ns()
            if message.type != WSMsgType.TEXT:
                tally.ended = f"{ws.close_code} {message.extra or message.type.name}"
                if not ready.done():
                    ready.set_exception(RuntimeError(f"refused: {tally.ended}"))
                return
            if message.data.startswith(_SNAPSHOT):
                tally.snapshot_messages += len(_decode_frame.decode(message.data).messages)
                if not ready.done():
                    ready.set_result(None)
            elif window.start_ns <= received <= window.end_ns:
                tally.frames += 1
                if lags is None:  # the same frames, counted without decoding them
                    tally.account_messages += message.data.count(_APPLIED)
                else:
                    frame = _decode_frame.decode(message.data)
                    applied = [m.applied_ns for m in frame.messages if m.type == "account"]
                    lags.add(received, applied)
                    tally.account_messages += len(applied)
            if pause_s:
                await asyncio.sleep(pause_s)


async def _stall(
    spec: ClientSpec, tally: Tally, ready: asyncio.Future[None], stop: asyncio.Event
) -> None:
    """A raw socket (bearer header) that subscribes, then reads nothing until `stop`; then
    whatever is left, to see how the server ended the connection."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: no autotuning
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (spec.host, spec.port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /api/v1/stream HTTP/1.1\r\nHost: {spec.host}:{spec.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {spec.token}\r\n\r\n"
        ).encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        ready.set_exception(RuntimeError(f"handshake refused: {head[:80]!r}"))
        return
    writer.write(masked_text_frame(b'{"type":"subscribe"}'))
    await writer.drain()
    ready.set_result(None)
    await stop.wait()
    tally.ended = await _ending(reader)
    writer.close()


async def _ending(reader: asyncio.StreamReader) -> str | None:
    """Read for up to `DRAIN_S`: the server's close frame, or the connection cut without one;
    None if it is still open (data still coming)."""
    data = bytearray()
    deadline = asyncio.get_running_loop().time() + DRAIN_S
    try:
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return close_of(bytes(data))
            chunk = await asyncio.wait_for(reader.read(1 << 16), timeout=left)
            if not chunk:
                return close_of(bytes(data)) or "cut by the server without a close frame"
            data += chunk
    except TimeoutError:
        return close_of(bytes(data))
    except ConnectionError:
        return close_of(bytes(data)) or "reset by the server"


def masked_text_frame(payload: bytes) -> bytes:
    """One client-to-server websocket text frame (clients must mask), payload under 126 bytes."""
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + body


def close_of(data: bytes) -> str | None:
    """The close frame's code and reason among server-to-client frames, if there is one."""
    i = 0
    while i + 2 <= len(data):
        opcode, length = data[i] & 0x0F, data[i + 1] & 0x7F
        i += 2
        if length >= 126:
            size = 2 if length == 126 else 8
            length = int.from_bytes(data[i : i + size], "big")
            i += size
        payload = data[i : i + length]
        i += length
        if opcode == 0x8 and len(payload) >= 2:
            code = int.from_bytes(payload[:2], "big")
            return f"{code} {payload[2:].decode(errors='replace')}"
    return None


# The system under test --------------------------------------------------------------------------


@dataclass
class System:
    """The actors of one run and the app serving the stream."""

    hub: Any
    shards: list[Any]
    edge: Any
    feeder: Any
    server: StreamServer
    runner: web.AppRunner
    host: str
    port: int
    reads: TimedReads


class _Idle:
    """The running system as the app sees it: the stream benchmark asks it nothing."""

    async def account(self, account_id: str) -> None:
        return None

    async def stats(self) -> None:
        raise AssertionError("the stream benchmark runs no supervisor")

    async def health(self) -> None:
        raise AssertionError("the stream benchmark runs no supervisor")


async def seed_registry(engine: AsyncEngine, options: Options) -> None:
    """The traders and accounts, so the hub names each account's trader."""
    now = time.time_ns()
    trader_ids = sorted({trader_id(i) for i in range(options.accounts)})
    async with engine.begin() as conn:
        await conn.execute(traders.insert(), [_trader_row(t, now) for t in trader_ids])
        await conn.execute(
            accounts.insert(), [_account_row(i, now) for i in range(options.accounts)]
        )


def _trader_row(trader: str, now: int) -> dict[str, Any]:
    return {
        "id": trader,
        "email": f"{trader}@example.com",
        "name": trader,
        "country": "DE",
        "language": "de",
        "timezone": "Europe/Berlin",
        "source": "bench",
        "created_ns": now,
    }


def _account_row(index: int, now: int) -> dict[str, Any]:
    account = account_id(index)
    return {
        "id": account,
        "trader_id": trader_id(index),
        "purchase_id": f"pur-{account}",
        "plan_id": PLAN["id"],
        "plan_version": 1,
        "phase": "challenge",
        "status": "active",
        "connection": "bench",
        "platform_login": account,
        "attempts": 1,
        "created_ns": now,
        "updated_ns": now,
    }


async def start_actors(url: str, options: Options) -> tuple[Any, list[Any], Any, Any]:
    """The hub, the platform edge, the shards with their accounts' positions open, the feeder
    (not yet running); names unique to this run."""
    prefix = f"stream-{os.getpid()}-{time.time_ns() % 10**9}"
    hub_name, edge_name = f"{prefix}/hub", f"{prefix}/bridge"
    hub_class, shard_class = (
        (RemoteProbedHub, RemoteProbedShard)
        if options.probes
        else (RemoteRiskHub, RemoteAccountShard)
    )
    hub = hub_class.options(name=hub_name, num_cpus=0).remote(url, HubConfig())
    await hub.ready.remote()
    edge = RemotePlatformEdge.options(name=edge_name, num_cpus=0).remote()
    config = ShardConfig(publish_interval_s=options.publish_interval_s)
    the_plan = plan()
    shards = [
        shard_class.options(name=f"{prefix}/shard-{i}", num_cpus=0).remote(
            i,
            url,
            name=f"{prefix}/shard-{i}",
            plans=[the_plan],
            bridge_name=edge_name,
            config=config,
            hub_name=hub_name,
        )
        for i in range(options.shards)
    ]
    for shard, (ids, batch) in zip(shards, setup_batches(options), strict=True):
        await shard.register.remote([(a, the_plan) for a in ids])
        await shard.apply_batch.remote(batch)
    feeder = RemoteTickFeeder.options(num_cpus=0).remote(
        shards, options.tick_interval_ms / 1000, options.seed
    )
    return hub, shards, edge, feeder


async def every_account_published(hub: Any, count: int) -> None:
    """Until the hub holds a row of every account (so a snapshot shows them all)."""
    deadline = time.monotonic() + FILL_TIMEOUT_S
    while (await hub.stats.remote())["accounts"] < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the hub did not get a row of each of {count} accounts")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running(url: str, engine: AsyncEngine, options: Options) -> AsyncIterator[System]:
    """The actors and the app with the stream, torn down afterwards."""
    hub, shards, edge, feeder = await start_actors(url, options)
    stream = StreamConfig(
        ring_size=options.ring_size,
        max_stall_s=options.max_stall_s,
        max_behind_s=options.max_behind_s,
    )
    app = create_app(_Idle(), engine, hub=hub, stream=stream)  # type: ignore[arg-type]
    timed = TimedReads(hub)
    if options.probes:
        app[STREAM].hub = timed
    runner: web.AppRunner | None = None
    try:
        await every_account_published(hub, options.accounts)
        runner, _ = await serve_http(app, "127.0.0.1", 0)  # as `propvisor demo` serves it
        host, port = runner.addresses[0][:2]
        server = runner.app[STREAM]
        await asyncio.wait_for(server.synced.wait(), timeout=FILL_TIMEOUT_S)
        yield System(hub, shards, edge, feeder, server, runner, host, port, timed)
    finally:
        if runner is not None:
            await runner.cleanup()
        await asyncio.gather(*(s.close.remote() for s in shards), return_exceptions=True)
        await asyncio.gather(hub.close.remote(), return_exceptions=True)
        for actor in (feeder, edge, hub, *shards):
            ray.kill(actor)


# Measuring --------------------------------------------------------------------------------------


@dataclass
class Sample:
    at_ns: int
    rss: int
    blocks: int  # Python's allocated memory blocks (`sys.getallocatedblocks`)
    clients: int
    dropped: int
    pending_max: int


@dataclass
class Sampler:
    """This process's resident memory and the server's clients, every `SAMPLE_S`."""

    server: StreamServer
    samples: list[Sample] = field(default_factory=list)

    def take(self) -> Sample:
        clients = list(self.server.clients)
        sample = Sample(
            at_ns=time.time_ns(),
            rss=psutil.Process().memory_info().rss,
            blocks=sys.getallocatedblocks(),
            clients=len(clients),
            dropped=self.server.dropped_slow,
            pending_max=max((len(c.pending) for c in clients), default=0),
        )
        self.samples.append(sample)
        return sample

    async def run_forever(self) -> None:
        while True:
            self.take()
            await asyncio.sleep(SAMPLE_S)

    def between(self, start_ns: int, end_ns: int) -> list[Sample]:
        return [s for s in self.samples if start_ns <= s.at_ns <= end_ns]


@dataclass
class Mark:
    """Counters at one instant: the hub's, the server's, and CPU seconds per process."""

    at_ns: int
    rows: int
    messages: int
    read: int  # the server's mirror: the last sequence number it read from the hub
    kept: int  # messages the hub holds for readers
    counters: dict[Any, tuple[int, int]]  # per server-side client: messages sent, conflated
    cpu_s: dict[str, float]
    machine_busy_s: float
    machine_total_s: float
    load_average: float


async def mark(system: System, processes: dict[str, list[psutil.Process]]) -> Mark:
    stats = await system.hub.stats.remote()
    cpu = psutil.cpu_times()
    return Mark(
        at_ns=time.time_ns(),
        rows=stats["rows"],
        messages=stats["seq"],
        read=system.server.mirror.seq,
        kept=stats["kept"],
        counters={c: (c.sent, c.conflated) for c in system.server.clients},
        cpu_s={name: _cpu_seconds(group) for name, group in processes.items()},
        machine_busy_s=sum(cpu) - cpu.idle - getattr(cpu, "iowait", 0.0),
        machine_total_s=sum(cpu),
        load_average=round(os.getloadavg()[0], 2),
    )


def _cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        times = process.cpu_times()
        total += times.user + times.system
    return total


class TimedReads:
    """The server's hub handle, with its `read` calls timed over the window: issued, the answer
    in this process (Ray's completion callback), the reader coroutine running again. The gap
    between the last two is the reader's wait for the event loop. Everything else passes
    through to the handle."""

    def __init__(self, hub: Any) -> None:
        self.hub = hub
        self.start_ns = self.end_ns = 0
        self.round_trip = HdrHistogram(1, _HOUR_US, 3)
        self.loop_wait = HdrHistogram(1, _HOUR_US, 3)
        self.messages = HdrHistogram(1, 10_000_000, 3)
        self.reads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.hub, name)

    @property
    def read(self) -> TimedReads:
        return self

    def remote(self, epoch: str | None, after: int, wait_s: float) -> Any:
        issued = time.time_ns()
        return self._timed(self.hub.read.remote(epoch, after, wait_s), after, issued)

    async def _timed(self, ref: Any, after: int, issued: int) -> Any:
        arrived: list[int] = []
        future = ref.future()
        future.add_done_callback(lambda _: arrived.append(time.time_ns()))
        answer = await asyncio.wrap_future(future)
        resumed = time.time_ns()
        if self.start_ns <= resumed <= self.end_ns and arrived and answer.seq > after:
            self.reads += 1
            self.round_trip.record_value(max(1, (arrived[0] - issued) // 1_000))
            self.loop_wait.record_value(max(1, (resumed - arrived[0]) // 1_000))
            self.messages.record_value(min(answer.seq - after, 10_000_000))
        return answer


class ReadProbe:
    """When the server read each account message from the hub, as a lag from `applied_ns`, over
    the window: this run's `Mirror.apply` is wrapped on the instance (the server's code is not
    changed), and records into a fixed-size histogram, so the server's memory is not moved."""

    def __init__(self, mirror: Mirror) -> None:
        self.histogram = HdrHistogram(1, _HOUR_US, 3)
        self.start_ns = self.end_ns = 0
        original = mirror.apply

        def apply(message: StreamMessage) -> Entry:
            if isinstance(message, AccountUpdate):
                now = time.time_ns()
                if self.start_ns <= now <= self.end_ns:
                    lag_us = (now - message.applied_ns) // 1_000
                    self.histogram.record_value(min(max(1, lag_us), _HOUR_US))
            return original(message)

        mirror.apply = apply  # type: ignore[method-assign]


async def ring_full(server: StreamServer) -> tuple[bool, float]:
    """Wait (at most `FILL_TIMEOUT_S`) until the server's ring holds `ring_size` messages."""
    started = time.monotonic()
    while len(server.ring) < server.config.ring_size:
        if time.monotonic() - started > FILL_TIMEOUT_S:
            return False, round(time.monotonic() - started, 1)
        await asyncio.sleep(0.1)
    return True, round(time.monotonic() - started, 1)


# Report -----------------------------------------------------------------------------------------


class Load(msgspec.Struct, kw_only=True):
    """What the shards produced over the window, as the hub counted it."""

    accounts: int
    positions: int
    shards: int
    symbols: list[str]
    tick_interval_ms: float
    publish_interval_s: float
    window_s: float
    account_messages: int
    account_messages_per_s: float  # the headline rate: equity updates the hub emitted
    hub_messages_per_s: float  # every message (exposure tables too)
    server_read_per_s: float  # messages the server process read from the hub
    ticks_per_s: float  # what the feeder sent over its whole run
    late_batches: int
    commands_sent: int  # to the platform edge: 0 unless something breached


class Stages(msgspec.Struct, kw_only=True):
    """Where an account message's lag accrues, each stage measured from its `applied_ns`
    (per row; the last stage is the fast clients' `lag_ms`): the shard sends its publication,
    the hub takes it up, the hub has numbered its messages, this server reads them."""

    shard_sent_ms: Latency
    hub_arrived_ms: Latency
    hub_emitted_ms: Latency
    server_read_ms: Latency
    client_ms: Latency
    publications: int  # sent by the shards in the window
    held: int  # times a shard with rows to send waited for `publish_in_flight` answers
    # The server's reads of the hub that brought messages: how many per second, how many
    # messages each, the call's round trip (issued -> answer in the process) and the reader's
    # wait for the event loop (answer in the process -> the reader running again), ms.
    reads_per_s: float
    messages_per_read: Latency
    read_round_trip_ms: Latency
    read_loop_wait_ms: Latency


class Fast(msgspec.Struct, kw_only=True):
    clients: int
    lag_clients: int  # those whose every account message's lag was recorded
    lag_ms: Latency
    lag_p90_ms: float
    lag_p999_ms: float
    samples: int
    # Applied -> this server read it from the hub (the shard's publication, the hub, the read):
    # the rest of `lag_ms` is the server's fan-out and writes, the network and the client.
    read_lag_ms: Latency
    read_lag_p999_ms: float
    per_client_per_s: tuple[float, float, float]  # account messages received: min, median, max
    delivered_share: float  # median client's account messages / the hub's
    disconnected: list[str]  # how each fast client that lost its connection ended
    # Over the window, summed over the clients connected throughout it (fast and sleepy): the
    # messages the server put in frames, and those a newer one of the same account replaced.
    server_sent: int
    server_conflated: int


class Slow(msgspec.Struct, kw_only=True):
    stalled: int
    stalled_endings: list[str | None]
    sleepy: int
    sleepy_read_s: float
    sleepy_endings: list[str | None]
    sleepy_lag_ms: Latency
    sleepy_messages: int
    max_stall_s: float
    max_behind_s: float
    server_dropped: int  # clients the server closed as slow (4008), over the whole run
    server_clients_at_end: int  # connected at the window's end (fast ones included)
    first_drop_s: float | None  # after the last client connected (sampled every 0.25 s)
    last_drop_s: float | None


class Memory(msgspec.Struct, kw_only=True):
    """This (the server) process's resident memory, MiB."""

    before_load: float
    ring_full: float
    ring_filled: bool
    ring_fill_s: float
    ring_size: int
    window_start: float
    window_peak: float
    window_end: float
    window_min: float
    window_end_trimmed: float | None  # right after the end, once `malloc_trim` returned free heap
    pending_max: int  # the most messages any client had waiting, over the window
    hub_start: float  # the hub actor's, at the window's start and end
    hub_end: float
    hub_kept: tuple[int, int]  # messages the hub holds (at most `HubConfig.max_messages`)


class Point(msgspec.Struct, array_like=True):
    """One sample a second: seconds since the clients connected, this process's RSS (MiB) and
    Python's allocated blocks (thousands), clients connected, slow clients dropped so far, the
    most messages a client had pending."""

    t_s: float
    rss_mib: float
    kblocks: int
    clients: int
    dropped: int
    pending_max: int


class Cpu(msgspec.Struct, kw_only=True):
    """CPU used over the window, % of one core per process; the machine's busy share of all."""

    server: float
    clients: float
    hub: float
    shards: float
    feeder: float
    others: float  # the rest of the machine's busy time: Ray's own processes, PostgreSQL, ...
    machine_busy_pct: float
    load_average: tuple[float, float]


class Collections(msgspec.Struct, kw_only=True):
    """Pauses over the window in the two processes whose pauses delay messages on their way to
    the measured clients: the garbage collector's, by generation, and the event loop's."""

    server: list[GcPauses]
    clients: list[GcPauses]
    server_loop: LoopDelay
    clients_loop: LoopDelay


class Report(msgspec.Struct, kw_only=True):
    scenario: str
    machine: Machine
    database: str
    options: Options
    load: Load
    fast: Fast
    stages: Stages | None  # None with --no-probes
    slow: Slow
    memory: Memory
    cpu: Cpu
    gc: Collections
    goal_ms: float
    goal_updates_per_s: float
    goal_clients: int
    goal_met: bool
    ok: bool  # every fast client stayed connected and received updates
    series: list[Point]


def lag_of(encoded: bytes) -> tuple[Latency, float, float, int]:
    """(p50/p99/max, p90, p99.9) in ms and the count, from an encoded histogram (µs)."""
    histogram = HdrHistogram.decode(encoded)
    count = int(histogram.get_total_count())
    if not count:
        return Latency(p50=0.0, p99=0.0, max=0.0), 0.0, 0.0, 0

    def at(pct: float) -> float:
        return round(float(histogram.get_value_at_percentile(pct)) / 1000, 2)

    latency = Latency(p50=at(50), p99=at(99), max=round(float(histogram.get_max_value()) / 1000, 2))
    return latency, at(90), at(99.9), count


def _mib(value: float) -> float:
    return round(value / 2**20, 1)


def _pct(seconds: float, window_s: float) -> float:
    return round(100 * seconds / window_s, 1) if window_s else 0.0


# The run ----------------------------------------------------------------------------------------


@dataclass
class _Clients:
    """The client process and the pipe to it."""

    process: multiprocessing.process.BaseProcess
    conn: Connection

    async def receive(self, timeout_s: float) -> bytes:
        loop = asyncio.get_running_loop()
        if not await loop.run_in_executor(None, self.conn.poll, timeout_s):
            raise RuntimeError(f"the client process sent nothing in {timeout_s:g} s")
        return await loop.run_in_executor(None, self.conn.recv_bytes)


@contextlib.contextmanager
def client_process() -> Any:
    """A spawned process (no fork of Ray's threads) that imports this module and waits."""
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    process = context.Process(target=clients_process, args=(theirs,), daemon=True)
    process.start()
    theirs.close()
    try:
        yield _Clients(process, ours)
    finally:
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
            process.join(timeout=5)
        ours.close()


async def run(options: Options, admin_url: str = DEFAULT_ADMIN_URL) -> Report:
    """Serve the stream on a loaded system in a scratch database; measure the clients. Ray must
    be initialised."""
    with client_process() as clients:
        async with scratch_database(admin_url) as url:
            engine = create_engine(url)
            try:
                return await _measure(url, engine, options, clients)
            finally:
                await engine.dispose()


async def _measure(url: str, engine: AsyncEngine, options: Options, clients: _Clients) -> Report:
    await seed_registry(engine, options)
    async with engine.begin() as conn:
        token = (await create_token(conn, "bench-risk", Role.RISK)).token
        version = (await conn.execute(text("SHOW server_version"))).scalar_one()
    before_load = psutil.Process().memory_info().rss
    async with running(url, engine, options) as system:
        sampler = Sampler(system.server)
        probe = ReadProbe(system.server.mirror)
        collector = GcWatch()
        looping = LoopWatch()
        sampling = asyncio.create_task(sampler.run_forever())
        feeding = system.feeder.run.remote()
        try:
            filled, fill_s = await ring_full(system.server)
            full = sampler.take()
            processes = await processes_of(system, clients)
            spec = ClientSpec(
                host=system.host,
                port=system.port,
                token=token,
                fast=options.fast,
                lag_clients=min(options.lag_clients, options.fast),
                stalled=options.stalled,
                sleepy=options.sleepy,
                sleepy_read_s=options.sleepy_read_s,
                warmup_s=options.warmup_s,
                seconds=options.seconds,
                nice=options.clients_nice,
            )
            clients.conn.send_bytes(msgspec.msgpack.encode(spec))
            ready = msgspec.msgpack.decode(
                await clients.receive(CONNECT_TIMEOUT_S + 60), type=Ready
            )
            probe.start_ns, probe.end_ns = ready.start_ns, ready.end_ns
            collector.start_ns, collector.end_ns = ready.start_ns, ready.end_ns
            looping.start_ns, looping.end_ns = ready.start_ns, ready.end_ns
            system.reads.start_ns, system.reads.end_ns = ready.start_ns, ready.end_ns
            if options.probes:
                await asyncio.gather(
                    *(
                        actor.probe_window.remote(ready.start_ns, ready.end_ns)
                        for actor in (system.hub, *system.shards)
                    )
                )
            marks, hub_rss = await _window(system, processes, ready)
            trimmed = trimmed_rss()
            clients.conn.send_bytes(b"close")
            result = msgspec.msgpack.decode(await clients.receive(DRAIN_S + 60), type=ClientsResult)
        finally:
            await system.feeder.stop.remote()
            sampling.cancel()
            await asyncio.gather(sampling, return_exceptions=True)
            server_gc = collector.close()
            server_loop = await looping.close()
        feed: FeedStats = await feeding
        commands = await system.edge.count.remote()
        probes = await stage_probes(system) if options.probes else None
    context = _Context(
        options=options,
        database=f"PostgreSQL {version}",
        ready=ready,
        marks=marks,
        hub_rss=hub_rss,
        result=result,
        read_lag=probe.histogram.encode(),
        server_gc=server_gc,
        server_loop=server_loop,
        reads=system.reads,
        trimmed=trimmed,
        probes=probes,
        sampler=sampler,
        before_load=before_load,
        full=full,
        filled=filled,
        fill_s=fill_s,
        feed=feed,
        commands=commands,
        positions=count_positions(options),
    )
    return report_of(context)


async def stage_probes(system: System) -> tuple[HubProbe, list[ShardProbe]]:
    hub: HubProbe = await system.hub.probe.remote()
    shards: list[ShardProbe] = await asyncio.gather(*(s.probe.remote() for s in system.shards))
    return hub, shards


def count_positions(options: Options) -> int:
    rng = random.Random(options.seed)
    return sum(len(opening_deals(i, rng, 0)) for i in range(options.accounts))


async def processes_of(system: System, clients: _Clients) -> dict[str, list[psutil.Process]]:
    """The OS processes of the run, by role."""
    hub_pid, feeder_pid, *shard_pids = await pids_of([system.hub, system.feeder, *system.shards])
    return {
        "server": [psutil.Process()],
        "clients": [psutil.Process(clients.process.pid)],
        "hub": [psutil.Process(hub_pid)],
        "shards": [psutil.Process(p) for p in shard_pids],
        "feeder": [psutil.Process(feeder_pid)],
    }


async def _window(
    system: System, processes: dict[str, list[psutil.Process]], ready: Ready
) -> tuple[tuple[Mark, Mark], tuple[float, float]]:
    """Counters and CPU at the window's start and end; the hub's RSS at both."""
    hub = processes["hub"][0]
    await asyncio.sleep(max(0.0, (ready.start_ns - time.time_ns()) / _S))
    start, hub_start = await mark(system, processes), hub.memory_info().rss
    await asyncio.sleep(max(0.0, (ready.end_ns - time.time_ns()) / _S))
    end, hub_end = await mark(system, processes), hub.memory_info().rss
    return (start, end), (_mib(hub_start), _mib(hub_end))


def trimmed_rss() -> int | None:
    """This process's RSS after glibc returns its free heap to the system (`malloc_trim`), to
    tell memory the allocator holds from memory in use; None where there is no glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    libc.malloc_trim(0)
    return int(psutil.Process().memory_info().rss)


@dataclass
class _Context:
    """Everything a report is made of."""

    options: Options
    database: str
    ready: Ready
    marks: tuple[Mark, Mark]
    hub_rss: tuple[float, float]
    result: ClientsResult
    read_lag: bytes  # the read probe's histogram, encoded
    server_gc: list[GcPauses]
    server_loop: LoopDelay
    reads: TimedReads
    trimmed: int | None
    probes: tuple[HubProbe, list[ShardProbe]] | None
    sampler: Sampler
    before_load: int
    full: Sample
    filled: bool
    fill_s: float
    feed: FeedStats
    commands: int
    positions: int


def report_of(c: _Context) -> Report:
    start, end = c.marks
    window_s = (end.at_ns - start.at_ns) / _S
    load = Load(
        accounts=c.options.accounts,
        positions=c.positions,
        shards=c.options.shards,
        symbols=[s.symbol for s in SYMBOLS],
        tick_interval_ms=c.options.tick_interval_ms,
        publish_interval_s=c.options.publish_interval_s,
        window_s=round(window_s, 2),
        account_messages=end.rows - start.rows,
        account_messages_per_s=round((end.rows - start.rows) / window_s, 1),
        hub_messages_per_s=round((end.messages - start.messages) / window_s, 1),
        server_read_per_s=round((end.read - start.read) / window_s, 1),
        ticks_per_s=round(c.feed.ticks / c.feed.seconds, 1) if c.feed.seconds else 0.0,
        late_batches=c.feed.late,
        commands_sent=c.commands,
    )
    fast = _fast(c, load)
    slow = _slow(c)
    memory = _memory(c)
    ours = {k: _pct(end.cpu_s[k] - start.cpu_s[k], window_s) for k in start.cpu_s}
    busy = _pct(end.machine_busy_s - start.machine_busy_s, window_s)  # % of one core
    cpu = Cpu(
        server=ours["server"],
        clients=ours["clients"],
        hub=ours["hub"],
        shards=ours["shards"],
        feeder=ours["feeder"],
        others=round(max(0.0, busy - sum(ours.values())), 1),
        machine_busy_pct=round(
            100
            * (end.machine_busy_s - start.machine_busy_s)
            / max(end.machine_total_s - start.machine_total_s, 1e-9),
            1,
        ),
        load_average=(start.load_average, end.load_average),
    )
    ok = not fast.disconnected and all(
        t.account_messages > 0 for t in c.result.tallies if t.kind == "fast"
    )
    met = (
        fast.lag_ms.p99 < GOAL_MS
        and load.account_messages_per_s >= GOAL_UPDATES_PER_S
        and c.options.clients >= GOAL_CLIENTS
    )
    return Report(
        scenario="stream_fanout",
        machine=machine(),
        database=c.database,
        options=c.options,
        load=load,
        fast=fast,
        stages=_stages(c, fast),
        slow=slow,
        memory=memory,
        cpu=cpu,
        gc=Collections(
            server=c.server_gc,
            clients=c.result.gc,
            server_loop=c.server_loop,
            clients_loop=c.result.loop,
        ),
        goal_ms=GOAL_MS,
        goal_updates_per_s=GOAL_UPDATES_PER_S,
        goal_clients=GOAL_CLIENTS,
        goal_met=met,
        ok=ok,
        series=series(c),
    )


def _fast(c: _Context, load: Load) -> Fast:
    start, end = c.marks
    tallies = [t for t in c.result.tallies if t.kind == "fast"]
    client_s = (c.ready.end_ns - c.ready.start_ns) / _S  # the clients' own window
    rates = sorted(t.account_messages / client_s for t in tallies) or [0.0]
    lag, p90, p999, samples = lag_of(c.result.fast_lag)
    median = statistics.median(rates)
    both = start.counters.keys() & end.counters.keys()  # the clients there all along
    sent = sum(end.counters[k][0] - start.counters[k][0] for k in both)
    conflated = sum(end.counters[k][1] - start.counters[k][1] for k in both)
    read, _, read_p999, _ = lag_of(c.read_lag)
    return Fast(
        clients=len(tallies),
        lag_clients=sum(t.measured for t in tallies),
        lag_ms=lag,
        lag_p90_ms=p90,
        lag_p999_ms=p999,
        samples=samples,
        read_lag_ms=read,
        read_lag_p999_ms=read_p999,
        per_client_per_s=(round(rates[0], 1), round(median, 1), round(rates[-1], 1)),
        delivered_share=round(median / load.account_messages_per_s, 3)
        if load.account_messages_per_s
        else 0.0,
        disconnected=[t.ended for t in tallies if t.ended is not None],
        server_sent=sent,
        server_conflated=conflated,
    )


def _stages(c: _Context, fast: Fast) -> Stages | None:
    if c.probes is None:
        return None
    hub, shards = c.probes
    merged = HdrHistogram(1, _HOUR_US, 3)
    for shard in shards:
        merged.add(HdrHistogram.decode(shard.sent))
    return Stages(
        shard_sent_ms=lag_of(merged.encode())[0],
        hub_arrived_ms=lag_of(hub.arrived)[0],
        hub_emitted_ms=lag_of(hub.emitted)[0],
        server_read_ms=fast.read_lag_ms,
        client_ms=fast.lag_ms,
        publications=sum(s.publications for s in shards),
        held=sum(s.held for s in shards),
        reads_per_s=round(c.reads.reads / ((c.ready.end_ns - c.ready.start_ns) / _S), 1),
        messages_per_read=_counts(c.reads.messages),
        read_round_trip_ms=lag_of(c.reads.round_trip.encode())[0],
        read_loop_wait_ms=lag_of(c.reads.loop_wait.encode())[0],
    )


def _counts(histogram: HdrHistogram) -> Latency:
    """p50/p99/max of a histogram of counts (not times)."""
    return Latency(
        p50=float(histogram.get_value_at_percentile(50)),
        p99=float(histogram.get_value_at_percentile(99)),
        max=float(histogram.get_max_value()),
    )


def _slow(c: _Context) -> Slow:
    stalled = [t for t in c.result.tallies if t.kind == "stalled"]
    sleepy = [t for t in c.result.tallies if t.kind == "sleepy"]
    lag, _, _, samples = lag_of(c.result.sleepy_lag)
    times = [
        (s.at_ns - c.ready.connected_ns) / _S
        for before, s in itertools.pairwise(c.sampler.samples)
        if s.dropped > before.dropped
    ]
    return Slow(
        stalled=len(stalled),
        stalled_endings=[t.ended for t in stalled],
        sleepy=len(sleepy),
        sleepy_read_s=c.options.sleepy_read_s,
        sleepy_endings=[t.ended for t in sleepy],
        sleepy_lag_ms=lag,
        sleepy_messages=samples,
        max_stall_s=c.options.max_stall_s,
        max_behind_s=c.options.max_behind_s,
        server_dropped=max((s.dropped for s in c.sampler.samples), default=0),
        server_clients_at_end=len(c.marks[1].counters),
        first_drop_s=round(times[0], 2) if times else None,
        last_drop_s=round(times[-1], 2) if times else None,
    )


def _memory(c: _Context) -> Memory:
    start, end = c.marks
    inside = c.sampler.between(start.at_ns, end.at_ns) or c.sampler.samples[-1:]
    return Memory(
        before_load=_mib(c.before_load),
        ring_full=_mib(c.full.rss),
        ring_filled=c.filled,
        ring_fill_s=c.fill_s,
        ring_size=c.options.ring_size,
        window_start=_mib(inside[0].rss),
        window_peak=_mib(max(s.rss for s in inside)),
        window_end=_mib(inside[-1].rss),
        window_min=_mib(min(s.rss for s in inside)),
        window_end_trimmed=None if c.trimmed is None else _mib(c.trimmed),
        pending_max=max(s.pending_max for s in inside),
        hub_start=c.hub_rss[0],
        hub_end=c.hub_rss[1],
        hub_kept=(start.kept, end.kept),
    )


def series(c: _Context) -> list[Point]:
    """The samples, one a second and the last, from the load's start to the end of the run."""
    points: list[Point] = []
    last = len(c.sampler.samples) - 1
    for n, sample in enumerate(c.sampler.samples):
        t_s = (sample.at_ns - c.ready.connected_ns) / _S
        if points and t_s - points[-1].t_s < 1.0 and n != last:
            continue
        points.append(
            Point(
                t_s=round(t_s, 1),
                rss_mib=_mib(sample.rss),
                kblocks=sample.blocks // 1000,
                clients=sample.clients,
                dropped=sample.dropped,
                pending_max=sample.pending_max,
            )
        )
    return points


# Output -----------------------------------------------------------------------------------------


def render(r: Report) -> str:
    m, o, load, fast, slow, mem, cpu = r.machine, r.options, r.load, r.fast, r.slow, r.memory, r.cpu
    rows = [
        (
            "machine",
            f"{m.cpu_model}, {m.cores} cores, {m.ram_gib} GiB; Python {m.python}, "
            f"Ray {m.ray}; {r.database}",
        ),
        (
            "load average (1 min)",
            f"{cpu.load_average[0]:.2f} at window start, {cpu.load_average[1]:.2f} at end",
        ),
        (
            "clients",
            f"{o.clients}: {fast.clients} fast, {slow.stalled} stalled (never read), "
            f"{slow.sleepy} sleepy (a frame every {slow.sleepy_read_s:g} s)",
        ),
        (
            "accounts / positions",
            f"{load.accounts:,} / {load.positions:,} on {load.shards} shards,"
            f" {len(load.symbols)} symbols; ticks every {load.tick_interval_ms:g} ms, publish "
            f"every {load.publish_interval_s * 1000:g} ms",
        ),
        (
            "updates/s (hub, measured)",
            f"{load.account_messages_per_s:,.0f} account messages "
            f"({load.hub_messages_per_s:,.0f} messages in all, {load.server_read_per_s:,.0f} "
            f"read by the server) over {load.window_s:g} s",
        ),
        ("ticks/s sent", f"{load.ticks_per_s:,.0f} ({load.late_batches} batches late)"),
        (
            "lag ms p50 / p99 / max",
            f"{fast.lag_ms.p50:.1f} / {fast.lag_ms.p99:.1f} / "
            f"{fast.lag_ms.max:.1f}  (p90 {fast.lag_p90_ms:.1f}, p99.9 {fast.lag_p999_ms:.1f}; "
            f"{fast.samples:,} messages to {fast.lag_clients} clients)",
        ),
        *_stage_rows(r),
        (
            "per fast client msgs/s",
            "min {:,.0f} / median {:,.0f} / max {:,.0f}".format(*fast.per_client_per_s)
            + f"  ({fast.delivered_share:.0%} of the hub's; server conflated "
            f"{fast.server_conflated:,} of {fast.server_sent + fast.server_conflated:,})",
        ),
        ("fast disconnected", f"{len(fast.disconnected)}"),
        (
            "slow dropped (4008)",
            f"{slow.server_dropped} of {slow.stalled + slow.sleepy} by the "
            f"server, {_when(slow)}; stall limit {slow.max_stall_s:g} s, "
            f"behind limit {slow.max_behind_s:g} s; "
            f"{slow.server_clients_at_end} clients connected at the end",
        ),
        ("stalled endings", "; ".join(sorted({str(e) for e in slow.stalled_endings}))),
        (
            "sleepy endings / lag",
            "; ".join(sorted({str(e) for e in slow.sleepy_endings}))
            + f"; lag ms p50 {slow.sleepy_lag_ms.p50:.0f} / p99 {slow.sleepy_lag_ms.p99:.0f}",
        ),
        (
            "server RSS MiB",
            f"{mem.before_load:.0f} before load, {mem.ring_full:.0f} ring full "
            f"({mem.ring_size:,} msgs, {mem.ring_fill_s:g} s); window start {mem.window_start:.0f},"
            f" peak {mem.window_peak:.0f}, end {mem.window_end:.0f} (min {mem.window_min:.0f}); "
            f"{_trim(mem)}",
        ),
        ("pending per client max", f"{mem.pending_max:,} messages"),
        (
            "hub RSS MiB",
            f"{mem.hub_start:.0f} at window start, {mem.hub_end:.0f} at end (holding "
            f"{mem.hub_kept[0]:,} then {mem.hub_kept[1]:,} messages)",
        ),
        (
            "CPU % of a core",
            f"server {cpu.server:.0f}, clients {cpu.clients:.0f}, hub "
            f"{cpu.hub:.0f}, shards {cpu.shards:.0f}, feeder {cpu.feeder:.0f}, everything else "
            f"{cpu.others:.0f}; machine busy "
            f"{cpu.machine_busy_pct:.0f}% of {m.cores} cores",
        ),
        ("GC pauses", f"server {_pauses(r.gc.server)}; clients {_pauses(r.gc.clients)}"),
        (
            "event loop late ms p99 / max (> 50 ms)",
            f"server {_late(r.gc.server_loop)}; clients {_late(r.gc.clients_loop)}",
        ),
        (
            "goal",
            f"{r.goal_clients} clients, >= {r.goal_updates_per_s:,.0f} updates/s, p99 < "
            f"{r.goal_ms:g} ms: {'met' if r.goal_met else 'NOT met'}",
        ),
    ]
    lines = [
        "risk stream: websocket clients of /api/v1/stream under shard load",
        "",
        "| figure | value |",
        "|---|---|",
    ]
    lines += [f"| {label} | {value} |" for label, value in rows]
    if not r.ok:
        lines.append("\nINVALID RUN: a fast client was disconnected or received no update")
    return "\n".join(lines)


def _pauses(found: list[GcPauses]) -> str:
    return ", ".join(
        f"gen {g.generation} {g.collections:,} (max {g.max_ms:g} ms, {g.total_ms:,.0f} ms in all)"
        for g in found
    )


def _late(delay: LoopDelay) -> str:
    return f"{delay.p99_ms:.1f} / {delay.max_ms:.1f} ({delay.over_50_ms:,} times)"


def _stage_rows(r: Report) -> list[tuple[str, str]]:
    fast, stages = r.fast, r.stages
    if stages is None:
        read = fast.read_lag_ms
        return [("applied -> server read", f"{read.p50:.1f} / {read.p99:.1f} / {read.max:.1f}")]
    rows = [
        ("applied -> shard sent", stages.shard_sent_ms),
        ("applied -> hub took it", stages.hub_arrived_ms),
        ("applied -> hub emitted", stages.hub_emitted_ms),
        ("applied -> server read", stages.server_read_ms),
    ]
    found = [(f"{label} ms", f"{t.p50:.1f} / {t.p99:.1f} / {t.max:.1f}") for label, t in rows]
    reads, trip, wait = (
        stages.messages_per_read,
        stages.read_round_trip_ms,
        stages.read_loop_wait_ms,
    )
    found += [
        (
            "server's hub reads",
            f"{stages.reads_per_s:,.0f}/s, messages per read p50 {reads.p50:,.0f} / p99 "
            f"{reads.p99:,.0f} / max {reads.max:,.0f}",
        ),
        ("read round trip ms", f"{trip.p50:.1f} / {trip.p99:.1f} / {trip.max:.1f}"),
        ("reader's wait for the loop ms", f"{wait.p50:.1f} / {wait.p99:.1f} / {wait.max:.1f}"),
    ]
    found.append(
        (
            "shard publications",
            f"{stages.publications:,} sent; {stages.held:,} times held for "
            "`publish_in_flight` unanswered",
        )
    )
    return found


def _trim(mem: Memory) -> str:
    if mem.window_end_trimmed is None:
        return "no glibc to trim"
    return f"{mem.window_end_trimmed:.0f} once glibc's free heap was trimmed"


def _when(slow: Slow) -> str:
    if slow.first_drop_s is None:
        return "none"
    return f"{slow.first_drop_s:g}-{slow.last_drop_s:g} s after connecting"


def _parser() -> argparse.ArgumentParser:
    defaults = Options()
    parser = argparse.ArgumentParser(prog="python -m loadtests stream_fanout", description=__doc__)
    add = parser.add_argument
    add("--clients", type=positive, default=defaults.clients)
    add("--slow", type=int, default=defaults.slow, help="of --clients: half stalled, half sleepy")
    add(
        "--lag-clients",
        type=positive,
        default=defaults.lag_clients,
        help="fast clients that decode every frame and record its lags (the others count)",
    )
    add("--accounts", type=positive, default=defaults.accounts)
    add("--shards", type=positive, default=defaults.shards)
    add("--tick-interval-ms", type=float, default=defaults.tick_interval_ms)
    add("--seconds", type=float, default=defaults.seconds, help="the timed window")
    add("--warmup", type=float, default=defaults.warmup_s, help="after the clients connect")
    add("--sleepy-read-s", type=float, default=defaults.sleepy_read_s)
    add(
        "--clients-nice",
        type=int,
        default=defaults.clients_nice,
        help="niceness added to the client process (Ray runs its actors at 15)",
    )
    add("--max-stall-s", type=float, default=defaults.max_stall_s, help="StreamConfig's")
    add("--max-behind-s", type=float, default=defaults.max_behind_s, help="StreamConfig's")
    add("--ring-size", type=positive, default=defaults.ring_size, help="StreamConfig's")
    add("--publish-interval-s", type=float, default=defaults.publish_interval_s)
    add("--seed", type=int, default=defaults.seed)
    add(
        "--no-probes",
        action="store_true",
        help="run the hub and shards without the stage probes (no stage breakdown)",
    )
    add(
        "--admin-url",
        default=os.environ.get("PROPVISOR_PG_ADMIN_URL", DEFAULT_ADMIN_URL),
        help="PostgreSQL server where the scratch database is created and dropped",
    )
    add("--json", type=Path, default=None, help="also write the report here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark (starting a local Ray unless one is up); 1 if the run was invalid."""
    args = _parser().parse_args(argv)
    if not 0 <= args.slow < args.clients:
        raise SystemExit("--slow must leave at least one fast client")
    options = Options(
        clients=args.clients,
        slow=args.slow,
        lag_clients=args.lag_clients,
        accounts=args.accounts,
        shards=args.shards,
        tick_interval_ms=args.tick_interval_ms,
        seconds=args.seconds,
        warmup_s=args.warmup,
        sleepy_read_s=args.sleepy_read_s,
        clients_nice=args.clients_nice,
        max_stall_s=args.max_stall_s,
        max_behind_s=args.max_behind_s,
        ring_size=args.ring_size,
        publish_interval_s=args.publish_interval_s,
        seed=args.seed,
        probes=not args.no_probes,
    )
    owns_ray = not ray.is_initialized()
    if owns_ray:
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            configure_logging=False,
            log_to_driver=False,
        )
    import uvloop  # the loop the API runs on

    try:
        report = uvloop.run(run(options, args.admin_url))
    finally:
        if owns_ray:
            ray.shutdown()
    print(render(report), flush=True)
    if args.json is not None:
        write_report(args.json, report)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
