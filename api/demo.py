"""`propvisor demo`: the whole supervisor end to end on embedded defaults.

A simulated platform runs synthetic traders (a few of them reckless), the bridge feeds the account
shards, breaching accounts are frozen back on the platform, the journal fills, and the HTTP app
serves account state. The summary compares what the supervisor did with the simulator's ground
truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import secrets
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec
import ray
from aiohttp import web
from hdrh.histogram import HdrHistogram

from actors.affiliates import start_affiliates
from actors.kyc_policy import POLICY_FILE
from actors.kyc_supervisor import KycConfig, start_kyc
from actors.payouts import start_payouts
from actors.plans import DEFAULT_PLAN
from actors.runtime import Runtime, RuntimeConfig, RuntimeStats
from actors.screening import load_simple
from actors.verification import VerifierConfig
from api.admin.follower import FollowerConfig
from api.app import create_app
from api.auth import Role, issue_token
from api.settings import Settings
from bridge.connections import EmbeddedConnection
from bridge.simulator import SimulatorReport
from ledger.database import create_engine, database_label, upgrade


class Latency(msgspec.Struct, frozen=True, kw_only=True):
    p50: float
    p99: float
    max: float


class GroundTruth(msgspec.Struct, frozen=True, kw_only=True):
    """The simulator's view: which accounts crossed a limit, and which it disabled."""

    crossed: list[str]
    disabled: list[str]
    rejected_after_disable: int
    missed: list[str]
    false: list[str]


class DemoSummary(msgspec.Struct, frozen=True, kw_only=True):
    accounts: int
    events: int
    breaches: int
    frozen: int
    breach_to_freeze_ms: Latency
    duration_s: float
    database: str
    evaluations: int
    rejected: int
    journal_rows: int
    frozen_accounts: list[str]
    simulator: GroundTruth


class DemoOptions(msgspec.Struct, frozen=True, kw_only=True):
    accounts: int = 2000
    duration_s: float | None = None
    seed: int = 1
    json_path: Path | None = None


_HOUR_US = 3_600_000_000
KYC_LISTS = POLICY_FILE.parent / "lists"  # synthetic sanctions and PEP lists (no real person)


def latency_ms(samples_ns: Sequence[int]) -> Latency:
    """p50/p99/max from an HDR histogram (microsecond resolution, up to an hour: an overloaded
    run's latencies can pass a minute, and a value out of range would be lost, not counted)."""
    if not samples_ns:
        return Latency(p50=0.0, p99=0.0, max=0.0)
    histogram = HdrHistogram(1, _HOUR_US, 3)
    for ns in samples_ns:
        histogram.record_value(min(max(1, ns // 1000), _HOUR_US))
    return Latency(
        p50=histogram.get_value_at_percentile(50) / 1000,
        p99=histogram.get_value_at_percentile(99) / 1000,
        max=histogram.get_max_value() / 1000,
    )


def runtime_config(settings: Settings, seed: int, run: str) -> RuntimeConfig:
    """The demo's runtime: each configured connection (default: one embedded simulator) runs
    a fresh market, so each is renamed for this run (its shards start empty; its simulator
    takes the same name, which starts its event ids). Its simulator takes the demo's seed
    (the i-th connection seed + i), tick rate and share of reckless traders. The demo checks
    the supervisor against the simulators' ground truth, so every connection must be
    embedded."""
    connections = []
    for i, connection in enumerate(settings.pool()):
        if not isinstance(connection, EmbeddedConnection):
            raise ValueError(
                f"connection {connection.name!r}: the demo runs on embedded simulators only "
                f"(platform = 'embedded'), not {type(connection).__name__}"
            )
        name = f"{connection.name}-{run}"
        simulator = msgspec.structs.replace(
            connection.simulator,
            server=name,
            seed=seed + i,
            ticks_per_second=settings.ticks_per_second,
            reckless_fraction=settings.reckless_fraction,
        )
        connections.append(msgspec.structs.replace(connection, name=name, simulator=simulator))
    return RuntimeConfig(
        database_url=settings.database_url,
        shards=settings.shards,
        plan=DEFAULT_PLAN,
        connections=tuple(connections),
    )


def say(line: str) -> None:
    print(line, flush=True)


def progress_line(elapsed: float, stats: RuntimeStats, rate: float) -> str:
    return (
        f"[{elapsed:6.1f}s] accounts={stats.accounts} events={stats.events} ({rate:,.0f}/s) "
        f"evaluations={stats.evaluations} breaches={stats.breaches} frozen={stats.frozen} "
        f"rejected={stats.rejected} journaled={stats.journal_rows}"
    )


async def serve_http(app: web.Application, host: str, port: int) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0]
    # What starting made (modules, Ray's client, the app) stays for the process's life: out of
    # the collector's generations, full collections walk only what serving makes.
    gc.freeze()
    return runner, f"http://{bound[0]}:{bound[1]}"


async def watch(runtime: Runtime, duration_s: float | None, stop: asyncio.Event) -> float:
    """Print progress every second until `duration_s` passes or `stop` is set; returns seconds."""
    started = time.monotonic()
    last_events, last_t = 0, started
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1.0)
        now = time.monotonic()
        stats = await runtime.stats()
        say(progress_line(now - started, stats, (stats.events - last_events) / (now - last_t)))
        last_events, last_t = stats.events, now
        if duration_s is not None and now - started >= duration_s:
            break
    return time.monotonic() - started


def ground_truth(report: SimulatorReport, frozen: list[str]) -> GroundTruth:
    crossed = sorted(report.crossed)
    return GroundTruth(
        crossed=crossed,
        disabled=report.disabled,
        rejected_after_disable=report.rejected_after_disable,
        missed=sorted(set(crossed) - set(frozen)),
        false=sorted(set(frozen) - set(crossed)),
    )


def demo_verifier(settings: Settings, secret: bytes) -> VerifierConfig | None:
    """The simulated document-verification provider, calling this run's webhook; None when the
    port is chosen at start (0), as the provider must know it before the app serves."""
    if settings.http_port == 0:
        return None
    host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "::") else settings.http_host
    return VerifierConfig(
        webhook_url=f"http://{host}:{settings.http_port}/webhooks/v1/kyc", secret=secret
    )


async def run(settings: Settings, options: DemoOptions) -> DemoSummary:
    """Run the demo on an initialised Ray; returns the summary."""
    await upgrade(settings.database_url)
    run_id = secrets.token_hex(3)
    runtime = Runtime(runtime_config(settings, options.seed, run_id))
    account_ids = [f"{run_id}-{i:05d}" for i in range(1, options.accounts + 1)]
    await runtime.start()
    names = list(runtime.cells)  # the accounts are dealt over the connections in turn
    await asyncio.gather(
        *(runtime.host(account_ids[i :: len(names)], name) for i, name in enumerate(names))
    )
    engine = create_engine(settings.database_url)
    async with engine.begin() as conn:
        issued = await issue_token(conn, f"demo-{run_id}", Role.ADMIN, by="demo")
    payouts = start_payouts(settings.database_url, runtime)
    await payouts.ready.remote()
    lists = load_simple((KYC_LISTS / "sample.csv").read_text(encoding="utf-8"))
    webhook_secret = secrets.token_bytes(32)  # this run's only: the simulated provider signs
    kyc_config = KycConfig(verifier=demo_verifier(settings, webhook_secret))
    kyc = start_kyc(settings.database_url, lists, kyc_config, payouts, hub=runtime.hub)
    affiliates = start_affiliates(settings.database_url, hub=runtime.hub)
    app = create_app(
        runtime,
        engine,
        follow=FollowerConfig(),
        hub=runtime.hub,
        payouts=payouts,
        kyc=kyc,
        kyc_webhook_secret=webhook_secret,
        affiliates=affiliates,
    )
    runner, address = await serve_http(app, settings.http_host, settings.http_port)
    say(f"HTTP app:       {address}/api/docs (admin token for this run: {issued.token})")
    say(f"Risk page:      {address}/risk/ (paste the token)")
    bearer = f"Authorization: Bearer {issued.token}"
    say(f"  curl -H '{bearer}' {address}/api/v1/accounts/{account_ids[0]}")
    say(f"Payouts:        {address}/api/v1/payouts?status=review (finance's review queue)")
    say(f"KYC:            {address}/api/v1/kyc/hits?status=open (compliance's screening queue)")
    say(f"Affiliates:     {address}/api/v1/affiliate-reconciliation (commissions vs the books)")
    if kyc_config.verifier is None:
        say("KYC:            no simulated verification provider (the HTTP port is chosen at start)")
    for name, router in runtime.routers.items():
        say(f"connection {name}: shards={router.shard_count}")
    say(f"database={database_label(settings.database_url)}")
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    try:
        elapsed = await watch(runtime, options.duration_s, stop)
        say("stopping: halting the market, settling freezes, checkpointing…")
        await runtime.stop()
        return await summarise(runtime, settings, elapsed)
    finally:
        await runner.cleanup()
        await payouts.close.remote()
        ray.kill(payouts)
        await kyc.close.remote()
        ray.kill(kyc)
        await affiliates.close.remote()
        ray.kill(affiliates)
        await runtime.close()
        await engine.dispose()


async def summarise(runtime: Runtime, settings: Settings, elapsed: float) -> DemoSummary:
    stats = await runtime.stats()
    report = await runtime.simulator_report()
    frozen = await runtime.frozen()
    return DemoSummary(
        accounts=stats.accounts,
        events=stats.events,
        breaches=stats.breaches,
        frozen=stats.frozen,
        breach_to_freeze_ms=latency_ms(report.breach_to_freeze_ns),
        duration_s=round(elapsed, 3),
        database=database_label(settings.database_url),
        evaluations=stats.evaluations,
        rejected=stats.rejected,
        journal_rows=stats.journal_rows,
        frozen_accounts=frozen,
        simulator=ground_truth(report, frozen),
    )


def terminal_view(summary: DemoSummary) -> dict[str, Any]:
    """The summary with account lists shown as counts (the JSON file keeps the lists)."""
    view: dict[str, Any] = msgspec.to_builtins(summary)
    view["frozen_accounts"] = len(summary.frozen_accounts)
    truth = view["simulator"]
    for key in ("crossed", "disabled", "missed", "false"):
        truth[key] = len(truth[key])
    return view


def main(settings: Settings, options: DemoOptions) -> int:
    """Start Ray, run the demo under uvloop, write and print the summary."""
    import uvloop

    context = ray.init(
        address=settings.ray_address,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=settings.dashboard_port,
        configure_logging=False,
    )
    say(f"Ray dashboard:  http://{context.dashboard_url}")
    try:
        summary = uvloop.run(run(settings, options))
    finally:
        ray.shutdown()
    encoded = msgspec.json.format(msgspec.json.encode(summary), indent=2)
    if options.json_path is not None:
        options.json_path.write_bytes(encoded + b"\n")
    say(msgspec.json.format(msgspec.json.encode(terminal_view(summary)), indent=2).decode())
    truth = summary.simulator
    platform_agrees = set(truth.disabled) == set(summary.frozen_accounts)
    exact = not truth.missed and not truth.false and summary.frozen == summary.breaches
    return 0 if exact and platform_agrees else 1
