"""Purchases end to end: `POST /api/v1/purchases` through the real admin API, PostgreSQL, the
runtime and the rate-limited bridge, until each account is open on the platform.

`python -m loadtests purchases [--purchases 1000] [--limit 50] [--callers 50] [--json PATH]`

A scratch PostgreSQL database, a local Ray with the runtime (one embedded simulator whose server
enforces `--limit` requests per second, the bridge configured with the same published limit),
and the aiohttp app on a free port. Set-up creates a plan and `--purchases` traders through the
API; the measured wave is the purchases alone, `--callers` at a time, each with its own
`Idempotency-Key`. Reported: purchases per second over the wave, each purchase's latency
(request to answer, which includes opening the account on the platform) p50/p99/max, accounts
`active` at the end, and the platform's 429 answers. The bridge's provisioning lane is the
bound by design: purchases per second cannot exceed `--limit`; the figure shows how close to it
the whole path runs. Exit status 1 if any purchase failed or any account is not active.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import ray
from aiohttp import web

from actors.plans import DEFAULT_PLAN
from actors.runtime import Runtime, RuntimeConfig
from api.app import create_app
from api.auth import Role, create_token
from api.demo import Latency, latency_ms
from bridge.connections import EmbeddedConnection
from bridge.platform import ServerConfig
from bridge.simulator import SimulatorConfig
from ledger.database import create_engine
from loadtests.common import positive, scratch_database, write_report
from loadtests.entity import _cpu_model

PLAN = {
    "id": "bench-25k",
    "name": "Bench 25K",
    "initial_balance": 25_000,
    "phases": [{"name": "challenge", "daily_loss": {"pct": 5}, "max_loss": {"pct": 10}}],
}


class Options(msgspec.Struct, kw_only=True):
    purchases: int
    limit: float
    callers: int


class Report(msgspec.Struct, kw_only=True):
    scenario: str
    machine: str
    purchases: int
    callers: int
    limit_per_s: float
    wave_s: float
    purchases_per_s: float
    purchase_ms: Latency
    active: int
    failed: int
    rate_limited: int


async def run(options: Options) -> Report:
    async with scratch_database() as url:
        quiet = SimulatorConfig(
            server="buy", ticks_per_second=0.0, trades_per_trader_per_minute=0.0
        )
        server = ServerConfig(requests_per_second=options.limit, burst=10)
        connection = EmbeddedConnection(
            name="buy",
            simulator=quiet,
            server=server,
            # one account per request, as MT5's user-add call; the published limit, no burst
            bridge={"requests_per_second": options.limit, "burst": 1, "commands_per_request": 1},
        )
        runtime = Runtime(
            RuntimeConfig(database_url=url, shards=2, plan=DEFAULT_PLAN, connections=(connection,))
        )
        await runtime.start()
        engine = create_engine(url)
        runner = web.AppRunner(create_app(runtime, engine))
        try:
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            host, port = runner.addresses[0][:2]
            async with engine.begin() as conn:
                token = (await create_token(conn, "bench", Role.ADMIN)).token
            report = await _wave(f"http://{host}:{port}", token, options)
            simulated = await runtime.cell().server.report.remote()
            return msgspec.structs.replace(report, rate_limited=simulated.rate_limited)
        finally:
            await runner.cleanup()
            await runtime.close()
            await engine.dispose()


async def _wave(url: str, token: str, options: Options) -> Report:
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(url, headers=headers) as session:
        await _post(session, "/api/v1/plans", PLAN)
        traders = [await _trader(session, n) for n in range(options.purchases)]
        latencies: list[int] = []
        outcomes: list[str] = []
        queue = list(enumerate(traders))

        async def caller() -> None:
            while queue:
                n, trader_id = queue.pop()
                started = time.perf_counter_ns()
                status, body = await _buy(session, n, trader_id)
                latencies.append(time.perf_counter_ns() - started)
                outcomes.append(body["account"]["status"] if status == 201 else f"http {status}")

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(options.callers)))
        wave_s = time.perf_counter() - started
    active = outcomes.count("active")
    return Report(
        scenario="purchases",
        machine=f"{_cpu_model()}, {os.cpu_count()} cores; Python {platform.python_version()}",
        purchases=options.purchases,
        callers=options.callers,
        limit_per_s=options.limit,
        wave_s=round(wave_s, 2),
        purchases_per_s=round(options.purchases / wave_s, 1),
        purchase_ms=latency_ms(latencies),
        active=active,
        failed=len(outcomes) - active,
        rate_limited=0,
    )


async def _post(session: aiohttp.ClientSession, path: str, body: Any) -> tuple[int, Any]:
    async with session.post(path, json=body) as response:
        return response.status, await response.json()


async def _trader(session: aiohttp.ClientSession, n: int) -> str:
    body = {
        "email": f"trader{n}@bench.example",
        "name": f"Trader {n}",
        "country": "DE",
        "language": "de",
        "timezone": "Europe/Berlin",
        "source": "bench",
    }
    status, trader = await _post(session, "/api/v1/traders", body)
    if status != 201:
        raise RuntimeError(f"creating trader {n}: {status} {trader}")
    return str(trader["id"])


async def _buy(session: aiohttp.ClientSession, n: int, trader_id: str) -> tuple[int, Any]:
    body = {
        "trader_id": trader_id,
        "plan_id": PLAN["id"],
        "payment_reference": f"bench-{n}",
        "amount": "149.00",
        "currency": "USD",
    }
    headers = {"Idempotency-Key": f"bench-{n}"}
    async with session.post("/api/v1/purchases", json=body, headers=headers) as response:
        return response.status, await response.json()


def render(r: Report) -> str:
    ms = r.purchase_ms
    return "\n".join(
        [
            "purchases end to end: HTTP -> PostgreSQL -> bridge (rate-limited) -> platform",
            f"machine              {r.machine}",
            f"purchases            {r.purchases:,} by {r.callers} callers, platform limit "
            f"{r.limit_per_s:g} requests/s",
            f"wave                 {r.wave_s:.1f} s, {r.purchases_per_s:.1f} purchases/s",
            f"purchase ms          p50 {ms.p50:.1f} / p99 {ms.p99:.1f} / max {ms.max:.1f}",
            f"accounts active      {r.active:,} of {r.purchases:,} ({r.failed} not)",
            f"429 answers          {r.rate_limited}",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests purchases", description=__doc__)
    parser.add_argument("--purchases", type=positive, default=1_000)
    parser.add_argument("--limit", type=float, default=50.0, help="platform requests/s")
    parser.add_argument("--callers", type=positive, default=50)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    options = Options(purchases=args.purchases, limit=args.limit, callers=args.callers)
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    try:
        report = asyncio.run(run(options))
    finally:
        ray.shutdown()
    print(render(report))
    if args.json:
        write_report(args.json, report)
    return 0 if report.failed == 0 else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
