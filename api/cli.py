"""The `propvisor` command."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from api.settings import load_settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="propvisor", description=__doc__)
    parser.add_argument("--config", type=Path, help="TOML settings file (or $PROPVISOR_CONFIG)")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="run the supervisor end to end on embedded defaults")
    demo.add_argument("--accounts", type=_positive_int, default=2000)
    demo.add_argument("--duration", type=float, help="seconds to run (default: until Ctrl-C)")
    demo.add_argument("--seed", type=int, help="simulator seed (default: settings, 1)")
    demo.add_argument("--json", type=Path, dest="json_path", help="write the summary here")
    demo.add_argument("--database-url", help="overrides $PROPVISOR_DATABASE_URL")
    demo.add_argument("--http-port", type=int, help="0 picks a free port")
    demo.add_argument("--dashboard-port", type=int)
    demo.add_argument("--shards", type=int)

    replay = commands.add_parser(
        "replay",
        help="evaluate a plan over a recorded event stream (no Ray, no database)",
        description="Run the account entity over EVENTS (JSONL) under PLAN and print a verdict "
        "per account. Exit 0 on success, 2 on bad input (file:line and field on stderr). "
        "Format: docs/rules.md, section Replay.",
    )
    replay.add_argument("plan", type=Path, metavar="PLAN.toml")
    replay.add_argument("events", type=Path, metavar="EVENTS.jsonl")
    replay.add_argument(
        "--symbols", type=Path, metavar="SYMBOLS.toml", help="symbol table (default: bundled)"
    )
    replay.add_argument("--json", action="store_true", dest="as_json", help="print JSON")
    replay.add_argument("--phase", metavar="NAME", help="evaluate this phase (default: first)")

    simulate = commands.add_parser(
        "simulate",
        help="serve a simulated trading server over HTTP until SIGTERM or Ctrl-C",
        description="Serve the platform simulator's HTTP API (bridge/sim_http.py). The first "
        "line on stdout is its URL.",
    )
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=int, default=8070, help="0 picks a free port")
    simulate.add_argument("--seed", type=int, default=1)
    simulate.add_argument(
        "--server", default="sim-1", help="its name, which starts every event id (default: sim-1)"
    )
    simulate.add_argument(
        "--accounts", type=_non_negative_int, default=0, help="open acc-0 ... acc-(N-1), funded"
    )
    simulate.add_argument(
        "--requests-per-second", type=_positive_float, help="rate limit (default: none)"
    )
    simulate.add_argument("--burst", type=_positive_int, help="default: a second's worth")
    simulate.add_argument(
        "--ticks-per-second", type=_non_negative_float, default=10.0, help="per symbol"
    )
    simulate.add_argument(
        "--trades-per-minute",
        type=_non_negative_float,
        default=6.0,
        help="per synthetic trader (0: the accounts only trade what is injected)",
    )

    db = commands.add_parser("db", help="database maintenance")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_commands.add_parser("upgrade", help="apply migrations up to the newest")
    upgrade.add_argument("--database-url", help="overrides $PROPVISOR_DATABASE_URL")
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number from 0, got {text}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        return _demo(args)
    if args.command == "replay":
        return _replay(args)
    if args.command == "simulate":
        return _simulate(args)
    return _db_upgrade(args)


def _demo(args: argparse.Namespace) -> int:
    from api import demo

    settings = load_settings(
        args.config,
        database_url=args.database_url,
        http_port=args.http_port,
        dashboard_port=args.dashboard_port,
        shards=args.shards,
    )
    options = demo.DemoOptions(
        accounts=args.accounts,
        duration_s=args.duration,
        seed=settings.simulator_seed if args.seed is None else args.seed,
        json_path=args.json_path,
    )
    return demo.main(settings, options)


def _replay(args: argparse.Namespace) -> int:
    from api import replay

    return replay.main(
        args.plan,
        args.events,
        symbols_path=args.symbols,
        as_json=args.as_json,
        phase=args.phase,
    )


def _simulate(args: argparse.Namespace) -> int:
    from bridge import sim_http
    from bridge.simulator import SimulatorConfig

    config = SimulatorConfig(
        seed=args.seed,
        server=args.server,
        ticks_per_second=args.ticks_per_second,
        trades_per_trader_per_minute=args.trades_per_minute,
    )
    asyncio.run(
        sim_http.run(
            config,
            host=args.host,
            port=args.port,
            accounts=args.accounts,
            requests_per_second=args.requests_per_second,
            burst=args.burst,
            ready=_announce,
        )
    )
    return 0


def _announce(url: str) -> None:
    print(url, flush=True)  # the first line: a parent process waits for it


def _db_upgrade(args: argparse.Namespace) -> int:
    from ledger.database import database_label, upgrade

    settings = load_settings(args.config, database_url=args.database_url)
    asyncio.run(upgrade(settings.database_url))
    print(f"database at head: {database_label(settings.database_url)}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
