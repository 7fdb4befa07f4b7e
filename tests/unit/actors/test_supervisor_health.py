"""The supervisor's health view: an actor that answers but reports trouble is degraded."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from actors.plans import DEFAULT_PLAN
from actors.reconcile import ReconcileConfig
from actors.shard_actor import ShardConfig
from actors.supervisor import Child, Supervisor
from bridge.connections import EmbeddedConnection
from bridge.liveness import Pulse
from bridge.simulator import Limits


class Answering:
    def __init__(self, pulse: Pulse) -> None:
        self.pulse = pulse
        self.ping = SimpleNamespace(remote=self._ping)

    async def _ping(self) -> Pulse:
        return self.pulse


def supervisor(*children: Child) -> Supervisor:
    found = Supervisor(
        database_url="sqlite+aiosqlite://",
        connections=(EmbeddedConnection(name="c"),),
        shard_count=1,
        plans=[DEFAULT_PLAN],
        limits=Limits(),
        shard_config=ShardConfig(),
        max_pending_calls=10,
        reconcile=ReconcileConfig(),
    )
    found.children = list(children)
    return found


async def test_health_when_bridge_reports_an_open_circuit_then_it_is_degraded_saying_why() -> None:
    trouble = "circuit open after 5 failures in a row, retry in 4.0 s: Unavailable: 503"
    bridge = Child("c/bridge", "bridge", Answering(Pulse(7, "node", trouble)))
    shard = Child("c/shard-0", "shard", Answering(Pulse(8, "node")))
    sup: Any = supervisor(bridge, shard)
    await sup.check()
    health = await sup.health()
    assert health.status == "degraded"
    assert [(a.name, a.state, a.detail) for a in health.actors] == [
        ("c/bridge", "degraded", trouble),
        ("c/shard-0", "up", ""),
    ]
    bridge.handle.pulse = Pulse(7, "node")  # the circuit closed again
    await sup.check()
    assert (await sup.health()).status == "ok"
