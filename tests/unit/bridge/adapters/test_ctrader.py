"""The cTrader Open API adapter against a stub server on loopback: WebSocket JSON and the
WebServices REST calls (tests/unit/bridge/adapters/ctrader_stub.py)."""

from __future__ import annotations

import pickle
import time
from collections.abc import AsyncIterator

import msgspec
import pytest
from aiohttp.test_utils import TestServer

from bridge.adapters._http import UNSUPPORTED
from bridge.adapters.ctrader import (
    CTraderConfig,
    CTraderNotFound,
    CTraderOpenApi,
    _Error,
    _platform_error,
)
from bridge.adapters.mt5 import Mt5NotFound
from bridge.codec import decode_messages
from bridge.commands import (
    CloseAllPositions,
    DisableTrading,
    EnableTrading,
    OperateBalance,
    ProvisionAccount,
)
from bridge.events import BalanceKind, BalanceOperated, DealEntry, DealExecuted, Side
from bridge.platform import DONE, NotFound, RateLimited, Refused, Unavailable
from tests.conftest import eventually
from tests.unit.bridge.adapters.ctrader_stub import CTraderStub

T0_MS = 1_772_442_000_000  # 2026-03-02T09:00:00Z
CTID, LOGIN = 44_001, "8035344"


class CTrader:
    """The stub, its loopback server, and an adapter configured for it."""

    def __init__(self, stub: CTraderStub, server: TestServer) -> None:
        self.stub = stub
        self.server = server
        self.adapter = self.connect()

    def connect(self, **overrides: object) -> CTraderOpenApi:
        fields: dict[str, object] = {
            "server": "ct-test",
            "url": str(self.server.make_url("/")).replace("http://", "ws://"),
            "client_id": self.stub.client_id,
            "client_secret": self.stub.client_secret,
            "access_token": self.stub.access_token,
            "accounts": {LOGIN: CTID},
            "timeout_s": 2.0,
            "history_requests_per_second": 1000.0,
            "webservices": {
                "base_url": str(self.server.make_url("/v2")),
                "manager_login": self.stub.manager_login,
                "manager_password": self.stub.manager_password,
            },
        }
        fields.update(overrides)
        return CTraderOpenApi(msgspec.convert(fields, CTraderConfig))


@pytest.fixture
async def ctrader() -> AsyncIterator[CTrader]:
    stub = CTraderStub()
    stub.add_trader(CTID, LOGIN, balance_cents=10_000_000)
    server = TestServer(stub.app())
    await server.start_server()
    world = CTrader(stub, server)
    yield world
    await world.adapter.close()
    await server.close()


def round_trip(stub: CTraderStub) -> tuple[dict[str, object], ...]:
    """A deposit, then a buy of 1 lot opened and closed with profit (deals and cash flow)."""
    deposit = stub.flow(CTID, 0, 10_000_000, T0_MS)
    opened = stub.deal(CTID, 501, 1, T0_MS + 60_000, 1.1)
    closed = stub.deal(CTID, 501, 2, T0_MS + 120_000, 1.1025, closing={"grossProfit": 25_000})
    return deposit, opened, closed


async def fetched(adapter: CTraderOpenApi, count: int) -> list[bytes]:
    """Fetch until `count` events came in (the stub pushes them asynchronously)."""
    got: list[bytes] = []

    async def more() -> list[bytes]:
        got.extend(await adapter.fetch(100))
        return got

    return await eventually(more, lambda g: len(g) >= count, timeout_s=5)


async def test_fetch_when_executions_pushed_then_canonical_deals_and_balance_operations(
    ctrader: CTrader,
) -> None:
    await ctrader.adapter.fetch(10)  # connects and authorizes
    deposit, opened, closed = round_trip(ctrader.stub)
    await ctrader.stub.push(CTID, 10, depositWithdraw=deposit)
    await ctrader.stub.push(CTID, 3, deal=opened)
    await ctrader.stub.push(CTID, 2, deal={**opened, "dealStatus": 2})  # accepted: no deal
    await ctrader.stub.push(CTID, 3, deal=closed)

    events, rejected = decode_messages(await fetched(ctrader.adapter, 3))

    assert rejected == []
    money, buy, sell = events
    assert isinstance(money, BalanceOperated)
    assert (money.account_id, money.kind, money.amount) == (LOGIN, BalanceKind.DEPOSIT, 100_000.0)
    assert isinstance(buy, DealExecuted)
    assert isinstance(sell, DealExecuted)
    assert (buy.symbol, buy.volume, buy.entry, buy.side, buy.commission) == (
        "EURUSD",
        1.0,
        DealEntry.IN,
        Side.BUY,
        -3.5,
    )
    assert (sell.entry, sell.side, sell.profit, sell.swap, sell.position_id) == (
        DealEntry.OUT,
        Side.SELL,
        250.0,
        -1.2,
        501,
    )
    assert sell.ts_ns == (T0_MS + 120_000) * 1_000_000


async def test_history_when_deals_and_cash_flows_exist_then_same_events_and_ids_as_stream(
    ctrader: CTrader,
) -> None:
    await ctrader.adapter.fetch(10)
    deposit, opened, closed = round_trip(ctrader.stub)
    for kind, field, record in (
        (10, "depositWithdraw", deposit),
        (3, "deal", opened),
        (3, "deal", closed),
    ):
        await ctrader.stub.push(CTID, kind, **{field: record})
    streamed = await fetched(ctrader.adapter, 3)

    first = await ctrader.adapter.history(LOGIN, T0_MS * 1_000_000)
    second = await ctrader.adapter.history(LOGIN, T0_MS * 1_000_000)

    assert first == second == streamed
    ids = [e.event_id for e in decode_messages(first)[0]]
    assert ids[0] == f"ct-test:balance:{deposit['balanceHistoryId']}"
    assert ids[1:] == [f"ct-test:deal:{opened['dealId']}", f"ct-test:deal:{closed['dealId']}"]


async def test_history_when_weeks_long_then_cash_flow_asked_one_week_at_a_time(
    ctrader: CTrader,
) -> None:
    now_ms = time.time_ns() // 1_000_000
    old = ctrader.stub.flow(CTID, 1, 5_000, now_ms - 20 * 86_400_000)

    events, _ = decode_messages(
        await ctrader.adapter.history(LOGIN, (now_ms - 30 * 86_400_000) * 10**6)
    )

    assert [(e.kind, e.amount) for e in events] == [(BalanceKind.WITHDRAWAL, -50.0)]
    assert events[0].event_id == f"ct-test:balance:{old['balanceHistoryId']}"
    assert ctrader.stub.requests.count(2143) == 5  # 30 days in windows of at most 7


async def test_account_state_when_read_then_money_scaled_by_money_digits_into_cents(
    ctrader: CTrader,
) -> None:
    ctrader.stub.add_trader(44_002, "8035345", balance_cents=2_600_000, digits=8)
    ctrader.stub.open_position(44_002, 601, pnl=-644)
    adapter = ctrader.connect(accounts={"8035345": 44_002})
    try:
        state = await adapter.account_state("8035345")
    finally:
        await adapter.close()

    assert (state.currency, state.balance_cents, state.equity_cents, state.credit_cents) == (
        "USD",
        2_600_000,
        2_599_356,
        0,
    )
    assert state.enabled is True


async def test_positions_when_open_then_lots_and_unrealized_profit_in_cents(
    ctrader: CTrader,
) -> None:
    ctrader.stub.open_position(CTID, 701, side=2, volume=2_500_000, pnl=-1_234)

    [position] = await ctrader.adapter.positions(LOGIN)

    assert (position.position_id, position.symbol, position.side, position.volume) == (
        701,
        "EURUSD",
        Side.SELL,
        0.25,
    )
    assert position.profit_cents == -1_234


async def test_close_all_when_positions_open_then_each_closed_and_stale_ones_count_as_done(
    ctrader: CTrader,
) -> None:
    ctrader.stub.open_position(CTID, 801)
    ctrader.stub.open_position(CTID, 802, side=2)
    flat = CloseAllPositions(command_id="flat:1", account_id=LOGIN, reason="max_loss")

    assert await ctrader.adapter.execute([flat]) == [DONE]
    assert ctrader.stub.positions[CTID] == []
    closing, _ = decode_messages(await ctrader.adapter.fetch(10))
    assert [(e.position_id, e.entry) for e in closing] == [
        (801, DealEntry.OUT),
        (802, DealEntry.OUT),
    ]

    ctrader.stub.stale[CTID].append(  # listed by reconcile, closed meanwhile: POSITION_NOT_FOUND
        {"positionId": 803, "tradeData": {"symbolId": 1, "volume": 100, "tradeSide": 1}}
    )
    assert await ctrader.adapter.execute([flat]) == [DONE]


async def test_manager_commands_when_open_api_has_none_then_unsupported_and_nothing_sent(
    ctrader: CTrader,
) -> None:
    await ctrader.adapter.fetch(10)
    sent = len(ctrader.stub.requests)
    commands = [
        DisableTrading(command_id="f", account_id=LOGIN, reason="daily_loss", caused_by="e"),
        EnableTrading(command_id="r", account_id=LOGIN, reason="new day"),
        ProvisionAccount(
            command_id="p", account_id=LOGIN, group="g", leverage=100, deposit_cents=1
        ),
        OperateBalance(command_id="c", account_id=LOGIN, kind=BalanceKind.CREDIT, amount_cents=1),
    ]

    assert await ctrader.adapter.execute(commands) == [UNSUPPORTED] * 4
    assert len(ctrader.stub.requests) == sent


async def test_balance_when_webservices_configured_then_changebalance_once_per_command(
    ctrader: CTrader,
) -> None:
    payout = OperateBalance(
        command_id="payout:1", account_id=LOGIN, kind=BalanceKind.WITHDRAWAL, amount_cents=25_050
    )

    assert await ctrader.adapter.execute([payout, payout]) == [DONE, DONE]
    [change] = ctrader.stub.balance_changes
    assert (change["login"], change["type"], change["preciseAmount"]) == (
        int(LOGIN),
        "WITHDRAW",
        250.5,
    )
    assert change["externalNote"] == change["comment"] == "payout:1"


async def test_balance_when_not_enough_money_then_http_status_code(ctrader: CTrader) -> None:
    payout = OperateBalance(
        command_id="payout:2", account_id=LOGIN, kind=BalanceKind.WITHDRAWAL, amount_cents=10**12
    )

    assert await ctrader.adapter.execute([payout]) == [400]


async def test_balance_when_no_webservices_configured_then_unsupported(ctrader: CTrader) -> None:
    adapter = ctrader.connect(webservices=None)
    deposit = OperateBalance(
        command_id="dep", account_id=LOGIN, kind=BalanceKind.DEPOSIT, amount_cents=100
    )
    try:
        assert await adapter.execute([deposit]) == [UNSUPPORTED]
    finally:
        await adapter.close()


async def test_request_when_frequency_exceeded_then_rate_limited(ctrader: CTrader) -> None:
    await ctrader.adapter.fetch(10)
    ctrader.stub.frequency_exceeded = 1

    with pytest.raises(RateLimited):
        await ctrader.adapter.positions(LOGIN)
    assert await ctrader.adapter.positions(LOGIN) == []


async def test_request_when_payload_type_blocked_then_rate_limited_with_retry_after(
    ctrader: CTrader,
) -> None:
    await ctrader.adapter.fetch(10)
    ctrader.stub.blocked_for_s = 3

    with pytest.raises(RateLimited) as raised:
        await ctrader.adapter.account_state(LOGIN)
    assert raised.value.retry_after_s == 3


async def test_connect_when_client_secret_is_wrong_then_refused(ctrader: CTrader) -> None:
    adapter = ctrader.connect(client_secret="not-the-secret")
    try:
        with pytest.raises(Refused, match="CH_CLIENT_AUTH_FAILURE"):
            await adapter.fetch(10)
    finally:
        await adapter.close()


async def test_connect_when_access_token_is_wrong_then_refused(ctrader: CTrader) -> None:
    adapter = ctrader.connect(access_token="expired")
    try:
        with pytest.raises(Refused, match="CH_ACCESS_TOKEN_INVALID"):
            await adapter.positions(LOGIN)
    finally:
        await adapter.close()


async def test_request_when_server_drops_the_socket_then_unavailable_and_next_call_reconnects(
    ctrader: CTrader,
) -> None:
    await ctrader.adapter.fetch(10)
    ctrader.stub.drop_next = True

    with pytest.raises(Unavailable):
        await ctrader.adapter.positions(LOGIN)
    assert await ctrader.adapter.positions(LOGIN) == []
    assert ctrader.stub.requests.count(2100) == 2  # authorized again on a new socket


async def test_request_when_server_does_not_answer_then_unavailable(ctrader: CTrader) -> None:
    adapter = ctrader.connect(timeout_s=0.3)
    try:
        await adapter.fetch(10)
        ctrader.stub.silent = True
        with pytest.raises(Unavailable):
            await adapter.positions(LOGIN)
    finally:
        await adapter.close()


async def test_connect_when_server_is_down_then_unavailable(ctrader: CTrader) -> None:
    adapter = ctrader.connect(url="ws://127.0.0.1:9/")  # discard port: nothing listens
    try:
        with pytest.raises(Unavailable):
            await adapter.fetch(10)
    finally:
        await adapter.close()


async def test_webservices_when_server_answers_502_then_unavailable(ctrader: CTrader) -> None:
    ctrader.stub.webserv_status = 502
    ctrader.stub.flows[CTID].clear()
    deposit = OperateBalance(
        command_id="dep:502", account_id=LOGIN, kind=BalanceKind.DEPOSIT, amount_cents=100
    )

    with pytest.raises(Unavailable):
        await ctrader.adapter.execute([deposit])


async def test_command_when_account_not_configured_then_unknown_account_code(
    ctrader: CTrader,
) -> None:
    flat = CloseAllPositions(command_id="flat:x", account_id="999", reason="max_loss")

    assert await ctrader.adapter.execute([flat]) == [106]  # CH_CTID_TRADER_ACCOUNT_NOT_FOUND


async def test_account_state_when_account_not_configured_then_not_found(ctrader: CTrader) -> None:
    with pytest.raises(NotFound, match="not configured"):
        await ctrader.adapter.account_state("999")


def test_platform_error_when_server_has_no_such_trader_then_not_found() -> None:
    found = _platform_error(_Error(error_code="CH_CTID_TRADER_ACCOUNT_NOT_FOUND", description="x"))
    refused = _platform_error(_Error(error_code="ACCOUNT_NOT_AUTHORIZED", description="x"))

    assert isinstance(found, NotFound)
    assert isinstance(refused, Refused)
    assert not isinstance(refused, NotFound)


def test_refusals_when_pickled_across_an_actor_boundary_then_the_same_type_and_message() -> None:
    for error in (CTraderNotFound("CH_CTID_TRADER_ACCOUNT_NOT_FOUND", "x"),
                  Mt5NotFound("MT5 /api/user/get {}", 13)):  # fmt: skip
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error)
        assert isinstance(copy, NotFound)
        assert str(copy) == str(error)
