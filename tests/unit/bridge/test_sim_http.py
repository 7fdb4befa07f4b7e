"""The simulator over HTTP and its client: `SimulatedPlatform` against a real aiohttp server on
loopback, with the rate limit, the injected faults and bad input answered as a platform would."""

from __future__ import annotations

import email.utils
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bridge.adapters._http import retry_after
from bridge.adapters.simulated import SimulatedPlatform
from bridge.codec import decode_messages
from bridge.commands import DisableTrading, OperateBalance, ProvisionAccount
from bridge.events import AnyPlatformEvent, BalanceKind, BalanceOperated, TradingDisabled
from bridge.platform import (
    DONE,
    Faults,
    Platform,
    RateLimited,
    Refused,
    SimulatorServer,
    Unavailable,
)
from bridge.sim_http import MAX_COMMANDS, create_app
from bridge.simulator import SimulatorConfig
from tests.conftest import eventually

QUIET = SimulatorConfig(seed=3, ticks_per_second=0.0, trades_per_trader_per_minute=0.0)


@asynccontextmanager
async def serving(server: SimulatorServer) -> AsyncIterator[str]:
    """The app on a free loopback port; its base URL."""
    runner = web.AppRunner(create_app(server))
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def simulated(
    config: SimulatorConfig = QUIET, timeout_s: float = 5.0, **options: Any
) -> AsyncIterator[tuple[SimulatedPlatform, SimulatorServer]]:
    server = SimulatorServer(config, **options)
    async with serving(server) as url, SimulatedPlatform(url, timeout_s=timeout_s) as platform:
        yield platform, server


def open_account(account_id: str = "a", command_id: str = "open:a") -> ProvisionAccount:
    return ProvisionAccount(
        command_id=command_id,
        account_id=account_id,
        group="demo",
        leverage=100,
        deposit_cents=5_000,
    )


def deposit(amount_cents: int = 100, command_id: str = "dep:1") -> OperateBalance:
    return OperateBalance(
        command_id=command_id, account_id="a", kind=BalanceKind.DEPOSIT, amount_cents=amount_cents
    )


def decoded(raw: list[bytes]) -> list[AnyPlatformEvent]:
    events, rejections = decode_messages(raw)
    assert rejections == []
    return events


async def test_simulated_platform_when_account_opened_then_stream_history_and_state_agree() -> None:
    async with simulated() as (client, _):
        platform: Platform = client

        assert await platform.execute([open_account(), deposit()]) == [DONE, DONE]

        stream = await platform.fetch(100)
        assert [(e.kind, e.amount) for e in decoded(stream) if isinstance(e, BalanceOperated)] == [
            ("deposit", 50.0),
            ("deposit", 1.0),
        ]
        assert await platform.history("a", 0) == stream  # the same bytes, so the same event ids
        state = await platform.account_state("a")
        assert (state.balance_cents, state.equity_cents, state.enabled) == (5_100, 5_100, True)
        assert await platform.positions("a") == []


async def test_simulated_platform_when_trading_disabled_then_confirmed_in_the_stream() -> None:
    async with simulated() as (platform, _):
        await platform.execute([open_account()])
        freeze = DisableTrading(command_id="f1", account_id="a", reason="r", caused_by="x")

        assert await platform.execute([freeze]) == [DONE]

        events = decoded(await platform.fetch(100))
        assert [e.command_id for e in events if isinstance(e, TradingDisabled)] == ["f1"]
        assert (await platform.account_state("a")).enabled is False


async def test_simulated_platform_when_market_open_then_it_advances_in_real_time() -> None:
    config = SimulatorConfig(seed=3, ticks_per_second=200.0)
    async with simulated(config) as (platform, _):
        ticks = await eventually(lambda: platform.fetch(1_000), until=lambda got: len(got) > 10)

    assert decoded(ticks)


async def test_execute_when_over_the_rate_limit_then_rate_limited_with_retry_after() -> None:
    async with simulated(requests_per_second=0.5, burst=1) as (platform, _):
        await platform.execute([open_account()])

        with pytest.raises(RateLimited) as limited:
            await platform.execute([deposit()])

        assert limited.value.retry_after_s == 2.0
        assert await platform.fetch(10)  # the event stream is not limited
        assert (await platform.report()).rate_limited == 1


async def test_http_when_rate_limited_then_429_problem_with_retry_after_header() -> None:
    server = SimulatorServer(QUIET, requests_per_second=0.5, burst=1)
    async with serving(server) as url, aiohttp.ClientSession() as session:
        async with session.get(f"{url}/v1/accounts/a") as first:
            assert first.status == 404  # let through: there is no such account
        async with session.get(f"{url}/v1/accounts/a") as response:
            body = await response.json(content_type="application/problem+json")

    assert response.status == 429
    assert response.headers["Retry-After"] == "2"
    assert body["status"] == 429


async def test_execute_when_server_answers_503_then_unavailable_and_not_carried_out() -> None:
    async with simulated(faults=Faults(unavailable=1.0)) as (platform, server):
        with pytest.raises(Unavailable):
            await platform.execute([open_account()])

        assert server.sim.accounts == {}


async def test_execute_when_connection_dropped_then_unavailable_yet_carried_out_once() -> None:
    async with simulated(faults=Faults(dropped=1.0)) as (platform, server):
        with pytest.raises(Unavailable):
            await platform.execute([open_account(), deposit()])
        assert server.sim.accounts["a"].balance == 5_100

        server.faults = Faults()
        assert await platform.execute([open_account(), deposit()]) == [DONE, DONE]

        assert server.sim.accounts["a"].balance == 5_100
        assert len(await platform.history("a", 0)) == 2


@pytest.mark.parametrize("query", ["account_state", "positions", "history"])
async def test_query_when_account_unknown_then_refused(query: str) -> None:
    async with simulated() as (platform, _):
        method = getattr(platform, query)
        args = ("ghost", 0) if query == "history" else ("ghost",)

        with pytest.raises(Refused, match="ghost"):
            await method(*args)


async def test_execute_when_request_too_large_then_refused() -> None:
    commands = [open_account(f"a{i}", f"open:{i}") for i in range(MAX_COMMANDS + 1)]
    async with simulated() as (platform, server):
        with pytest.raises(Refused):
            await platform.execute(commands)

        assert server.sim.accounts == {}


async def test_account_when_id_has_a_slash_then_addressed_as_one_segment() -> None:
    async with simulated() as (platform, _):
        await platform.execute([open_account("desk/7", "open:desk")])

        assert (await platform.account_state("desk/7")).account_id == "desk/7"


async def problem_for(method: str, path: str, body: bytes = b"") -> tuple[int, str, Any]:
    async with (
        serving(SimulatorServer(QUIET)) as url,
        aiohttp.ClientSession() as session,
        session.request(method, url + path, data=body) as response,
    ):
        return response.status, response.content_type, await response.json(content_type=None)


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        (b'[{"type": "balance_operation", "command_id": "c", "account_id": "a", '
         b'"kind": "deposit", "amount_cents": -1}]', "#/0"),  # the message names the field
        (b'[{"type": "disable_trading", "command_id": "c", "account_id": "a", "reason": "r"}]',
         "#/0/caused_by"),
        (b'[{"type": "launch", "command_id": "c", "account_id": "a"}]', "#/0/type"),
        (b"{not json", "#"),
    ],
    ids=["negative", "missing", "unknown-type", "not-json"],
)  # fmt: skip
async def test_commands_when_body_invalid_then_400_problem_naming_the_field(
    body: bytes, pointer: str
) -> None:
    status, content_type, problem = await problem_for("POST", "/v1/commands", body)

    assert (status, content_type) == (400, "application/problem+json")
    assert problem["status"] == 400
    assert [error["pointer"] for error in problem["errors"]] == [pointer]


@pytest.mark.parametrize(
    ("path", "parameter"),
    [("/v1/events?max=x", "max"), ("/v1/events?max=0", "max"), ("/v1/accounts?ids=,", "ids"),
     ("/v1/accounts", "ids"), ("/v1/accounts?ids=" + ",".join(["a"] * 1001), "ids")],
)  # fmt: skip
async def test_query_parameter_when_invalid_then_400_problem_naming_it(
    path: str, parameter: str
) -> None:
    status, content_type, problem = await problem_for("GET", path)

    assert (status, content_type) == (400, "application/problem+json")
    assert problem["errors"][0]["parameter"] == parameter
    assert parameter in problem["detail"]


async def test_account_states_when_batch_asked_then_one_request_and_unknown_ones_left_out() -> None:
    async with simulated(requests_per_second=1.0, burst=1) as (client, server):
        server.sim.provision(["a", "b"])

        states = await client.account_states(["b", "nobody", "a", "b"])

        assert [s.account_id for s in states] == ["b", "a"]
        assert states[1] == server._account_state("a")
        with pytest.raises(RateLimited):  # that was one request: the only token is spent
            await client.account_states(["a"])


async def test_http_when_path_unknown_then_404_problem() -> None:
    status, content_type, problem = await problem_for("GET", "/v1/nothing")

    assert (status, content_type, problem["status"]) == (404, "application/problem+json", 404)


async def test_inject_when_malformed_event_then_fetched_exactly_as_injected() -> None:
    injected = [b'{"type":"tick","event_id":"n:1"}', b"[1,2]"]
    async with simulated() as (platform, _):
        await platform.inject(injected)

        assert await platform.fetch(10) == injected


async def test_simulated_platform_when_server_unreachable_then_unavailable() -> None:
    async with serving(SimulatorServer(QUIET)) as url:
        pass  # the port is closed again
    async with SimulatedPlatform(url) as platform:
        with pytest.raises(Unavailable):
            await platform.fetch(10)


async def test_simulated_platform_when_answer_too_slow_then_unavailable() -> None:
    slow = Faults(latency_ms=(500.0, 500.0))
    async with simulated(faults=slow, timeout_s=0.05) as (platform, _):
        with pytest.raises(Unavailable):
            await platform.account_state("a")


def test_retry_after_when_seconds_or_http_date_then_seconds_to_wait() -> None:
    in_ten_s = email.utils.formatdate(time.time() + 10, usegmt=True)

    assert retry_after("3") == 3.0
    assert retry_after(in_ten_s) == pytest.approx(10, abs=1.5)
    assert retry_after("soon") is None
    assert retry_after(None) is None
