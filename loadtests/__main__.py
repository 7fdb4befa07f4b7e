"""`python -m loadtests SCENARIO [options]`: run one load-test scenario; without one, list them.

`python -m loadtests --bench` runs the short version of every scenario in turn (`make bench`).
A scenario is a module in this package with a `main(argv) -> int` function (a module whose `main`
takes no argument reads `sys.argv`, as `actor_cost` does); to add one, add it to `SCENARIOS`.
Modules are imported only when their scenario runs, so listing needs neither Ray nor the actors.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from unittest import mock


@dataclass(frozen=True)
class Scenario:
    """A registered scenario: its module, one line on what it measures, its `make bench` args."""

    name: str
    module: str
    summary: str
    bench_args: tuple[str, ...] = ()


SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        Scenario(
            name="entity",
            module="loadtests.entity",
            summary="account evaluations/s on one core for the entity alone, every rule on",
            bench_args=(
                "--accounts",
                "2000",
                "--ticks",
                "1000",
                "--repetitions",
                "3",
                "--json",
                "var/bench/entity.json",
            ),
        ),
        Scenario(
            name="ticks",
            module="loadtests.ticks",
            summary="µs per tick: every holder on every tick vs the price-band index",
            bench_args=(
                "--accounts",
                "2000",
                "--ticks",
                "1000",
                "--repetitions",
                "3",
                "--json",
                "var/bench/ticks.json",
            ),
        ),
        Scenario(
            name="steady",
            module="loadtests.steady",
            summary="accounts trading normally: events/s, evaluations/s, breach-to-freeze, "
            "missed/false breaches, lost events; single-process and polling baselines",
            bench_args=(
                "--accounts",
                "5000",
                "--duration",
                "20",
                "--poll",
                "1",
                "60",
                "--json",
                "var/bench/steady.json",
            ),
        ),
        Scenario(
            name="news_burst",
            module="loadtests.news_burst",
            summary="x50 ticks on three symbols while accounts sit near their limits, against an "
            "oracle; next to a single process, polling on a timer and one actor per account",
            bench_args=(
                "--accounts",
                "10000",
                "--duration",
                "15",
                "--actor-per-account",
                "10",
                "--actor-ticks",
                "200",
                "--poll",
                "1",
                "15",
                "300",
                "--json",
                "var/bench/news_burst.json",
            ),
        ),
        Scenario(
            name="onboarding_wave",
            module="loadtests.onboarding",
            summary="provisioning wave through the rate-limited bridge: 429s, accounts opened, "
            "freeze latency during the wave",
            bench_args=(
                "--accounts",
                "500",
                "--freezes",
                "40",
                "--json",
                "var/bench/onboarding_wave.json",
            ),
        ),
        Scenario(
            name="scale",
            module="loadtests.scale",
            summary="shards on Ray under a news burst: memory/account, evaluations/s, "
            "breach-to-freeze p50/p99/max, next to one Ray actor per account",
            bench_args=(
                "--accounts",
                "2000",
                "--burst-seconds",
                "1",
                "--actor-per-account",
                "10",
                "--actor-ticks",
                "100",
                "--json",
                "var/bench/scale.json",
            ),
        ),
        Scenario(
            name="recovery",
            module="loadtests.recovery",
            summary="a shard killed mid-stream (or --fault node) ends equal to a clean run",
            bench_args=(
                "--accounts",
                "200",
                "--seconds",
                "30",
                "--json",
                "var/bench/recovery.json",
            ),
        ),
        Scenario(
            name="timeline",
            module="loadtests.timeline",
            summary="trader timeline over HTTP on PostgreSQL: first and deep page p50/p99/max "
            "for a trader with 10,000 events among others' events",
            bench_args=(
                "--events",
                "10000",
                "--other-events",
                "100000",
                "--requests",
                "100",
                "--json",
                "var/bench/timeline.json",
            ),
        ),
        Scenario(
            name="purchases",
            module="loadtests.purchases",
            summary="purchases per second end to end over HTTP, through the rate-limited bridge "
            "until each account is open on the platform",
            bench_args=(
                "--purchases",
                "200",
                "--callers",
                "20",
                "--json",
                "var/bench/purchases.json",
            ),
        ),
        Scenario(
            name="payouts",
            module="loadtests.payouts",
            summary="a Friday: 3,000 payout requests at once over HTTP, decided by the payout "
            "supervisor; seconds to decide them all, one payout per key and per period",
            bench_args=("--json", "var/bench/payouts.json"),
        ),
        Scenario(
            name="stream_fanout",
            module="loadtests.stream",
            summary="risk stream: 100 websocket clients (10 slow) while the shards publish "
            "equity updates; lag p50/p99/max, updates/s, server memory, slow clients dropped",
            bench_args=(
                "--clients",
                "100",
                "--slow",
                "10",
                "--seconds",
                "10",
                "--warmup",
                "2",
                "--ring-size",
                "20000",
                "--json",
                "var/bench/stream_fanout.json",
            ),
        ),
        Scenario(
            name="screening",
            module="loadtests.screening",
            summary="sanctions/PEP re-screen: screenings/s against a 20,000-entry synthetic list, "
            "seeded listed people found under other spellings",
            bench_args=(
                "--entries",
                "20000",
                "--traders",
                "10000",
                "--json",
                "var/bench/screening.json",
            ),
        ),
        Scenario(
            name="affiliates",
            module="loadtests.affiliates",
            summary="affiliate commissions: a month of purchases, refunds and chargebacks "
            "accrued, the daily statement run for every affiliate, the weekly payout run, "
            "reconciled to the cent",
            bench_args=(
                "--affiliates",
                "1000",
                "--purchases",
                "20000",
                "--json",
                "var/bench/affiliates.json",
            ),
        ),
        Scenario(
            name="actor_cost",
            module="loadtests.actor_cost",
            summary="what one Ray actor costs: creation time and resident memory",
            bench_args=("--actors", "4"),
        ),
    )
}


def run(name: str, argv: Sequence[str]) -> int:
    """Run scenario `name` with its own command-line options; its exit status."""
    scenario = SCENARIOS[name]
    entry = importlib.import_module(scenario.module).main
    if inspect.signature(entry).parameters:
        return int(entry(list(argv)) or 0)
    with mock.patch.object(sys, "argv", [f"python -m loadtests {name}", *argv]):
        return int(entry() or 0)


def command_of(scenario: Scenario) -> str:
    """The command line that runs `scenario` as `make bench` does."""
    return " ".join(["python -m loadtests", scenario.name, *scenario.bench_args])


def bench() -> int:
    """The short version of every scenario, one after the other, then the report of them all
    (`var/bench/report.json` and `report.md`); fails if any failed."""
    from loadtests import report

    failed: list[str] = []
    outcomes: dict[str, tuple[int, float]] = {}
    for scenario in SCENARIOS.values():
        print(f"== {command_of(scenario)}", flush=True)
        started = time.perf_counter()
        stale = report.BENCH / f"{scenario.name}.json"
        stale.unlink(missing_ok=True)  # a figure in the report must come from this run
        status = run(scenario.name, scenario.bench_args)
        seconds = round(time.perf_counter() - started, 1)
        outcomes[scenario.name] = (status, seconds)
        print(f"== {scenario.name}: exit {status} in {seconds:.1f} s\n")
        if status:
            failed.append(scenario.name)
    commands = {name: command_of(s) for name, s in SCENARIOS.items()}
    report.write(report.gather(commands, outcomes), report.BENCH)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


def usage() -> str:
    """The scenario list shown when no scenario is given."""
    width = max(len(name) for name in SCENARIOS)
    lines = [
        "usage: python -m loadtests SCENARIO [options]   (SCENARIO --help for its options)",
        "       python -m loadtests --bench              (short version of every scenario)",
        "",
        "scenarios:",
    ]
    lines += [f"  {s.name:<{width}}  {s.summary}" for s in SCENARIOS.values()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to a scenario, run the bench set, or list the scenarios."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "--list"):
        print(usage())
        return 0
    if args[0] == "--bench":
        return bench()
    if args[0] not in SCENARIOS:
        print(f"unknown scenario {args[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    return run(args[0], args[1:])


if __name__ == "__main__":
    sys.exit(main())
