"""Trader timeline latency: `GET /api/v1/traders/{id}/timeline` for a trader with 10,000 events,
on PostgreSQL, through the real HTTP app.

`python -m loadtests timeline [--events 10000] [--other-events 200000] [--requests 200]
[--limit 50] [--admin-url URL] [--json PATH]`

A scratch database (created on `--admin-url`'s server, migrated, dropped afterwards) gets one
trader with five accounts and `--events` journal rows (deposits, deals in and out, loss warnings,
breaches with their pauses and resumptions, encoded as the shards encode them), the operators'
audit records about that trader, and `--other-events` rows of other traders' accounts, appended in
time order so the trader's rows are spread through the table as in a live journal. The admin app
(`api.app.create_app`) is served on a free port and called over HTTP with a support token.

Timed, `--requests` times each after a warm-up: the first page; a page deep in the history (the
cursor of the page 90% of the way down, reached by following the cursors from the top; that walk
also checks every item comes exactly once, newest first); and the first page of the rarest kind
(`kinds=rule_breached`, which the journal scan has to filter for). Latency is measured at the
client (request sent to body read), p50/p99/max from an HDR histogram. The goal (p99 under 100 ms
for the first and the deep page) is reported, never asserted; the exit status is 1 only if the
walk missed or repeated an item.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
from aiohttp import web
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from actors.events import (
    AccountPaused,
    AccountResumed,
    BreachAction,
    DomainEvent,
    RuleBreached,
    RuleName,
    RuleProgressed,
)
from actors.shard_actor import journal_record
from api.app import create_app
from api.auth import Role, create_token
from api.demo import Latency, latency_ms
from bridge.events import (
    AnyPlatformEvent,
    BalanceKind,
    BalanceOperated,
    DealEntry,
    DealExecuted,
    Side,
)
from ledger import audit
from ledger.audit import AuditRecord
from ledger.database import create_engine
from ledger.journal import Journal
from ledger.schema import accounts, traders
from loadtests.common import DEFAULT_ADMIN_URL, positive, scratch_database, write_report
from loadtests.entity import Machine, machine

GOAL_MS = 100.0
TRADER = "trd-bench"
ACCOUNTS_PER_TRADER = 5
EVENTS_PER_OTHER_ACCOUNT = 400
WARMUP = 10
DEEP_AT = 0.9  # the deep page: this far down the history
SPAN_NS = 180 * 86_400 * 10**9  # the history covers half a year
APPEND_BATCH = 5_000

Event = AnyPlatformEvent | DomainEvent


class Sizes(msgspec.Struct, frozen=True, kw_only=True):
    """What a run seeds and asks (reported as is)."""

    events: int = 10_000
    other_events: int = 200_000
    requests: int = 200
    limit: int = 50
    seed: int = 6


class Options(Sizes, frozen=True, kw_only=True):
    admin_url: str = DEFAULT_ADMIN_URL  # never reported: it may hold a password


class Walk(msgspec.Struct, kw_only=True):
    """Following every cursor from the top: pages, items, and whether each came once, in order."""

    pages: int
    items: int
    expected: int
    ok: bool
    seconds: float


class Report(msgspec.Struct, kw_only=True):
    scenario: str
    machine: Machine
    load_average: tuple[float, float]  # 1-minute load average before and after the timing
    database: str
    options: Sizes
    trader_accounts: int
    journal_rows: int  # the whole journal: the trader's and the others'
    audit_records: int  # the trader's
    seed_s: float
    walk: Walk
    deep_page_offset: int  # items above the deep page
    first_page_ms: Latency
    deep_page_ms: Latency
    rare_kind_ms: Latency
    goal_ms: float
    goal_met: bool


# The history ------------------------------------------------------------------------------------


def account_history(account_id: str, count: int, rng: random.Random, end_ns: int) -> list[Event]:
    """`count` events of one account over `SPAN_NS` up to `end_ns`: a first deposit, then mostly
    deals opening and closing positions, now and then a withdrawal, a loss warning, or a daily
    loss breach that pauses the account until a resumption."""
    times = sorted(end_ns - rng.randrange(SPAN_NS) for _ in range(count))
    events: list[Event] = [_deposit(account_id, 1, times[0], 100_000.0)]
    open_position: int | None = None
    for n, ts_ns in enumerate(times[1:], start=2):
        roll = rng.random()
        if roll < 0.03:
            events.append(_warning(account_id, n, ts_ns, rng))
        elif roll < 0.04:
            events += _pause(account_id, n, ts_ns)
        elif roll < 0.06:
            events.append(_deposit(account_id, n, ts_ns, -round(rng.uniform(100, 2_000), 2)))
        else:
            events.append(_deal(account_id, n, ts_ns, open_position, rng))
            open_position = n if open_position is None else None
    return events[:count]


def _deposit(account_id: str, n: int, ts_ns: int, amount: float) -> BalanceOperated:
    return BalanceOperated(
        event_id=f"{account_id}:bal:{n}",
        ts_ns=ts_ns,
        account_id=account_id,
        deal_id=n,
        kind=BalanceKind.DEPOSIT if amount > 0 else BalanceKind.WITHDRAWAL,
        amount=amount,
    )


def _deal(
    account_id: str, n: int, ts_ns: int, position: int | None, rng: random.Random
) -> DealExecuted:
    return DealExecuted(
        event_id=f"{account_id}:deal:{n}",
        ts_ns=ts_ns,
        account_id=account_id,
        deal_id=n,
        position_id=position or n,
        symbol=rng.choice(("EURUSD", "GBPUSD", "USDJPY", "XAUUSD")),
        entry=DealEntry.IN if position is None else DealEntry.OUT,
        side=rng.choice((Side.BUY, Side.SELL)),
        volume=rng.choice((0.1, 0.5, 1.0, 2.0)),
        price=round(rng.uniform(1.05, 1.12), 5),
        profit=0.0 if position is None else round(rng.gauss(0, 300), 2),
        commission=-3.5,
    )


def _warning(account_id: str, n: int, ts_ns: int, rng: random.Random) -> RuleProgressed:
    return RuleProgressed(
        event_id=f"{account_id}:warn:{n}",
        ts_ns=ts_ns,
        account_id=account_id,
        caused_by=f"{account_id}:deal:{n - 1}",
        rule=RuleName.DAILY_LOSS,
        level=50.0,
        used_pct=round(rng.uniform(50, 99), 1),
        equity=97_000.0,
        limit=95_000.0,
    )


def _pause(account_id: str, n: int, ts_ns: int) -> list[Event]:
    cause = f"{account_id}:deal:{n - 1}"
    common: dict[str, Any] = {"ts_ns": ts_ns, "account_id": account_id, "caused_by": cause}
    return [
        RuleBreached(
            event_id=f"{account_id}:breach:{n}",
            rule=RuleName.DAILY_LOSS,
            action=BreachAction.PAUSE,
            value=94_800.0,
            limit=95_000.0,
            phase="phase1",
            **common,
        ),
        AccountPaused(
            event_id=f"{account_id}:paused:{n}",
            rule=RuleName.DAILY_LOSS,
            until_ns=ts_ns + 3_600 * 10**9,
            **common,
        ),
        AccountResumed(event_id=f"{account_id}:resumed:{n}", **{**common, "ts_ns": ts_ns + 1}),
    ]


def account_ids(trader_id: str) -> list[str]:
    return [f"{trader_id}-acc-{i}" for i in range(ACCOUNTS_PER_TRADER)]


def other_traders(other_events: int) -> list[str]:
    """Enough other traders (five accounts each) for `other_events` at ~400 per account."""
    accounts_needed = max(1, other_events // EVENTS_PER_OTHER_ACCOUNT)
    return [f"trd-other-{i:05d}" for i in range(-(-accounts_needed // ACCOUNTS_PER_TRADER))]


def history(options: Options, end_ns: int) -> list[Event]:
    """Every account's events, the trader's and the others', in time order."""
    rng = random.Random(options.seed)
    events = _spread(account_ids(TRADER), options.events, rng, end_ns)
    others = [a for t in other_traders(options.other_events) for a in account_ids(t)]
    events += _spread(others, options.other_events, rng, end_ns)
    events.sort(key=lambda e: e.ts_ns)
    return events


def _spread(ids: list[str], total: int, rng: random.Random, end_ns: int) -> list[Event]:
    share, extra = divmod(total, len(ids))
    counts = [share + (1 if i < extra else 0) for i in range(len(ids))]
    return [
        e for a, c in zip(ids, counts, strict=True) if c for e in account_history(a, c, rng, end_ns)
    ]


def operator_actions(trader_id: str, count: int) -> Iterator[AuditRecord]:
    """What operators did about a trader: its creation, a purchase per account, then freezes
    and unfreezes of its accounts, `count` records in all."""
    ids = account_ids(trader_id)
    yield _record("trader.create", "trader", trader_id, trader_id)
    for n in range(1, count):
        if n <= len(ids):
            yield _record("purchase.create", "purchase", f"pur-{ids[n - 1]}", trader_id)
        else:
            action = "account.freeze" if n % 2 else "account.unfreeze"
            yield _record(action, "account", ids[n % len(ids)], trader_id)


def _record(action: str, target_type: str, target_id: str, trader_id: str) -> AuditRecord:
    return AuditRecord(
        actor="ops-bench",
        role="operations",
        action=action,
        target_type=target_type,
        target_id=target_id,
        trader_id=trader_id,
        after={"reason": "bench"},
        request_id=f"bench:{action}:{target_id}:{time.perf_counter_ns()}",
    )


# Seeding ----------------------------------------------------------------------------------------


async def seed(engine: AsyncEngine, options: Options) -> tuple[int, int]:
    """Fill the database; (journal rows, the trader's audit records)."""
    end_ns = time.time_ns() - 86_400 * 10**9
    everyone = [TRADER, *other_traders(options.other_events)]
    async with engine.begin() as conn:
        await conn.execute(traders.insert(), [_trader_row(t, end_ns - SPAN_NS) for t in everyone])
        rows = [_account_row(a, t, end_ns - SPAN_NS) for t in everyone for a in account_ids(t)]
        await conn.execute(accounts.insert(), rows)
    records = [journal_record(e) for e in history(options, end_ns)]
    journal = Journal(engine)
    for start in range(0, len(records), APPEND_BATCH):
        await journal.append(records[start : start + APPEND_BATCH])
    trail = max(ACCOUNTS_PER_TRADER + 1, options.events // 100)
    async with engine.begin() as conn:
        others = [r for t in everyone[1:] for r in operator_actions(t, 2)]
        await audit.append(conn, [*operator_actions(TRADER, trail), *others])
    await _vacuum_analyze(engine)
    return len(records), trail


async def _vacuum_analyze(engine: AsyncEngine) -> None:
    # As autovacuum would have by now on a live database: planner statistics, visibility map.
    async with engine.connect() as conn:
        live = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await live.exec_driver_sql("VACUUM ANALYZE")


def _trader_row(trader_id: str, created_ns: int) -> dict[str, Any]:
    return {
        "id": trader_id,
        "email": f"{trader_id}@example.com",
        "name": trader_id,
        "country": "DE",
        "language": "de",
        "timezone": "Europe/Berlin",
        "source": "bench",
        "created_ns": created_ns,
    }


def _account_row(account_id: str, trader_id: str, created_ns: int) -> dict[str, Any]:
    return {
        "id": account_id,
        "trader_id": trader_id,
        "purchase_id": f"pur-{account_id}",
        "plan_id": "classic",
        "plan_version": 1,
        "phase": "phase1",
        "status": "active",
        "connection": "sim",
        "platform_login": account_id,
        "attempts": 1,
        "created_ns": created_ns,
        "updated_ns": created_ns,
    }


# Timing through HTTP ----------------------------------------------------------------------------


class _Idle:
    """The running system: the timeline never asks it anything."""

    async def account(self, account_id: str) -> None:
        return None

    async def stats(self) -> None:
        raise AssertionError("the timeline benchmark runs no system")

    async def health(self) -> None:
        raise AssertionError("the timeline benchmark runs no system")


@dataclass(frozen=True)
class Client:
    """Asks for one trader's timeline as a support agent."""

    session: aiohttp.ClientSession
    url: str
    headers: dict[str, str]

    async def page(self, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """(nanoseconds from sending to the body read, the decoded page)."""
        started = time.perf_counter_ns()
        async with self.session.get(self.url, params=params, headers=self.headers) as answer:
            body = await answer.read()
            if answer.status != 200:
                raise RuntimeError(f"timeline answered {answer.status}: {body[:300]!r}")
        elapsed = time.perf_counter_ns() - started
        return elapsed, msgspec.json.decode(body)


@asynccontextmanager
async def served(engine: AsyncEngine) -> AsyncIterator[Client]:
    """The admin app on a free port, and a client with a support token."""
    async with engine.begin() as conn:
        token = (await create_token(conn, "bench-support", Role.SUPPORT)).token
    runner = web.AppRunner(create_app(_Idle(), engine))  # type: ignore[arg-type]
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        async with aiohttp.ClientSession() as session:
            yield Client(
                session=session,
                url=f"http://{host}:{port}/api/v1/traders/{TRADER}/timeline",
                headers={"Authorization": f"Bearer {token}"},
            )
    finally:
        await runner.cleanup()


async def walk(client: Client, limit: int, expected: int) -> tuple[Walk, str, int]:
    """Follow every cursor from the top; also the deep page's cursor and the items above it."""
    started = time.perf_counter()
    seen: set[str] = set()
    keys: list[tuple[int, str]] = []
    cursors: list[tuple[str, int]] = []
    cursor: str | None = None
    while True:
        params = {"limit": str(limit), **({"cursor": cursor} if cursor else {})}
        _, body = await client.page(params)
        for item in body["items"]:
            seen.add(item["id"])
            keys.append((-item["ts_ns"], item["source"]))
        cursor = body["next_cursor"]
        if cursor is None:
            break
        cursors.append((cursor, len(keys)))
    ok = len(seen) == len(keys) == expected and keys == sorted(keys)
    deep, offset = cursors[int(len(cursors) * DEEP_AT)] if cursors else ("", 0)
    pages = len(cursors) + 1
    result = Walk(pages=pages, items=len(keys), expected=expected, ok=ok, seconds=0.0)
    result.seconds = round(time.perf_counter() - started, 2)
    return result, deep, offset


async def timed(client: Client, params: dict[str, str], requests: int) -> Latency:
    """The latency of the same request, `requests` times after a warm-up."""
    for _ in range(WARMUP):
        await client.page(params)
    samples = [(await client.page(params))[0] for _ in range(requests)]
    return latency_ms(samples)


# The run ----------------------------------------------------------------------------------------


async def run(options: Options) -> Report:
    """Seed a scratch database, serve the app, walk and time the timeline; drop the database."""
    async with scratch_database(options.admin_url) as url:
        engine = create_engine(url)
        try:
            return await _measure(engine, options)
        finally:
            await engine.dispose()


async def _measure(engine: AsyncEngine, options: Options) -> Report:
    started = time.perf_counter()
    journal_rows, trail = await seed(engine, options)
    seed_s = round(time.perf_counter() - started, 1)
    async with engine.connect() as conn:
        version = (await conn.execute(text("SHOW server_version"))).scalar_one()
    expected = options.events + trail + ACCOUNTS_PER_TRADER
    load_before = os.getloadavg()[0]
    async with served(engine) as client:
        walked, deep, offset = await walk(client, options.limit, expected)
        limit = {"limit": str(options.limit)}
        first = await timed(client, limit, options.requests)
        deep_ms = await timed(client, {**limit, "cursor": deep}, options.requests)
        rare = await timed(client, {**limit, "kinds": "rule_breached"}, options.requests)
    return Report(
        scenario="timeline",
        machine=machine(None),
        load_average=(round(load_before, 2), round(os.getloadavg()[0], 2)),
        database=f"PostgreSQL {version}",
        options=msgspec.convert(msgspec.structs.asdict(options), Sizes),  # without the URL
        trader_accounts=ACCOUNTS_PER_TRADER,
        journal_rows=journal_rows,
        audit_records=trail,
        seed_s=seed_s,
        walk=walked,
        deep_page_offset=offset,
        first_page_ms=first,
        deep_page_ms=deep_ms,
        rare_kind_ms=rare,
        goal_ms=GOAL_MS,
        goal_met=max(first.p99, deep_ms.p99) < GOAL_MS,
    )


# Output -----------------------------------------------------------------------------------------


def render(r: Report) -> str:
    m, o, w = r.machine, r.options, r.walk
    return "\n".join(
        [
            "trader timeline: GET /api/v1/traders/{id}/timeline over HTTP, on PostgreSQL",
            f"machine      {m.cpu_model}, {m.cores} cores ({m.usable_cores} usable); "
            f"{m.implementation} {m.python}; {r.database}",
            f"load         1-minute load average {r.load_average[0]:.2f} before, "
            f"{r.load_average[1]:.2f} after",
            f"data         the trader: {o.events:,} journal events on {r.trader_accounts} "
            f"accounts, {r.audit_records} audit records; journal {r.journal_rows:,} rows in all "
            f"(seeded in {r.seed_s:.1f} s)",
            f"walk         {w.items:,} items in {w.pages} pages of {o.limit} "
            f"({w.seconds:.1f} s): {'each once, newest first' if w.ok else 'WRONG'}",
            f"first page   ms p50/p99/max  {_ms(r.first_page_ms)}   ({o.requests} requests)",
            f"deep page    ms p50/p99/max  {_ms(r.deep_page_ms)}   "
            f"(below {r.deep_page_offset:,} items)",
            f"rare kind    ms p50/p99/max  {_ms(r.rare_kind_ms)}   (kinds=rule_breached)",
            f"goal: first and deep page p99 < {r.goal_ms:g} ms   "
            f"{'met' if r.goal_met else 'NOT met'}",
        ]
    )


def _ms(latency: Latency) -> str:
    return f"{latency.p50:.1f} / {latency.p99:.1f} / {latency.max:.1f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests timeline", description=__doc__)
    parser.add_argument("--events", type=positive, default=10_000, help="the trader's")
    parser.add_argument("--other-events", type=int, default=200_000, help="other traders'")
    parser.add_argument("--requests", type=positive, default=200, help="per timed request")
    parser.add_argument("--limit", type=positive, default=50, help="items per page")
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument(
        "--admin-url",
        default=os.environ.get("PROPVISOR_PG_ADMIN_URL", DEFAULT_ADMIN_URL),
        help="PostgreSQL server where the scratch database is created and dropped",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    options = Options(
        events=args.events,
        other_events=max(0, args.other_events),
        requests=args.requests,
        limit=args.limit,
        seed=args.seed,
        admin_url=args.admin_url,
    )
    import uvloop  # the loop the API runs on

    report = uvloop.run(run(options))
    print(render(report), flush=True)
    if args.json is not None:
        write_report(args.json, report)
    return 0 if report.walk.ok else 1


if __name__ == "__main__":
    sys.exit(main())
