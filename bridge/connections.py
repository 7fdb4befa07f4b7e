"""The bridge pool's configuration: one entry per platform connection (one server, one credential).

Each connection gets its own bridge worker, its own shards and its own reconciler (a cell, see
`actors/supervisor.py`), so its prices, rate limit and circuit are its own and the rest of the
system never asks which platform an account lives on. The `platform` field picks the adapter:

- `embedded`: the platform simulator, run as an actor of this runtime (the demo and tests);
- `simulated`: a simulator running elsewhere (`propvisor simulate`), over its HTTP API;
- `mt5`, `ctrader`, `matchtrader`: the adapters in `bridge/adapters/` (tested against stubs only).

With `pushed`, the connection's events come from the push inbox (`POST /ingest/v1/{name}/events`)
instead of being pulled from the platform; commands and queries still go to the adapter.

The worker's rate limit (`bridge`) defaults to the platform's published limit: cTrader Open API
50 requests/s, Match-Trader Broker API 500 requests/min, and for MT5 (MetaQuotes publishes
none) the adapter's configured rate. Credentials are configuration values (a TOML file or
`PROPVISOR_*` variables kept outside the repository), never code.
"""

from __future__ import annotations

from typing import Any

import msgspec

from bridge.adapters.ctrader import CTraderConfig, CTraderOpenApi
from bridge.adapters.matchtrader import MatchTraderBrokerApi, MatchTraderConfig
from bridge.adapters.mt5 import Mt5Config, Mt5WebApi
from bridge.adapters.simulated import SimulatedPlatform
from bridge.platform import BatchStates, Platform, ServerConfig, SimulatorConnection
from bridge.pushed import PushedBatchEvents, PushedEvents
from bridge.simulator import SimulatorConfig
from bridge.worker import WorkerConfig

MIN_SECRET_CHARS = 16


class _Connection(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="platform"
):
    name: str  # our name for the connection: prefixes its actors, keys its push inbox
    shards: int = 0  # its account shards; 0: the runtime's default
    # The worker's tuning (`WorkerConfig` fields); `requests_per_second` left out: the platform's
    # published limit.
    bridge: dict[str, Any] = msgspec.field(default_factory=dict)
    pushed: bool = False  # events come from the push inbox, not from the platform
    push_secret: str | None = None  # pushed only: the HMAC key the platform signs with

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name:
            raise ValueError(f"`name` must be non-empty and without '/', got {self.name!r}")
        if self.shards < 0:
            raise ValueError(f"`shards` must be 0 or more, got {self.shards}")
        if self.pushed and len(self.push_secret or "") < MIN_SECRET_CHARS:
            raise ValueError(
                f"connection {self.name!r} is pushed: `push_secret` must be set, at least "
                f"{MIN_SECRET_CHARS} characters"
            )
        if "connection" in self.bridge:
            raise ValueError("`bridge.connection` is the connection's `name`: leave it out")
        try:
            self.worker()
        except msgspec.ValidationError as exc:
            raise ValueError(f"connection {self.name!r}: `bridge`: {exc}") from None
        if self.push_secret is not None and not self.pushed:
            raise ValueError(f"connection {self.name!r}: `push_secret` is for pushed ones only")

    def published_rate(self) -> float:
        """Requests per second the platform allows one connection."""
        return WorkerConfig().requests_per_second

    def worker(self) -> WorkerConfig:
        """The bridge worker's configuration, named after the connection."""
        fields = {"requests_per_second": self.published_rate(), **self.bridge}
        return msgspec.convert({**fields, "connection": self.name}, WorkerConfig)

    def event_prefix(self) -> str | None:
        """The server name that starts every event id from it (None: set by a remote server)."""
        return None


class EmbeddedConnection(_Connection, frozen=True, kw_only=True, tag="embedded"):
    """The platform simulator as an actor of this runtime."""

    simulator: SimulatorConfig = SimulatorConfig()
    server: ServerConfig = ServerConfig()  # its request limit, faults and clock

    def event_prefix(self) -> str | None:
        return self.simulator.server


class SimulatedConnection(_Connection, frozen=True, kw_only=True, tag="simulated"):
    """A simulator in its own process (`propvisor simulate`), at `base_url`."""

    base_url: str
    timeout_s: float = 10.0


class Mt5Connection(_Connection, frozen=True, kw_only=True, tag="mt5"):
    mt5: Mt5Config

    def event_prefix(self) -> str | None:
        return self.mt5.server

    def published_rate(self) -> float:
        return self.mt5.requests_per_second


class CTraderConnection(_Connection, frozen=True, kw_only=True, tag="ctrader"):
    ctrader: CTraderConfig

    def event_prefix(self) -> str | None:
        return self.ctrader.server

    def published_rate(self) -> float:
        return self.ctrader.requests_per_second


class MatchTraderConnection(_Connection, frozen=True, kw_only=True, tag="matchtrader"):
    matchtrader: MatchTraderConfig

    def event_prefix(self) -> str | None:
        return self.matchtrader.server

    def published_rate(self) -> float:
        return self.matchtrader.requests_per_minute / 60


Connection = (
    EmbeddedConnection
    | SimulatedConnection
    | Mt5Connection
    | CTraderConnection
    | MatchTraderConnection
)

DEFAULT_CONNECTIONS: tuple[Connection, ...] = (EmbeddedConnection(name="sim-1"),)


def parse_connections(raw: Any) -> tuple[Connection, ...]:
    """Connections from plain data (a TOML array of tables); a `ValueError` names what is wrong."""
    try:
        connections = msgspec.convert(raw, tuple[Connection, ...])
    except msgspec.ValidationError as exc:
        raise ValueError(f"connections: {exc}") from exc
    check_names(connections)
    return connections


def check_names(connections: tuple[Connection, ...]) -> None:
    if not connections:
        raise ValueError("connections: at least one is needed")
    names = [c.name for c in connections]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"connections: names must be unique, repeated: {repeated}")
    # A server's name starts every event id it makes; ids must be unique across the pool (the
    # journal keeps the first row of an event id). A remote simulator names its own.
    servers = [p for p in (c.event_prefix() for c in connections) if p is not None]
    repeated = sorted({n for n in servers if servers.count(n) > 1})
    if repeated:
        raise ValueError(
            f"connections: each server needs its own name (`simulator.server`, `mt5.server`...: "
            f"it starts every event id), repeated: {repeated}"
        )


def push_secrets(connections: tuple[Connection, ...]) -> dict[str, bytes]:
    """The ingestion endpoint's keys (`api.ingest.IngestConfig.secrets`): one per pushed
    connection."""
    return {c.name: c.push_secret.encode() for c in connections if c.push_secret is not None}


def connect(connection: Connection, database_url: str, embedded: Any = None) -> Platform:
    """The `Platform` for a connection. `embedded`: the simulator actor of an embedded one."""
    inner: Platform
    match connection:
        case EmbeddedConnection():
            if embedded is None:
                raise ValueError(f"connection {connection.name!r} needs its simulator actor")
            inner = SimulatorConnection(embedded)
        case SimulatedConnection():
            inner = SimulatedPlatform(connection.base_url, timeout_s=connection.timeout_s)
        case Mt5Connection():
            inner = Mt5WebApi(connection.mt5)
        case CTraderConnection():
            inner = CTraderOpenApi(connection.ctrader)
        case MatchTraderConnection():
            inner = MatchTraderBrokerApi(connection.matchtrader)
    if not connection.pushed:
        return inner
    pushed = PushedBatchEvents if isinstance(inner, BatchStates) else PushedEvents
    return pushed(connection.name, database_url, inner)
