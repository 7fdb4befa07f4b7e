"""The runtime: the driver's handle on a running supervisor tree.

It starts the root `Supervisor` actor (which creates and watches, for each platform connection,
its shards, bridge worker and reconciler), hosts and provisions accounts, and answers the API's
questions. One object owns the topology so the demo, the API and the tests start the system the
same way.
"""

from __future__ import annotations

import asyncio
import logging
import os
import zlib
from collections.abc import Sequence
from typing import Any

import msgspec
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.endofday import DayReport
from actors.endofday import limits_of as replayable_limits
from actors.market import to_cents
from actors.plans import Plan
from actors.reconcile import PassReport, ReconcileConfig, ReconcileReport
from actors.router import Router
from actors.shard import AccountView, ShardStats
from actors.shard_actor import ShardConfig
from actors.supervisor import Cell, Health, RemoteSupervisor, Topology
from bridge.codec import encode_batch
from bridge.commands import (
    AnyPlatformCommand,
    DisableTrading,
    EnableTrading,
    ProvisionAccount,
)
from bridge.connections import DEFAULT_CONNECTIONS, Connection, EmbeddedConnection, check_names
from bridge.platform import DONE
from bridge.simulator import Limits, SimulatorReport
from bridge.worker import BridgeStats

log = logging.getLogger(__name__)


class RuntimeConfig(msgspec.Struct, frozen=True, kw_only=True):
    database_url: str
    shards: int = 0  # per connection that sets none; 0: one per CPU Ray sees
    plan: Plan
    connections: tuple[Connection, ...] = DEFAULT_CONNECTIONS  # the bridge pool, one per server
    shard: ShardConfig = ShardConfig()
    max_pending_calls: int = 1_000  # per shard: callers beyond it get an error, not a queue
    reconcile: ReconcileConfig = ReconcileConfig()
    command_timeout_s: float = 30.0  # how long an operator's command waits for the platform

    def __post_init__(self) -> None:
        check_names(self.connections)


class Opened(msgspec.Struct, frozen=True, kw_only=True):
    """Where an account was opened: its platform connection and its login there."""

    connection: str
    login: str


class OpeningFailed(Exception):
    """The platform refused a command, or did not answer in time; the message says which."""


class CommandTimedOut(OpeningFailed):
    """The platform did not answer in time; the command stays queued in the bridge and may
    still be carried out."""


class RuntimeStats(msgspec.Struct, frozen=True, kw_only=True):
    accounts: int
    events: int
    evaluations: int
    breaches: int
    frozen: int
    journal_rows: int
    rejected: int
    bridges: list[BridgeStats]  # one per connection
    shards: list[ShardStats]


def limits_of(plan: Plan) -> Limits:
    """What the simulator's oracle must check: the plan the firm sold.

    The simulator knows a static max loss and a daily loss below the day-start balance, with
    the day ending at local midnight; any other plan is refused rather than checked wrongly.
    """
    try:
        limits = replayable_limits(plan)
    except ValueError:
        raise ValueError(
            f"plan {plan.id!r} has rules the simulator's oracle cannot check"
        ) from None
    if plan.day_rollover.time != "00:00":
        raise ValueError(f"plan {plan.id!r} has rules the simulator's oracle cannot check")
    return limits


def default_shard_count() -> int:
    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    cpus = int(resources.get("CPU", os.cpu_count() or 1))
    return max(1, cpus)


class Runtime:
    """Owns the Ray actors of one running supervisor (needs `ray.init` first)."""

    def __init__(self, config: RuntimeConfig) -> None:
        self.config = config
        self.default_shards = config.shards or default_shard_count()
        self.supervisor: Any = None
        self.hub: Any = None  # the risk hub every shard publishes to (`actors/hub.py`)
        self.cells: dict[str, Cell] = {}  # by connection name, in configuration order
        self.routers: dict[str, Router] = {
            c.name: Router(c.shards or self.default_shards) for c in config.connections
        }
        self.home: dict[str, str] = {}  # account -> its connection, for the accounts hosted here

    @property
    def shards(self) -> list[Any]:
        """Every connection's shards."""
        return [shard for cell in self.cells.values() for shard in cell.shards]

    def cell(self, connection: str | None = None) -> Cell:
        """A connection's actors; without a name, the first configured connection's."""
        return self.cells[connection or self.config.connections[0].name]

    async def start(self, account_ids: Sequence[str] = (), connection: str | None = None) -> None:
        """Start the supervisor (it creates and watches every other actor), host and provision
        the accounts on `connection` (default: the first), then start the event flow."""
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.supervisor = RemoteSupervisor.options(
            name=f"{self.config.connections[0].name}/supervisor",
            num_cpus=0,
            scheduling_strategy=here,
        ).remote(
            database_url=self.config.database_url,
            connections=self.config.connections,
            shard_count=self.default_shards,
            plans=[self.config.plan],
            # The embedded simulators' oracle checks the plan; other platforms need no oracle.
            limits=limits_of(self.config.plan)
            if any(isinstance(c, EmbeddedConnection) for c in self.config.connections)
            else None,
            shard_config=self.config.shard,
            max_pending_calls=self.config.max_pending_calls,
            reconcile=self.config.reconcile,
        )
        topology: Topology = await self.supervisor.start.remote()
        self.cells = {cell.connection: cell for cell in topology.cells}
        self.hub = topology.hub
        if account_ids:
            await self.host(account_ids, connection)
        cells = self.cells.values()
        await asyncio.gather(*(c.worker.start.remote() for c in cells))
        await asyncio.gather(*(c.reconciler.start.remote() for c in cells))

    async def health(self) -> Health:
        """Which actors are up, restarting or down (the supervisor checks them continuously)."""
        health: Health = await self.supervisor.health.remote()
        return health

    async def host(
        self,
        account_ids: Sequence[str],
        connection: str | None = None,
        *,
        plan: Plan | None = None,
        phase: str | None = None,
        funded: bool = True,
    ) -> None:
        """Host each account under `plan` (default: the configured one) in `phase` (default:
        its first) on its shard of `connection` (default: the first), then, if `funded`, on an
        embedded simulator, open it there funded.

        In this order the shard knows the account before the platform can report its first
        deal. Accounts on any other platform must exist there already (or be provisioned
        through the bridge's provisioning lane: `ProvisionAccount`, whose deposit event funds
        the entity, as `loadtests/onboarding.py` does).
        """
        cell = self.cell(connection)
        router = self.routers[cell.connection]
        per_shard: list[list[tuple[str, Plan]]] = [[] for _ in cell.shards]
        for account_id in account_ids:
            per_shard[router.shard_of(account_id)].append((account_id, plan or self.config.plan))
        await asyncio.gather(
            *(
                shard.register.remote(batch, phase, funded)
                for shard, batch in zip(cell.shards, per_shard, strict=True)
                if batch
            )
        )
        for account_id in account_ids:
            self.home[account_id] = cell.connection
        if cell.server is not None and funded:
            # The embedded simulator opens them funded, as the entities are: pre-provisioned,
            # like `propvisor simulate --accounts`.
            await cell.server.provision.remote(list(account_ids))

    async def open_account(
        self,
        account_id: str,
        plan: Plan,
        *,
        phase: str | None = None,
        connection: str | None = None,
        timeout_s: float | None = None,
    ) -> Opened:
        """Sell an account: host it under `plan` in `phase`, waiting for its first deposit,
        then open it on its platform through the bridge's provisioning lane (rate-limited,
        behind freezes); the platform's deposit event funds the entity. Its connection is
        `connection`, else where it was hosted, else one chosen by a stable hash of its id.

        Safe to repeat for the same id (a retry after a failure or a time-out): the shard keeps
        the account it hosts, and a provisioning carried out before is done, never a second
        account. Raises `OpeningFailed` with the platform's reason.
        """
        if plan.initial_balance is None:
            raise OpeningFailed(f"plan {plan.id!r} sets no initial balance to deposit")
        name = connection or self.home.get(account_id) or self._place(account_id)
        cell = self.cell(name)
        limit_s = self.config.command_timeout_s if timeout_s is None else timeout_s
        try:
            async with asyncio.timeout(limit_s):
                await self.host([account_id], name, plan=plan, phase=phase, funded=False)
                await cell.reconciler.remember.remote([plan])
        except TimeoutError:
            raise CommandTimedOut(f"hosting {account_id} took over {limit_s:.0f} s") from None
        command = ProvisionAccount(
            command_id=f"provision:{account_id}",
            account_id=account_id,
            group=plan.platform_group,
            leverage=plan.leverage,
            deposit_cents=to_cents(plan.initial_balance),
            currency=plan.currency,
        )
        await self._carry_out(cell, command, timeout_s)
        return Opened(connection=name, login=account_id)

    async def set_trading(
        self,
        account_id: str,
        *,
        enabled: bool,
        reason: str,
        command_id: str,
        connection: str | None = None,
        timeout_s: float | None = None,
    ) -> None:
        """Freeze (`enabled=False`) or unfreeze an account on its platform by hand, through the
        bridge's protect lane, and wait for the platform's answer (`OpeningFailed` if it
        refuses). Each action needs its own `command_id`: a repeated id is done already."""
        cell = self.cell(connection or self.home.get(account_id) or self._place(account_id))
        command: AnyPlatformCommand = (
            EnableTrading(command_id=command_id, account_id=account_id, reason=reason)
            if enabled
            else DisableTrading(
                command_id=command_id, account_id=account_id, reason=reason, caused_by="operator"
            )
        )
        await self._carry_out(cell, command, timeout_s)

    async def _carry_out(
        self, cell: Cell, command: AnyPlatformCommand, timeout_s: float | None
    ) -> None:
        """Send one command through the connection's bridge and wait for the platform's answer
        (up to `timeout_s`, default `command_timeout_s`)."""
        timeout_s = self.config.command_timeout_s if timeout_s is None else timeout_s
        try:
            codes: list[int] = await asyncio.wait_for(
                cell.worker.execute.remote(encode_batch([command])), timeout_s
            )
        except TimeoutError:
            raise CommandTimedOut(
                f"{cell.connection} did not answer within {timeout_s:.0f} s; the command stays "
                "queued in the bridge and may still be carried out"
            ) from None
        if codes[0] != DONE:
            raise OpeningFailed(f"{cell.connection} refused {command.command_id}: code {codes[0]}")

    def _place(self, account_id: str) -> str:
        names = [c.name for c in self.config.connections]
        return names[zlib.crc32(account_id.encode()) % len(names)]

    def shard_for(self, account_id: str, connection: str | None = None) -> Any:
        """The shard hosting an account on `connection` (default: where it was hosted, else
        the first connection)."""
        cell = self.cell(connection or self.home.get(account_id))
        return cell.shards[self.routers[cell.connection].shard_of(account_id)]

    async def account(self, account_id: str) -> AccountView | None:
        """The account's view, from whichever connection hosts it."""
        if account_id in self.home:
            view: AccountView | None = await self.shard_for(account_id).account.remote(account_id)
            return view
        views: list[AccountView | None] = await asyncio.gather(
            *(self.shard_for(account_id, name).account.remote(account_id) for name in self.cells)
        )
        return next((v for v in views if v is not None), None)

    async def stats(self) -> RuntimeStats:
        cells = self.cells.values()
        shard_stats: list[ShardStats] = await asyncio.gather(
            *(s.stats.remote() for s in self.shards)
        )
        bridges: list[BridgeStats] = await asyncio.gather(*(c.worker.stats.remote() for c in cells))
        return RuntimeStats(
            accounts=sum(s.accounts for s in shard_stats),
            events=sum(b.applied for b in bridges),
            evaluations=sum(s.evaluations for s in shard_stats),
            breaches=sum(s.breaches for s in shard_stats),
            frozen=sum(s.frozen for s in shard_stats),
            journal_rows=sum(s.journal_rows for s in shard_stats),
            rejected=sum(b.rejected for b in bridges),
            bridges=list(bridges),
            shards=list(shard_stats),
        )

    async def stop(self, settle_timeout_s: float = 10.0) -> bool:
        """Halt the embedded markets, let in-flight events and freezes land, checkpoint every
        shard. Returns whether everything settled; on False some breach was still unconfirmed.
        """
        await asyncio.gather(*(server.halt.remote() for server in self._servers()))
        settled = await self.settle(settle_timeout_s)
        if not settled:
            log.warning("stopped after %.0f s with work in flight", settle_timeout_s)
        await asyncio.gather(*(c.worker.stop.remote() for c in self.cells.values()))
        await asyncio.gather(*(s.checkpoint.remote() for s in self.shards))
        return settled

    async def settle(self, timeout_s: float) -> bool:
        """Wait until every embedded simulator has nothing to send, no bridge holds anything,
        and every breached account's freeze is confirmed. Returns False if `timeout_s` passed
        first. (A platform of our own cannot say what it has yet to send.)"""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            backlogs: list[int] = await asyncio.gather(
                *(server.backlog.remote() for server in self._servers())
            )
            idle: list[bool] = await asyncio.gather(
                *(c.worker.idle.remote() for c in self.cells.values())
            )
            if (
                not any(backlogs)
                and all(idle)
                and set(await self.breached()) <= set(await self.frozen())
            ):
                return True
            await asyncio.sleep(0.05)
        return False

    async def reconcile(self) -> dict[str, PassReport]:
        """Compare every account with its platform now, per connection (each connection's
        reconciler also does on its timer)."""
        return await self._ask_reconcilers("run_pass")

    async def reconciliation(self) -> dict[str, ReconcileReport]:
        """Per connection, the last pass and the accounts that differed from the platform."""
        return await self._ask_reconcilers("report")

    async def end_of_day(self, until_ns: int | None = None) -> dict[str, DayReport]:
        """Per connection, replay every account's deals recorded before `until_ns` (default:
        now less the grace) and confirm each verdict (each reconciler also does once a day)."""
        return await self._ask_reconcilers("end_of_day", until_ns)

    async def _ask_reconcilers(self, method: str, *args: Any) -> dict[str, Any]:
        """Every connection's reconciler's answer to `method`, by connection."""
        cells = list(self.cells.values())
        answers = await asyncio.gather(
            *(getattr(c.reconciler, method).remote(*args) for c in cells)
        )
        return {c.connection: a for c, a in zip(cells, answers, strict=True)}

    async def simulator_report(self) -> SimulatorReport:
        """What the embedded simulators saw, together (their accounts are distinct)."""
        reports: list[SimulatorReport] = await asyncio.gather(
            *(server.report.remote() for server in self._servers())
        )
        return merge_reports(reports)

    def _servers(self) -> list[Any]:
        return [c.server for c in self.cells.values() if c.server is not None]

    async def breached(self) -> list[str]:
        """Accounts that breached a rule, across all shards."""
        return await self._gather_ids("breached")

    async def frozen(self) -> list[str]:
        """Accounts whose freeze the platform confirmed, across all shards."""
        return await self._gather_ids("frozen")

    async def _gather_ids(self, method: str) -> list[str]:
        lists: list[list[str]] = await asyncio.gather(
            *(getattr(s, method).remote() for s in self.shards)
        )
        return sorted(a for batch in lists for a in batch)

    async def close(self) -> None:
        """Let the shards write what is pending, then end this runtime's actors."""
        if self.supervisor is not None:
            await self.supervisor.close.remote()
            ray.kill(self.supervisor)
        self.supervisor = None
        self.cells = {}


def merge_reports(reports: Sequence[SimulatorReport]) -> SimulatorReport:
    """Several simulators' reports as one (each simulator's accounts are its own)."""
    merged = SimulatorReport(
        accounts=0,
        events=0,
        deals=0,
        crossed={},
        disabled=[],
        rejected_after_disable=0,
        breach_to_freeze_ns=[],
    )
    for report in reports:
        merged.accounts += report.accounts
        merged.events += report.events
        merged.deals += report.deals
        merged.crossed.update(report.crossed)
        merged.disabled += report.disabled
        merged.rejected_after_disable += report.rejected_after_disable
        merged.breach_to_freeze_ns += report.breach_to_freeze_ns
        merged.freezes_executed = {**merged.freezes_executed, **report.freezes_executed}
        merged.rate_limited += report.rate_limited
    return merged
