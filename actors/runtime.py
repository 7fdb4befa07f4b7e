"""The runtime: the driver's handle on a running supervisor tree.

It starts the root `Supervisor` actor (which creates and watches the shards, the bridge worker and
the platform connection), hosts and provisions accounts, and answers the API's questions. One
object owns the topology so the demo, the API and the tests start the system the same way.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from typing import Any

import msgspec
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from actors.plans import Plan
from actors.reconcile import PassReport, ReconcileConfig, ReconcileReport
from actors.router import Router
from actors.shard import AccountView, ShardStats
from actors.shard_actor import ShardConfig
from actors.supervisor import Health, RemoteSupervisor, Topology
from bridge.platform import ServerConfig
from bridge.simulator import Limits, SimulatorConfig, SimulatorReport
from bridge.worker import BridgeStats, WorkerConfig

log = logging.getLogger(__name__)


class RuntimeConfig(msgspec.Struct, frozen=True, kw_only=True):
    database_url: str
    shards: int = 0  # 0: one per CPU Ray sees
    plan: Plan
    simulator: SimulatorConfig = SimulatorConfig()
    server: ServerConfig = ServerConfig()  # the simulated server's request limit, faults, clock
    bridge: WorkerConfig = WorkerConfig(connection="sim-1")
    shard: ShardConfig = ShardConfig()
    max_pending_calls: int = 1_000  # per shard: callers beyond it get an error, not a queue
    reconcile: ReconcileConfig = ReconcileConfig()


class RuntimeStats(msgspec.Struct, frozen=True, kw_only=True):
    accounts: int
    events: int
    evaluations: int
    breaches: int
    frozen: int
    journal_rows: int
    rejected: int
    bridge: BridgeStats
    shards: list[ShardStats]


def limits_of(plan: Plan) -> Limits:
    """What the simulator's oracle must check: the plan the firm sold.

    The simulator knows a static max loss and a daily loss below the day-start balance, with
    the day ending at local midnight; any other plan is refused rather than checked wrongly.
    """
    phase = plan.phases[0]
    daily, max_loss = phase.daily_loss, phase.max_loss
    if (
        plan.initial_balance is None
        or daily is None
        or max_loss is None
        or (daily.amount_base, daily.reference, daily.action)
        != ("initial", "day_start_balance", "fail")
        or max_loss.mode != "static"
        or plan.day_rollover.time != "00:00"
    ):
        raise ValueError(f"plan {plan.id!r} has rules the simulator's oracle cannot check")
    return Limits(
        initial_balance=plan.initial_balance,
        daily_loss_pct=daily.pct,
        max_loss_pct=max_loss.pct,
        day_timezone=plan.day_rollover.timezone,
    )


def default_shard_count() -> int:
    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    cpus = int(resources.get("CPU", os.cpu_count() or 1))
    return max(1, cpus)


class Runtime:
    """Owns the Ray actors of one running supervisor (needs `ray.init` first)."""

    def __init__(self, config: RuntimeConfig) -> None:
        self.config = config
        self.router = Router(config.shards or default_shard_count())
        self.supervisor: Any = None
        self.shards: list[Any] = []
        self.server: Any = None
        self.worker: Any = None
        self.reconciler: Any = None

    async def start(self, account_ids: Sequence[str]) -> None:
        """Start the supervisor (it creates and watches every other actor), host and provision
        the accounts, then start the event flow."""
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        self.supervisor = RemoteSupervisor.options(
            name=f"{self.config.bridge.connection}/supervisor", num_cpus=0, scheduling_strategy=here
        ).remote(
            database_url=self.config.database_url,
            shard_count=self.router.shard_count,
            plans=[self.config.plan],
            simulator=self.config.simulator,
            server=self.config.server,
            limits=limits_of(self.config.plan),
            bridge=self.config.bridge,
            shard_config=self.config.shard,
            max_pending_calls=self.config.max_pending_calls,
            reconcile=self.config.reconcile,
        )
        topology: Topology = await self.supervisor.start.remote()
        self.shards, self.worker, self.server = topology.shards, topology.worker, topology.server
        self.reconciler = topology.reconciler
        await self.host(account_ids)
        await self.worker.start.remote()
        await self.reconciler.start.remote()

    async def health(self) -> Health:
        """Which actors are up, restarting or down (the supervisor checks them continuously)."""
        health: Health = await self.supervisor.health.remote()
        return health

    async def host(self, account_ids: Sequence[str]) -> None:
        """Host each account on its shard, then open it on the embedded simulator.

        In this order the shard knows the account before the platform can report its first deal.
        """
        per_shard: list[list[tuple[str, Plan]]] = [[] for _ in self.shards]
        for account_id in account_ids:
            per_shard[self.router.shard_of(account_id)].append((account_id, self.config.plan))
        await asyncio.gather(
            *(s.register.remote(batch) for s, batch in zip(self.shards, per_shard, strict=True))
        )
        # The embedded simulator opens them funded, as the entities are: pre-provisioned, like
        # `propvisor simulate --accounts`. Onboarding through the bridge's provisioning lane
        # (`ProvisionAccount`, whose deposit event funds the entity) is `loadtests/onboarding.py`.
        await self.server.provision.remote(list(account_ids))

    def shard_for(self, account_id: str) -> Any:
        return self.shards[self.router.shard_of(account_id)]

    async def account(self, account_id: str) -> AccountView | None:
        view: AccountView | None = await self.shard_for(account_id).account.remote(account_id)
        return view

    async def stats(self) -> RuntimeStats:
        shard_stats: list[ShardStats] = await asyncio.gather(
            *(s.stats.remote() for s in self.shards)
        )
        bridge: BridgeStats = await self.worker.stats.remote()
        return RuntimeStats(
            accounts=sum(s.accounts for s in shard_stats),
            events=bridge.applied,
            evaluations=sum(s.evaluations for s in shard_stats),
            breaches=sum(s.breaches for s in shard_stats),
            frozen=sum(s.frozen for s in shard_stats),
            journal_rows=sum(s.journal_rows for s in shard_stats),
            rejected=bridge.rejected,
            bridge=bridge,
            shards=list(shard_stats),
        )

    async def stop(self, settle_timeout_s: float = 10.0) -> bool:
        """Halt the market, let in-flight events and freezes land, checkpoint every shard.

        Returns whether everything settled; on False some breach was still unconfirmed.
        """
        await self.server.halt.remote()
        settled = await self.settle(settle_timeout_s)
        if not settled:
            log.warning("stopped after %.0f s with work in flight", settle_timeout_s)
        await self.worker.stop.remote()
        await asyncio.gather(*(s.checkpoint.remote() for s in self.shards))
        return settled

    async def settle(self, timeout_s: float) -> bool:
        """Wait until the platform has nothing to send, the bridge holds nothing, and every
        breached account's freeze is confirmed. Returns False if `timeout_s` passed first."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            backlog: int = await self.server.backlog.remote()
            idle: bool = await self.worker.idle.remote()
            if backlog == 0 and idle and set(await self.breached()) <= set(await self.frozen()):
                return True
            await asyncio.sleep(0.05)
        return False

    async def reconcile(self) -> PassReport:
        """Compare every account with the platform now (the reconciler also does on its timer)."""
        report: PassReport = await self.reconciler.run_pass.remote()
        return report

    async def reconciliation(self) -> ReconcileReport:
        """The last pass, and the accounts that differed from the platform in it."""
        report: ReconcileReport = await self.reconciler.report.remote()
        return report

    async def simulator_report(self) -> SimulatorReport:
        report: SimulatorReport = await self.server.report.remote()
        return report

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
        self.shards, self.worker, self.server, self.reconciler = [], None, None, None
