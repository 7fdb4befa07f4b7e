"""The `propvisor` command."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import getpass
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from api.auth import Role
from api.settings import load_settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

DatabaseCommand = Callable[["AsyncEngine", argparse.Namespace], Awaitable[int]]


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
    _add_token_commands(commands)
    _add_audit_commands(commands)
    return parser


def _add_token_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    token = commands.add_parser("token", help="admin API tokens: create, list, revoke")
    token_commands = token.add_subparsers(dest="token_command", required=True)
    create = token_commands.add_parser(
        "create",
        help="create a token and print it once",
        description="Create an admin API token. The first line on stdout is the token alone "
        "(capture it: it is not shown again, the database keeps only its SHA-256); its id and "
        "role follow on stderr. Audited as token.create.",
    )
    create.add_argument("--role", required=True, choices=[role.value for role in Role])
    create.add_argument("--name", required=True, type=_token_name, help="who or what uses it")
    listing = token_commands.add_parser("list", help="every token: id, name, role, dates")
    revoke = token_commands.add_parser(
        "revoke",
        help="revoke a token (API processes stop accepting it within 5 s)",
        description="Revoke a live token by id (audited as token.revoke). Exit 1 if there is "
        "no such live token.",
    )
    revoke.add_argument("token_id", metavar="TOKEN_ID")
    for command in (create, listing, revoke):
        command.add_argument("--database-url", help="overrides $PROPVISOR_DATABASE_URL")


def _add_audit_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = commands.add_parser("audit", help="the audit trail")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_commands.add_parser(
        "verify",
        help="recompute the audit chain's hashes",
        description="Walk the audit chain and recompute every hash. Exit 0 and the head hash "
        "(keep it elsewhere: only a kept head reveals a truncated tail), or exit 1 naming the "
        "first broken record.",
    )
    verify.add_argument("--database-url", help="overrides $PROPVISOR_DATABASE_URL")
    verify.add_argument("--json", action="store_true", dest="as_json", help="print JSON")


def _token_name(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be blank")
    return text


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
    if args.command == "token":
        commands = {"create": _token_create, "list": _token_list, "revoke": _token_revoke}
        return _on_database(args, commands[args.token_command])
    if args.command == "audit":
        return _on_database(args, _audit_verify)
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


def _on_database(args: argparse.Namespace, command: DatabaseCommand) -> int:
    """Run `command` on the configured database, migrated to head first."""
    settings = load_settings(args.config, database_url=args.database_url)
    return asyncio.run(_migrated(settings.database_url, command, args))


async def _migrated(url: str, command: DatabaseCommand, args: argparse.Namespace) -> int:
    from ledger.database import create_engine, upgrade

    await upgrade(url)
    engine = create_engine(url)
    try:
        return await command(engine, args)
    finally:
        await engine.dispose()


def _operator() -> str:
    """Who runs the command, as the audit trail names them."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        return "cli:unknown"


async def _token_create(engine: AsyncEngine, args: argparse.Namespace) -> int:
    from api.auth import issue_token

    async with engine.begin() as conn:
        issued = await issue_token(conn, args.name, Role(args.role), by=_operator())
    print(issued.token, flush=True)  # the first line alone, so a script can capture it
    print(
        f"token {issued.token_id} (role {issued.role.value}) for {issued.name!r}: "
        "store it now, it is not shown again",
        file=sys.stderr,
    )
    return 0


async def _token_list(engine: AsyncEngine, args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from ledger.schema import api_tokens

    # Never the hash: it is not secret by itself, but nothing needs it outside the lookup.
    query = select(
        api_tokens.c.id,
        api_tokens.c.name,
        api_tokens.c.role,
        api_tokens.c.created_ns,
        api_tokens.c.revoked_ns,
    ).order_by(api_tokens.c.created_ns, api_tokens.c.id)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    table = [("ID", "NAME", "ROLE", "CREATED", "REVOKED")]
    table += [(r.id, r.name, r.role, _utc(r.created_ns), _utc(r.revoked_ns)) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _utc(ts_ns: int | None) -> str:
    if ts_ns is None:
        return "-"
    instant = dt.datetime.fromtimestamp(ts_ns // 1_000_000_000, dt.UTC)
    return instant.strftime("%Y-%m-%dT%H:%M:%SZ")


async def _token_revoke(engine: AsyncEngine, args: argparse.Namespace) -> int:
    async with engine.begin() as conn:
        revoked = await _revoke_audited(conn, args.token_id, _operator())
    if not revoked:
        print(f"no live token {args.token_id!r} (unknown or already revoked)", file=sys.stderr)
        return 1
    print(f"token {args.token_id} revoked: API processes refuse it within 5 s (their token cache)")
    return 0


async def _revoke_audited(conn: AsyncConnection, token_id: str, by: str) -> bool:
    """Revoke a live token and record it (`token.revoke`) in the caller's transaction."""
    from sqlalchemy import select

    from api.auth import revoke_token
    from ledger import audit
    from ledger.schema import api_tokens

    live = select(api_tokens.c.name, api_tokens.c.role).where(
        api_tokens.c.id == token_id, api_tokens.c.revoked_ns.is_(None)
    )
    row = (await conn.execute(live)).first()
    if row is None or not await revoke_token(conn, token_id):
        return False
    before = {"name": row.name, "role": row.role, "revoked": False}
    record = audit.AuditRecord(
        actor=by,
        role=Role.ADMIN.value,  # as for token.create: whoever reaches the database is admin
        action="token.revoke",
        target_type="token",
        target_id=token_id,
        before=before,
        after={**before, "revoked": True},
        request_id=f"{by}:revoke:{token_id}",
    )
    await audit.append(conn, [record])
    return True


async def _audit_verify(engine: AsyncEngine, args: argparse.Namespace) -> int:
    import msgspec

    from ledger.audit import verify

    report = await verify(engine)
    if args.as_json:
        print(msgspec.json.encode(report).decode())
    elif report.ok:
        print(f"audit chain intact: {report.records} records, head {report.head_hash}")
    else:
        print(
            f"audit chain broken at record {report.broken_at}: {report.problem} "
            f"({report.records} records intact before it)",
            file=sys.stderr,
        )
    return 0 if report.ok else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
