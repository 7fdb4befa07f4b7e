"""Onboarding wave: thousands of provisioning requests through the rate-limited bridge, with freezes
issued during the wave.

`python -m loadtests onboarding_wave [--accounts 5000] [--limit 50] [--freezes 200] [--json PATH]`

A platform simulator (a Ray actor) enforces `--limit` requests per second and answers a request
beyond it with a rate-limit refusal (HTTP 429 / MT5 "too frequent requests"), counting each. A
bridge worker (in this process) configured with the same published limit (and a burst of one
request, below the server's) carries `--accounts`
`ProvisionAccount` commands in its provisioning lane, one account per request as the MT5 manager
call does, submitted all at once by 50 callers. While the wave runs, `--freezes` `DisableTrading`
commands for accounts already opened are issued at a steady pace in the protect lane. Reported:
the wave's duration and requests per second as the simulator saw them, the 429 answers, accounts
provisioned, and each freeze's latency from being issued to the simulator's answer (p50/p99/max),
next to the same figures for the provisioning requests. Exit status 1 if any account was not
opened or any freeze not carried out; nothing asserts on speed.
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

import msgspec
import ray

from api.demo import Latency, latency_ms
from bridge.codec import encode_batch
from bridge.commands import DisableTrading, ProvisionAccount
from bridge.platform import DONE, RemoteSimulatorServer, SimulatorConnection
from bridge.simulator import SimulatorConfig
from bridge.worker import BridgeWorker, WorkerConfig
from loadtests.common import positive, write_report
from loadtests.entity import _cpu_model

CALLERS = 50
PLATFORM_BURST = 10  # the simulated server's bucket: its published limit allows short bursts
GOAL_FREEZE_P99_MS = 100.0


class Options(msgspec.Struct, kw_only=True):
    accounts: int
    limit: float
    freezes: int
    seed: int


class Report(msgspec.Struct, kw_only=True):
    scenario: str
    machine: str
    accounts: int
    limit_per_s: float
    provisioned: int
    wave_s: float
    requests_per_s: float
    rate_limited: int  # 429 answers from the simulator
    freezes: int
    freezes_done: int
    freeze_ms: Latency
    provision_ms: Latency
    goal_freeze_p99_met: bool


def provision_command(account_id: str) -> ProvisionAccount:
    return ProvisionAccount(
        command_id=f"provision:{account_id}",
        account_id=account_id,
        group="prop\\challenge",
        leverage=100,
        deposit_cents=10_000_000,
    )


async def run(options: Options) -> Report:
    quiet = SimulatorConfig(
        seed=options.seed, server="onboard", ticks_per_second=0.0, trades_per_trader_per_minute=0.0
    )
    server = RemoteSimulatorServer.options(num_cpus=0).remote(
        quiet, requests_per_second=options.limit, burst=PLATFORM_BURST
    )
    config = WorkerConfig(
        connection="onboard",
        requests_per_second=options.limit,
        # Below the platform's burst: the requests the platform has not counted yet when the
        # next one arrives (network jitter) still fit in its bucket, so none is refused.
        burst=1,
        commands_per_request=1,  # one account per manager call, as MT5's user add
    )
    worker: Any = BridgeWorker(config, SimulatorConnection(server), [], _NoShards())
    await worker.start(pull=False)
    ids = [f"onboard-{i:06d}" for i in range(options.accounts)]
    provision_ms: list[int] = []
    freeze_ms: list[int] = []
    opened: list[str] = []

    async def caller(chunk: Sequence[str]) -> None:
        for account_id in chunk:
            started = time.perf_counter_ns()
            [code] = await worker.execute(encode_batch([provision_command(account_id)]))
            provision_ms.append(time.perf_counter_ns() - started)
            if code == DONE:
                opened.append(account_id)

    freeze_codes: list[int] = []

    async def freezer(every_s: float) -> None:
        for n in range(options.freezes):
            await asyncio.sleep(every_s)
            target = opened[n % len(opened)] if opened else ids[0]
            freeze = DisableTrading(
                command_id=f"freeze:{target}:{n}", account_id=target, reason="bench", caused_by=""
            )
            started = time.perf_counter_ns()
            [code] = await worker.execute(encode_batch([freeze]))
            freeze_ms.append(time.perf_counter_ns() - started)
            freeze_codes.append(code)

    expected_s = options.accounts / options.limit
    started = time.perf_counter()
    try:
        chunks = [ids[i::CALLERS] for i in range(CALLERS)]
        await asyncio.gather(
            *(caller(c) for c in chunks), freezer(0.9 * expected_s / max(1, options.freezes))
        )
    finally:
        for task in worker.tasks:
            task.cancel()
    wave_s = time.perf_counter() - started
    report = await server.report.remote()
    freezes_done = sum(1 for code in freeze_codes if code == DONE)
    freezes = latency_ms(freeze_ms)
    return Report(
        scenario="onboarding_wave",
        machine=f"{_cpu_model()}, {os.cpu_count()} cores; Python {platform.python_version()}",
        accounts=options.accounts,
        limit_per_s=options.limit,
        provisioned=len(opened),
        wave_s=round(wave_s, 2),
        requests_per_s=round((options.accounts + options.freezes) / wave_s, 1),
        rate_limited=report.rate_limited,
        freezes=options.freezes,
        freezes_done=freezes_done,
        freeze_ms=freezes,
        provision_ms=latency_ms(provision_ms),
        goal_freeze_p99_met=freezes.p99 < GOAL_FREEZE_P99_MS,
    )


class _NoShards:
    shard_count = 0

    def shard_of(self, account_id: str) -> int:
        raise LookupError("the onboarding run delivers no events")


def render(r: Report) -> str:
    return "\n".join(
        [
            "onboarding wave: provisioning through the rate-limited bridge, freezes during it",
            f"machine   {r.machine}",
            f"accounts {r.accounts:,} at {r.limit_per_s:g} requests/s (simulator enforces it)",
            f"provisioned                 {r.provisioned:,} of {r.accounts:,}",
            f"wave                        {r.wave_s:.1f} s, {r.requests_per_s:.1f} requests/s",
            f"429 answers                 {r.rate_limited}",
            f"freezes carried out         {r.freezes_done} of {r.freezes}",
            f"freeze ms p50/p99/max       {_ms(r.freeze_ms)}",
            f"provision ms p50/p99/max    {_ms(r.provision_ms)}",
            f"goal: freeze p99 < {GOAL_FREEZE_P99_MS:g} ms     "
            f"{'met' if r.goal_freeze_p99_met else 'NOT met'}",
        ]
    )


def _ms(latency: Latency) -> str:
    return f"{latency.p50:.1f} / {latency.p99:.1f} / {latency.max:.1f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests onboarding_wave", description=__doc__
    )
    parser.add_argument("--accounts", type=positive, default=5_000)
    parser.add_argument("--limit", type=float, default=50.0, help="requests/s")
    parser.add_argument("--freezes", type=positive, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    options = Options(
        accounts=args.accounts, limit=args.limit, freezes=args.freezes, seed=args.seed
    )
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    try:
        report = asyncio.run(run(options))
    finally:
        ray.shutdown()
    print(render(report))
    if args.json:
        write_report(args.json, report)
    ok = report.provisioned == report.accounts and report.freezes_done == report.freezes
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
