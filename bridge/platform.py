"""The one interface every platform connection offers the bridge worker."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Protocol

import ray

from bridge.codec import decode_command_batch, encode_batch
from bridge.commands import AnyPlatformCommand
from bridge.liveness import Pulse, pulse
from bridge.simulator import PlatformSimulator, SimulatorConfig, SimulatorReport


class Platform(Protocol):
    """A connection to one trading server, as the bridge worker uses it."""

    async def fetch(self, max_events: int) -> list[bytes]:
        """Raw messages the server has for us, oldest first (at most `max_events`)."""
        ...

    async def execute(self, commands: Sequence[AnyPlatformCommand]) -> list[int]:
        """Carry out commands; a result code per command, 0 when done."""
        ...

    async def provision(self, account_ids: Sequence[str]) -> int:
        """Open accounts; returns how many were new."""
        ...


class SimulatorServer:
    """The simulated trading server as its own process, advancing in real time."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.sim = PlatformSimulator(config)
        self.last = time.monotonic()
        self.halted = False

    def fetch(self, max_events: int) -> list[bytes]:
        now = time.monotonic()
        if not self.halted:
            self.sim.advance(now - self.last)
        self.last = now
        return self.sim.take(max_events)

    def halt(self) -> None:
        """Close the market: no more prices or trades; commands are still carried out."""
        self.halted = True

    def ping(self) -> Pulse:
        return pulse()

    def backlog(self) -> int:
        """Messages generated but not yet fetched."""
        return len(self.sim.outbox)

    def execute(self, payload: bytes) -> list[int]:
        return self.sim.execute(decode_command_batch(payload))

    def provision(self, account_ids: Sequence[str]) -> int:
        return self.sim.provision(account_ids)

    def report(self) -> SimulatorReport:
        return self.sim.report()

    def inject(self, raw: Sequence[bytes]) -> None:
        """Queue raw messages as if the server had sent them (fault injection)."""
        for message in raw:
            self.sim.outbox.append((0, message))


RemoteSimulatorServer: Any = ray.remote(SimulatorServer)


class SimulatorConnection:
    """`Platform` over a `SimulatorServer` actor handle."""

    def __init__(self, server: Any) -> None:
        self.server = server

    async def fetch(self, max_events: int) -> list[bytes]:
        result: list[bytes] = await self.server.fetch.remote(max_events)
        return result

    async def execute(self, commands: Sequence[AnyPlatformCommand]) -> list[int]:
        result: list[int] = await self.server.execute.remote(encode_batch(commands))
        return result

    async def provision(self, account_ids: Sequence[str]) -> int:
        result: int = await self.server.provision.remote(list(account_ids))
        return result
