"""A Friday of payouts: `python -m loadtests payouts [--accounts 2000] [--resent 500]
[--twice 500] [--kill-after N] [--json PATH]`

A scratch PostgreSQL database, a local Ray with the runtime (two shards, one embedded
simulator), `--accounts` funded accounts whose trading went through the bridge, the payout
supervisor actor and the admin API on a free port. The measured burst sends every request at
once over HTTP: one per account, the first `--resent` again with the same `Idempotency-Key`,
and `--twice` accounts under a second key (the default is 3,000 requests). With `--kill-after`,
the payout supervisor is killed once that many requests were answered (Ray restarts it).

Reported: the wall time from the first send to the last answer (the issue's goal: all decided
within 10 s), answers per second, each request's latency p50/p99/max, how many answers were
replays (a resubmission meets the payout its key made, decided or being decided), payouts
written and their outcomes, and the two invariants checked: one payout per key, at most one
not rejected per account. Exit status 1 if an invariant fails.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import sys
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import msgspec
import ray
from aiohttp import web
from sqlalchemy import select

from actors.payments import PayoutPolicy, ProviderConfig
from actors.payouts import PayoutConfig, PayoutStats, start_payouts
from actors.reconcile import ReconcileConfig
from actors.runtime import Runtime, RuntimeConfig
from api.app import create_app
from api.auth import Role, create_token
from api.demo import Latency, latency_ms
from bridge.connections import EmbeddedConnection
from bridge.simulator import SimulatorConfig
from ledger.database import create_engine
from ledger.schema import payouts
from loadtests.common import positive, scratch_database, write_report
from loadtests.entity import _cpu_model
from loadtests.funded import PLAN, Answers, Burst, Trader, friday, seed


class Report(msgspec.Struct, kw_only=True):
    scenario: str
    machine: str
    accounts: int
    requests: int
    keys: int
    killed_after: int | None
    decided_s: float
    answers_per_s: float
    request_ms: Latency
    replayed: int
    payouts: int
    outcomes: dict[str, int]
    supervisor_batches: int
    supervisor_largest_batch: int
    supervisor_deciding_s: float
    one_payout_per_key: bool
    one_payout_per_period: bool


async def run(burst: Burst, kill_after: int | None) -> Report:
    async with scratch_database() as url:
        quiet = SimulatorConfig(
            server="pay", ticks_per_second=0.0, trades_per_trader_per_minute=0.0
        )
        runtime = Runtime(
            RuntimeConfig(
                database_url=url,
                shards=2,
                plan=PLAN,
                connections=(EmbeddedConnection(name="pay", simulator=quiet),),
                reconcile=ReconcileConfig(end_of_day=False),
            )
        )
        await runtime.start()
        engine = create_engine(url)
        # Payments stay in flight: the burst measures deciding, not the provider's latency.
        config = PayoutConfig(
            policy=PayoutPolicy(retry_s=600.0),
            provider=ProviderConfig(min_latency_s=600.0, max_latency_s=600.0),
        )
        supervisor = start_payouts(url, runtime, config)
        runner = web.AppRunner(create_app(runtime, engine, payouts=supervisor))
        try:
            population = [
                Trader(trader_id=f"{burst.prefix}-{i}", account_id=f"acc-{burst.prefix}-{i}")
                for i in range(burst.accounts)
            ]
            await seed(engine, runtime, population)
            await _traded(runtime, burst.accounts)
            await supervisor.ready.remote()
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            host, port = runner.addresses[0][:2]
            async with engine.begin() as conn:
                token = (await create_token(conn, "bench", Role.OPERATIONS)).token
            url = f"http://{host}:{port}"
            if kill_after:  # the killer needs the supervisor's handle: callers in this process
                answers = await friday(
                    url, token, burst, "bench", kill=supervisor, kill_after=kill_after
                )
            else:  # callers are elsewhere, as a firm's are: their own process
                answers = await _elsewhere(url, token, burst)
            async with engine.connect() as conn:
                rows = (await conn.execute(select(payouts.c.account_id, payouts.c.status))).all()
            counted: PayoutStats = await supervisor.counters.remote()
        finally:
            await runner.cleanup()
            await supervisor.close.remote()
            ray.kill(supervisor)
            await runtime.close()
            await engine.dispose()
    outcomes = Counter(row.status for row in rows)
    kept = Counter(row.account_id for row in rows if row.status != "rejected")
    sent = len(burst.requests())
    return Report(
        scenario="payouts",
        machine=f"{_cpu_model()}, {os.cpu_count()} cores; Python {platform.python_version()}",
        accounts=burst.accounts,
        requests=sent,
        keys=len(answers.by_key),
        killed_after=answers.at_kill if kill_after else None,
        decided_s=round(answers.elapsed_s, 2),
        answers_per_s=round(sent / answers.elapsed_s, 1),
        request_ms=latency_ms(answers.latencies_ns),
        replayed=answers.replayed,
        payouts=len(rows),
        outcomes=dict(sorted(outcomes.items())),
        supervisor_batches=counted.batches,
        supervisor_largest_batch=counted.largest_batch,
        supervisor_deciding_s=round(counted.deciding_s, 2),
        one_payout_per_key=len(rows) == len(answers.by_key)
        and all(len(ids) == 1 for ids in answers.by_key.values()),
        one_payout_per_period=all(n == 1 for n in kept.values()),
    )


async def _elsewhere(url: str, token: str, burst: Burst) -> Answers:
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        loop = asyncio.get_running_loop()
        raw = await loop.run_in_executor(
            pool, _burst_in_child, url, token, msgspec.msgpack.encode(burst)
        )
    return msgspec.msgpack.decode(raw, type=Answers)


def _burst_in_child(url: str, token: str, raw: bytes) -> bytes:
    burst = msgspec.msgpack.decode(raw, type=Burst)
    return msgspec.msgpack.encode(asyncio.run(friday(url, token, burst, "bench")))


async def _traded(runtime: Runtime, accounts: int) -> None:
    """Until every injected deal reached its shard."""
    for _ in range(600):
        found = await asyncio.gather(*(s.money.remote() for s in runtime.shards))
        balances = [m.balance for part in found for m in part.values()]
        if len(balances) == accounts and set(balances) == {1_090_000}:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError("the injected trades did not all reach the shards within a minute")


def render(r: Report) -> str:
    ms = r.request_ms
    killed = f", supervisor killed after {r.killed_after} answers" if r.killed_after else ""
    return "\n".join(
        [
            "payout burst: HTTP -> payout supervisor (Ray) -> checklist -> PostgreSQL",
            f"machine              {r.machine}",
            f"requests             {r.requests:,} at once ({r.keys:,} keys, {r.accounts:,} "
            f"accounts){killed}",
            f"all decided in       {r.decided_s:.2f} s ({r.answers_per_s:,.0f} answers/s; "
            "goal < 10 s)",
            f"request ms           p50 {ms.p50:.1f} / p99 {ms.p99:.1f} / max {ms.max:.1f}",
            f"replayed answers     {r.replayed} (the key had made its payout before)",
            f"payouts written      {r.payouts:,}: "
            + ", ".join(f"{k} {v:,}" for k, v in r.outcomes.items()),
            f"supervisor           {r.supervisor_batches} batches (largest "
            f"{r.supervisor_largest_batch}), {r.supervisor_deciding_s:.2f} s deciding",
            f"one payout per key   {r.one_payout_per_key}",
            f"one per period       {r.one_payout_per_period}",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests payouts", description=__doc__)
    parser.add_argument("--accounts", type=positive, default=2_000)
    parser.add_argument("--resent", type=int, default=500)
    parser.add_argument("--twice", type=int, default=500)
    parser.add_argument("--kill-after", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    burst = Burst(accounts=args.accounts, resent=args.resent, twice=args.twice)
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    try:
        report = asyncio.run(run(burst, args.kill_after or None))
    finally:
        ray.shutdown()
    print(render(report))
    if args.json:
        write_report(args.json, report)
    return 0 if report.one_payout_per_key and report.one_payout_per_period else 1


if __name__ == "__main__":
    sys.exit(main())
