"""The root supervisor: for each platform connection (`bridge/connections.py`) creates its
shards, bridge worker and reconciler (and the simulator of an embedded one), and watches them.

Ray restarts a crashed shard process (`max_restarts=-1`); the shard recovers itself on its first
call (`AccountShard.ready`). The supervisor pings every child every `watch_interval_s`, which
both makes a restarted shard recover at once, events or not, and gives the health view: `up`
(answered), `degraded` (answered, and said what fails: the bridge's platform circuit is open,
or the reconciler found accounts that differ from the platform),
`restarting` (unreachable for now, or no answer in time), `down` (Ray says it is
dead for good). A change of process id between two answers is a restart.

The supervisor owns its children (Ray fate-shares owned actors with their owner): it is placed
on the driver's node and lives as long as the driver's runtime does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import msgspec
import ray
from ray.exceptions import ActorDiedError
from ray.util.placement_group import PlacementGroup, placement_group, remove_placement_group
from ray.util.scheduling_strategies import (
    NodeAffinitySchedulingStrategy,
    PlacementGroupSchedulingStrategy,
)

from actors.hub import HubConfig, RemoteRiskHub
from actors.reconcile import ReconcileConfig, RemoteReconciler
from actors.router import Router
from actors.shard_actor import RemoteAccountShard
from bridge.connections import Connection, EmbeddedConnection, check_names, connect
from bridge.liveness import Pulse
from bridge.platform import RemoteSimulatorServer
from bridge.simulator import Limits
from bridge.worker import RemoteBridgeWorker

log = logging.getLogger(__name__)

_SHARD_CPU = 0.001  # a placement bundle needs some resource; shards are I/O-bound


class ActorHealth(msgspec.Struct, kw_only=True):
    name: str
    kind: str  # shard, bridge, platform, reconciler, hub
    state: str = "starting"  # up, degraded (answers, reports trouble), restarting, down
    pid: int | None = None
    node: str | None = None
    restarts: int = 0
    last_seen_s: float | None = None  # seconds since its last answer
    detail: str = ""


class Health(msgspec.Struct, kw_only=True):
    status: str  # ok (all up), degraded (some restarting), down (some dead)
    actors: list[ActorHealth]


class Cell(msgspec.Struct, kw_only=True):
    """One platform connection's actors (Ray actor handles travel between processes): its
    shards, its bridge worker, its reconciler, and, for an embedded simulator, the simulator."""

    connection: str
    shards: list[Any]
    worker: Any
    reconciler: Any
    server: Any = None  # the embedded simulator actor, None for any other platform


class Topology(msgspec.Struct, kw_only=True):
    """The handles a driver needs, per connection, in configuration order, and the risk hub
    they all publish to."""

    cells: list[Cell]
    hub: Any = None


class Child:
    def __init__(self, name: str, kind: str, handle: Any) -> None:
        self.handle = handle
        self.health = ActorHealth(name=name, kind=kind)
        self.seen_at: float | None = None


class Supervisor:
    """Root of the actor tree: for each platform connection, its shards, bridge worker and
    reconciler (a cell); the simulator too for an embedded connection."""

    def __init__(
        self,
        *,
        database_url: str,
        connections: tuple[Connection, ...],
        shard_count: int,
        plans: list[Any],
        limits: Limits | None,  # the simulator oracle's: needed with an embedded connection
        shard_config: Any,
        max_pending_calls: int,
        reconcile: ReconcileConfig,
        watch_interval_s: float = 0.5,
        hub: HubConfig | None = None,
    ) -> None:
        check_names(connections)
        self.database_url = database_url
        self.connections = connections
        self.shard_count = shard_count
        self.plans = plans
        self.limits = limits
        self.shard_config = shard_config
        self.max_pending_calls = max_pending_calls
        self.reconcile = reconcile
        self.watch_interval_s = watch_interval_s
        self.hub_config = hub or HubConfig()
        self.hub_name = f"{connections[0].name}/hub"
        self.children: list[Child] = []
        self.placements: list[PlacementGroup] = []
        self.watcher: asyncio.Task[None] | None = None

    async def start(self) -> Topology:
        """Create every connection's actors and start watching them."""
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        hub = RemoteRiskHub.options(
            name=self.hub_name, num_cpus=0, max_restarts=-1, scheduling_strategy=here
        ).remote(self.database_url, self.hub_config)
        await hub.ready.remote()
        self.children.append(Child(self.hub_name, "hub", hub))
        cells = [await self._start_cell(connection) for connection in self.connections]
        await asyncio.gather(*(s.ready.remote() for cell in cells for s in cell.shards))
        await self.check()
        self.watcher = asyncio.create_task(self._watch_forever())
        return Topology(cells=cells, hub=hub)

    async def _start_cell(self, connection: Connection) -> Cell:
        prefix = connection.name
        bridge_name = f"{prefix}/bridge"
        # The bridge and the platform connection live beside the supervisor, on the driver's
        # node. A placement group spreads the shards over the nodes (the SPREAD strategy alone
        # is best-effort for actors that take no CPU, and was measured to stack them on one
        # node); when a node dies Ray moves its bundles to the nodes left and restarts the
        # shards there. Actors take no CPU slot: they are I/O-bound and must fit a small node.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        count = connection.shards or self.shard_count
        placement = placement_group([{"CPU": _SHARD_CPU}] * count, strategy="SPREAD")
        self.placements.append(placement)
        await placement.ready()
        shards = [
            RemoteAccountShard.options(
                name=f"{prefix}/shard-{i}",
                num_cpus=0,
                max_restarts=-1,
                max_task_retries=0,
                max_pending_calls=self.max_pending_calls,
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    placement, placement_group_bundle_index=i
                ),
            ).remote(
                i,
                self.database_url,
                name=f"{prefix}/shard-{i}",
                plans=self.plans,
                bridge_name=bridge_name,
                config=self.shard_config,
                hub_name=self.hub_name,
            )
            for i in range(count)
        ]
        server = None
        if isinstance(connection, EmbeddedConnection):
            if self.limits is None:
                raise ValueError(f"embedded connection {prefix!r} needs the simulator's limits")
            simulator = msgspec.structs.replace(connection.simulator, limits=self.limits)
            server = RemoteSimulatorServer.options(
                name=f"{prefix}/platform", num_cpus=0, scheduling_strategy=here
            ).remote(simulator, **msgspec.structs.asdict(connection.server))
        router = Router(count)
        platform = connect(connection, self.database_url, server)
        worker = RemoteBridgeWorker.options(
            name=bridge_name, num_cpus=0, scheduling_strategy=here
        ).remote(connection.worker(), platform, shards, router)
        reconciler = RemoteReconciler.options(
            name=f"{prefix}/reconciler", num_cpus=0, scheduling_strategy=here
        ).remote(
            self.reconcile,
            shards,
            router,
            worker,
            self.database_url,
            self.plans,
            hub_name=self.hub_name,
        )
        self.children += [
            *(Child(f"{prefix}/shard-{i}", "shard", s) for i, s in enumerate(shards)),
            Child(bridge_name, "bridge", worker),
            *([Child(f"{prefix}/platform", "platform", server)] if server is not None else []),
            Child(f"{prefix}/reconciler", "reconciler", reconciler),
        ]
        return Cell(
            connection=prefix, shards=shards, worker=worker, reconciler=reconciler, server=server
        )

    async def health(self) -> Health:
        """Each child's state as of the last check (every `watch_interval_s`)."""
        now = time.monotonic()
        actors = []
        for child in self.children:
            view = msgspec.structs.replace(child.health)
            if child.seen_at is not None:
                view.last_seen_s = round(now - child.seen_at, 3)
            actors.append(view)
        states = {a.state for a in actors}
        status = "down" if "down" in states else "ok" if states <= {"up"} else "degraded"
        return Health(status=status, actors=actors)

    async def check(self) -> None:
        """Ping every child once, at the same time, and update its health."""
        await asyncio.gather(*(self._check(child) for child in self.children))

    async def _check(self, child: Child) -> None:
        health = child.health
        try:
            found: Pulse = await asyncio.wait_for(
                child.handle.ping.remote(), timeout=max(1.0, 4 * self.watch_interval_s)
            )
        except ActorDiedError as exc:
            health.state, health.detail = "down", str(exc).splitlines()[0]
            return
        except Exception as exc:  # unavailable, restarting, or too slow to answer
            if health.state == "up":
                log.warning("%s is not answering: %s", health.name, type(exc).__name__)
            health.state, health.detail = "restarting", type(exc).__name__
            return
        if health.pid is not None and found.pid != health.pid:
            health.restarts += 1
            log.warning("%s restarted (pid %d -> %d)", health.name, health.pid, found.pid)
        # Answering but in trouble (the bridge's platform circuit is open): degraded, said why.
        health.state, health.detail = ("degraded", found.trouble) if found.trouble else ("up", "")
        health.pid, health.node = found.pid, found.node
        child.seen_at = time.monotonic()

    async def _watch_forever(self) -> None:
        while True:
            await asyncio.sleep(self.watch_interval_s)
            try:
                await self.check()
            except Exception:
                log.exception("health check failed")

    async def close(self) -> None:
        """Stop watching, let the shards checkpoint, end every child."""
        if self.watcher is not None:
            self.watcher.cancel()
            await asyncio.gather(self.watcher, return_exceptions=True)
        closing = [
            c.handle for c in self.children if c.health.kind in ("shard", "reconciler", "hub")
        ]
        await asyncio.gather(*(a.close.remote() for a in closing), return_exceptions=True)
        for child in self.children:
            ray.kill(child.handle)
        self.children = []
        for placement in self.placements:
            remove_placement_group(placement)
        self.placements = []


RemoteSupervisor: Any = ray.remote(Supervisor)
