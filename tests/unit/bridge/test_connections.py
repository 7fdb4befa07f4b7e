"""The pool's configuration: which adapter each connection gets, its default rate limit, and
the mistakes refused before anything starts."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.adapters.ctrader import CTraderOpenApi
from bridge.adapters.matchtrader import MatchTraderBrokerApi
from bridge.adapters.mt5 import Mt5WebApi
from bridge.adapters.simulated import SimulatedPlatform
from bridge.connections import (
    EmbeddedConnection,
    connect,
    parse_connections,
    push_secrets,
)
from bridge.platform import BatchStates, SimulatorConnection
from bridge.pushed import PushedEvents
from bridge.simulator import SimulatorConfig
from bridge.worker import WorkerConfig

MT5 = {"server": "m", "base_url": "https://mt5.example", "login": 1, "password": "p"}
CTRADER = {"server": "c", "url": "wss://ct.example:5036", "client_id": "i",
           "client_secret": "s", "access_token": "t", "accounts": {}}  # fmt: skip
MATCHTRADER = {"server": "x", "base_url": "https://mtr.example", "api_key": "k",
               "system_uuid": "s", "payment_gateway_uuid": "g"}  # fmt: skip
SECRET = "a-test-secret-of-enough-length"


def one(**table: Any) -> Any:
    [connection] = parse_connections([table])
    return connection


@pytest.mark.parametrize(
    ("table", "adapter", "rate"),
    [
        ({"platform": "simulated", "base_url": "http://127.0.0.1:8070"}, SimulatedPlatform, 50.0),
        ({"platform": "mt5", "mt5": MT5}, Mt5WebApi, 20.0),
        ({"platform": "ctrader", "ctrader": CTRADER}, CTraderOpenApi, 50.0),
        ({"platform": "matchtrader", "matchtrader": MATCHTRADER}, MatchTraderBrokerApi, 500 / 60),
    ],
)
def test_connect_when_platform_named_then_its_adapter_at_its_published_rate(
    table: dict[str, Any], adapter: type, rate: float
) -> None:
    connection = one(name="c1", **table)

    assert isinstance(connect(connection, "sqlite+aiosqlite:///x.db"), adapter)
    assert connection.worker().requests_per_second == pytest.approx(rate)
    assert connection.worker().connection == "c1"


def test_connect_when_bridge_tuning_given_then_it_replaces_the_published_rate() -> None:
    connection = one(
        name="c1", platform="mt5", mt5=MT5, bridge={"requests_per_second": 3.0, "burst": 2}
    )
    burst_only = one(
        name="c2", platform="matchtrader", matchtrader=MATCHTRADER, bridge={"burst": 2}
    )

    assert (connection.worker().requests_per_second, connection.worker().burst) == (3.0, 2)
    # A field left out keeps the platform's published limit.
    assert burst_only.worker().requests_per_second == pytest.approx(500 / 60)
    assert burst_only.worker().burst == 2


def test_connect_when_pushed_then_events_come_from_the_inbox_and_commands_go_to_the_adapter() -> (
    None
):
    connection = one(name="c1", platform="mt5", mt5=MT5, pushed=True, push_secret=SECRET)

    platform = connect(connection, "sqlite+aiosqlite:///x.db")

    assert isinstance(platform, PushedEvents)
    assert platform.connection == "c1"
    assert isinstance(platform.inner, Mt5WebApi)
    assert isinstance(platform, BatchStates)  # MT5's batch call still serves its queries
    ctrader = one(name="c2", platform="ctrader", ctrader=CTRADER, pushed=True, push_secret=SECRET)
    assert not isinstance(connect(ctrader, "sqlite+aiosqlite:///x.db"), BatchStates)
    assert push_secrets((connection,)) == {"c1": SECRET.encode()}


def test_connect_when_embedded_then_it_needs_the_simulator_actor() -> None:
    connection = EmbeddedConnection(name="e1")

    assert isinstance(
        connect(connection, "sqlite+aiosqlite:///x.db", object()), SimulatorConnection
    )
    with pytest.raises(ValueError, match="needs its simulator actor"):
        connect(connection, "sqlite+aiosqlite:///x.db")


@pytest.mark.parametrize(
    ("tables", "error"),
    [
        ([], "at least one is needed"),
        ([{"platform": "embedded", "name": "a"}] * 2, r"names must be unique, repeated: \['a'\]"),
        (
            [{"platform": "embedded", "name": "a"}, {"platform": "embedded", "name": "b"}],
            r"each server needs its own name .* repeated: \['sim-1'\]",
        ),
        (
            [
                {"platform": "embedded", "name": "a", "simulator": {"server": "m"}},
                {"platform": "mt5", "name": "b", "mt5": MT5},
            ],
            r"repeated: \['m'\]",
        ),
        ([{"platform": "embedded", "name": "a", "bridge": {"burst": "x"}}], r"`bridge`: .*burst"),
        ([{"platform": "embedded", "name": "a", "bridge": {"connection": "x"}}], "leave it out"),
        ([{"platform": "embedded", "name": "a", "pushed": True}], "`push_secret` must be set"),
        (
            [{"platform": "embedded", "name": "a", "pushed": True, "push_secret": "short"}],
            "at least 16 characters",
        ),
        ([{"platform": "embedded", "name": "a", "push_secret": SECRET}], "pushed ones only"),
        ([{"platform": "embedded", "name": "a", "shards": -1}], "`shards` must be 0 or more"),
        ([{"platform": "mt5", "name": "m", "mt5": {"server": "m"}}], r"\$\[0\]\.mt5"),
        ([{"platform": "fix", "name": "f"}], "Invalid value 'fix'"),
    ],
)
def test_parse_connections_when_wrong_then_error_says_what(
    tables: list[dict[str, Any]], error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        parse_connections(tables)


def test_parse_connections_when_two_embedded_simulators_are_named_apart_then_accepted() -> None:
    pool = parse_connections(
        [
            {"platform": "embedded", "name": "a", "simulator": {"server": "a"}},
            {"platform": "embedded", "name": "b", "simulator": {"server": "b"}},
        ]
    )

    assert [c.simulator for c in pool] == [SimulatorConfig(server="a"), SimulatorConfig(server="b")]
    assert pool[0].worker() == WorkerConfig(connection="a")
