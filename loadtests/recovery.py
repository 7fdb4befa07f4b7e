"""Recovery: the same recorded stream run twice, once clean and once with a crash, must end equal.

`python -m loadtests recovery [--accounts N] [--seconds S] [--fault shard|node] [--json PATH]`

A platform simulator records a stream first (seeded: ticks, deals of careful and reckless
traders). Each run starts a fresh runtime on its own database, injects the stream into the
simulated server in paced chunks, and lets the bridge, the shards and the journal do their work;
freezes go back to the server, which carries them out and confirms them. In the faulty run, in
the middle of the stream, either one shard process is killed (SIGKILL: no goodbye) or, with
`--fault node`, a whole worker node of a two-node cluster is removed. The runs are then compared:
every account's state, breaches and freeze, the journal's event ids, and how many freezes the
platform carried out per account (exactly one per failed account, in both runs).

The node fault needs a cluster this process starts itself (`ray.cluster_utils.Cluster`, a head and
a worker node on loopback, explicit ports), so that run must not share a Ray with anything else.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import ray

from actors.plans import DEFAULT_PLAN
from actors.runtime import Runtime, RuntimeConfig
from actors.shard_actor import ShardConfig
from bridge.connections import EmbeddedConnection
from bridge.simulator import PlatformSimulator, SimulatorConfig
from ledger.database import create_engine, upgrade
from ledger.journal import Journal
from loadtests.common import DEFAULT_ADMIN_URL, scratch_database, write_report

Fault = Callable[[Runtime], Awaitable[str]]
"""Breaks something in a running runtime; returns what it did, in words."""


class Outcome(msgspec.Struct, kw_only=True):
    """What one run ended with, in comparable form."""

    accounts: dict[str, dict[str, Any]]  # account id -> view (without `version`)
    journal_ids: list[str]
    freezes_executed: dict[str, int]
    failed: list[str]
    frozen: list[str]
    events: int
    redelivered: int
    duplicate_commands: int
    delivery_retries: int
    fault: str
    seconds: float


class Comparison(msgspec.Struct, kw_only=True):
    accounts: int
    events: int
    failed: int
    different_accounts: list[str]
    different_fields: dict[str, list[str]]  # account -> the view fields that differ
    journal_only_clean: int
    journal_only_faulty: int
    freezes_not_once: dict[str, int]
    equal: bool


def record(accounts: Sequence[str], seconds: float, seed: int) -> list[bytes]:
    """The platform's messages for `seconds` of trading by `accounts` (JSON, in order)."""
    sim = PlatformSimulator(SimulatorConfig(seed=seed, server=f"rec{seed}", reckless_fraction=0.15))
    sim.provision(accounts)
    for _ in range(round(seconds * 10)):
        sim.advance(0.1)
    return sim.take(len(sim.outbox))


async def run_once(
    database_url: str,
    accounts: Sequence[str],
    stream: Sequence[bytes],
    *,
    shards: int = 2,
    chunks: int = 40,
    pace_s: float = 0.05,
    fault: Fault | None = None,
) -> Outcome:
    """Run the stream through a fresh runtime on `database_url`; break it halfway if asked."""
    await upgrade(database_url)
    connection = f"run-{secrets.token_hex(3)}"
    config = RuntimeConfig(
        database_url=database_url,
        shards=shards,
        plan=DEFAULT_PLAN,
        connections=(
            EmbeddedConnection(
                name=connection,
                # The same server name in every run: its confirmations' event ids must compare
                # equal.
                simulator=SimulatorConfig(
                    server="platform", ticks_per_second=0.0, trades_per_trader_per_minute=0.0
                ),
                bridge={"requests_per_second": 200.0, "burst": 50},
            ),
        ),
        shard=ShardConfig(checkpoint_interval_s=1.0),
    )
    runtime = Runtime(config)
    started = time.monotonic()
    done = "none"
    try:
        await runtime.start(list(accounts))
        size = max(1, len(stream) // chunks)
        for index, start in enumerate(range(0, len(stream), size)):
            if fault is not None and index == chunks // 2:
                done = await fault(runtime)
            await _inject(runtime, stream[start : start + size])
            await asyncio.sleep(pace_s)
        if not await runtime.stop(settle_timeout_s=120.0):
            raise RuntimeError("the runtime did not settle within 120 s")
        return await _outcome(runtime, database_url, done, time.monotonic() - started)
    finally:
        await runtime.close()


async def _inject(runtime: Runtime, messages: Sequence[bytes]) -> None:
    """Hand messages to the platform; retried if its actor is briefly unreachable (a node went
    away). A retry after a lost reply repeats event ids, which the bridge drops."""
    for attempt in range(100):
        try:
            await runtime.cell().server.inject.remote(list(messages))
            return
        except ray.exceptions.ActorUnavailableError:
            await asyncio.sleep(0.1 * (attempt + 1))
    raise RuntimeError("the platform stayed unreachable")


async def _outcome(runtime: Runtime, database_url: str, fault: str, seconds: float) -> Outcome:
    views = [view for shard in runtime.shards for view in await shard.views.remote()]
    accounts = {}
    for view in views:
        fields = msgspec.to_builtins(view)
        fields.pop("version")  # counts evaluations, which a shard may skip (price bands)
        accounts[view.account_id] = fields
    stats = await runtime.stats()
    report = await runtime.simulator_report()
    engine = create_engine(database_url)
    try:
        entries = await Journal(engine).read(limit=10_000_000)
    finally:
        await engine.dispose()
    return Outcome(
        accounts=accounts,
        journal_ids=sorted(e.event_id for e in entries),
        freezes_executed=report.freezes_executed,
        failed=await runtime.breached(),
        frozen=await runtime.frozen(),
        events=stats.events,
        redelivered=stats.bridges[0].redelivered,
        duplicate_commands=stats.bridges[0].duplicate_commands,
        delivery_retries=stats.bridges[0].delivery_retries,
        fault=fault,
        seconds=round(seconds, 2),
    )


def compare(clean: Outcome, faulty: Outcome) -> Comparison:
    """Where the faulty run ended differently from the clean one (nothing, if recovery works)."""
    names = sorted(set(clean.accounts) | set(faulty.accounts))
    # A frozen account's last event can be the platform's confirmation of the freeze, stamped
    # with the platform's clock when it carried the freeze out: later in a run the fault delayed.
    frozen = set(clean.frozen) & set(faulty.frozen)
    for outcome in (clean, faulty):
        for account in frozen:
            outcome.accounts.get(account, {}).pop("last_event_ns", None)
    different = [a for a in names if clean.accounts.get(a) != faulty.accounts.get(a)]
    only_clean = set(clean.journal_ids) - set(faulty.journal_ids)
    only_faulty = set(faulty.journal_ids) - set(clean.journal_ids)
    not_once = {
        account: faulty.freezes_executed.get(account, 0)
        for account in set(faulty.failed) | set(faulty.freezes_executed)
        if faulty.freezes_executed.get(account, 0) != 1
    }
    equal = (
        not different
        and not only_clean
        and not only_faulty
        and not not_once
        and clean.failed == faulty.failed
        and clean.frozen == faulty.frozen
        and clean.events == faulty.events
    )
    return Comparison(
        accounts=len(names),
        events=faulty.events,
        failed=len(faulty.failed),
        different_accounts=different,
        different_fields={
            a: sorted(
                k
                for k in set(clean.accounts.get(a, {})) | set(faulty.accounts.get(a, {}))
                if clean.accounts.get(a, {}).get(k) != faulty.accounts.get(a, {}).get(k)
            )
            for a in different
        },
        journal_only_clean=len(only_clean),
        journal_only_faulty=len(only_faulty),
        freezes_not_once=not_once,
        equal=equal,
    )


async def kill_a_shard(runtime: Runtime) -> str:
    """SIGKILL the process of the shard hosting the most accounts (Ray restarts it)."""
    sizes = [await shard.ready.remote() for shard in runtime.shards]
    index = sizes.index(max(sizes))
    pid = (await runtime.shards[index].ping.remote()).pid
    os.kill(pid, signal.SIGKILL)
    return f"killed shard {index} (pid {pid})"


async def shards_on(runtime: Runtime, node_id: str) -> list[int]:
    """Indexes of the shards running on node `node_id`."""
    pulses = await asyncio.gather(*(s.ping.remote() for s in runtime.shards))
    return [index for index, pulse in enumerate(pulses) if pulse.node == node_id]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Options(msgspec.Struct, frozen=True, kw_only=True):
    accounts: int = 200
    seconds: float = 60.0
    seed: int = 7
    shards: int = 2
    fault: str = "shard"
    admin_url: str = DEFAULT_ADMIN_URL
    json_path: str | None = None


class Result(msgspec.Struct, kw_only=True):
    options: Options
    clean: Outcome
    faulty: Outcome
    comparison: Comparison


async def compare_runs(options: Options, fault: Fault) -> Result:
    """Record the stream, run it clean and with `fault`, each on a new database; compare."""
    accounts = [f"acct-{i:05d}" for i in range(options.accounts)]
    stream = record(accounts, options.seconds, options.seed)
    async with scratch_database(options.admin_url) as url:
        clean = await run_once(url, accounts, stream, shards=options.shards)
    async with scratch_database(options.admin_url) as url:
        faulty = await run_once(url, accounts, stream, shards=options.shards, fault=fault)
    return Result(options=options, clean=clean, faulty=faulty, comparison=compare(clean, faulty))


def run(options: Options) -> Result:
    """Start the Ray this fault needs, run both, shut Ray down."""
    import uvloop

    if options.fault == "node":
        return _on_two_nodes(options)
    ray.init(
        address="local",  # a new Ray, never one another process left behind (address file)
        num_cpus=2,
        include_dashboard=False,
        configure_logging=False,
        log_to_driver=False,
    )
    try:
        return uvloop.run(compare_runs(options, kill_a_shard))
    finally:
        ray.shutdown()


def _on_two_nodes(options: Options) -> Result:
    import uvloop
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "gcs_server_port": free_port(),
            "include_dashboard": False,
            # Declare a silent node dead after ~10 s instead of Ray's default ~30 s.
            "_system_config": {
                "health_check_period_ms": 1000,
                "health_check_failure_threshold": 10,
            },
        },
    )
    holder: dict[str, Any] = {}

    async def remove_worker_node(runtime: Runtime) -> str:
        node = holder["node"]
        moved = await shards_on(runtime, node.node_id)
        if not moved:
            raise RuntimeError("no shard was placed on the worker node; nothing would be tested")
        cluster.remove_node(node, allow_graceful=False)
        return f"removed worker node {node.node_id[:12]} hosting shards {moved}"

    async def both() -> Result:
        holder["node"] = cluster.add_node(num_cpus=1)  # the head (driver, bridge) survives
        cluster.wait_for_nodes()
        return await compare_runs(options, remove_worker_node)

    ray.init(address=cluster.address, configure_logging=False, log_to_driver=False)
    try:
        return uvloop.run(both())
    finally:
        ray.shutdown()
        cluster.shutdown()  # type: ignore[no-untyped-call]


def render(result: Result) -> str:
    c = result.comparison
    lines = [
        f"recovery ({result.options.fault} fault): {c.accounts} accounts, {c.events} events, "
        f"{c.failed} failed",
        f"  clean run:  {result.clean.seconds:.1f} s",
        f"  faulty run: {result.faulty.seconds:.1f} s; {result.faulty.fault}; "
        f"{result.faulty.redelivered} redeliveries, {result.faulty.delivery_retries} delivery "
        f"retries, {result.faulty.duplicate_commands} duplicate commands dropped",
        f"  accounts that differ: {len(c.different_accounts)}; journal ids only in clean: "
        f"{c.journal_only_clean}, only in faulty: {c.journal_only_faulty}; freezes not "
        f"carried out exactly once: {len(c.freezes_not_once)}",
        *(f"  {a} differs in {', '.join(fields)}" for a, fields in c.different_fields.items()),
        "  EQUAL" if c.equal else "  DIFFERENT",
    ]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m loadtests recovery", description=__doc__)
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60.0, help="of recorded trading")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--fault", choices=("shard", "node"), default="shard")
    parser.add_argument(
        "--admin-url",
        default=os.environ.get("PROPVISOR_PG_ADMIN_URL", DEFAULT_ADMIN_URL),
        help="PostgreSQL server where the runs' databases are created and dropped",
    )
    parser.add_argument("--json", type=Path, dest="json_path")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    options = Options(
        accounts=args.accounts,
        seconds=args.seconds,
        seed=args.seed,
        shards=args.shards,
        fault=args.fault,
        admin_url=args.admin_url,
        json_path=None if args.json_path is None else str(args.json_path),
    )
    result = run(options)
    print(render(result), flush=True)
    if options.json_path is not None:
        write_report(Path(options.json_path), result)
    return 0 if result.comparison.equal else 1


if __name__ == "__main__":
    sys.exit(main())
