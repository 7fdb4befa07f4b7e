"""The Match-Trader Broker API adapter against a stub server on loopback
(tests/unit/bridge/adapters/matchtrader_stub.py)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import msgspec
import pytest
from aiohttp.test_utils import TestServer

from bridge.adapters._http import UNSUPPORTED, retry_after
from bridge.adapters.matchtrader import MatchTraderBrokerApi, MatchTraderConfig
from bridge.codec import decode_messages
from bridge.commands import (
    CloseAllPositions,
    DisableTrading,
    EnableTrading,
    OperateBalance,
    ProvisionAccount,
)
from bridge.events import (
    BalanceKind,
    BalanceOperated,
    DealEntry,
    DealExecuted,
    Side,
    TradingDisabled,
)
from bridge.platform import DONE, RateLimited, Refused, Unavailable
from tests.unit.bridge.adapters.matchtrader_stub import MatchTraderStub

T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
T0_NS = int(T0.timestamp()) * 1_000_000_000


class MatchTrader:
    """The stub, its loopback server, and an adapter configured for it."""

    def __init__(self, stub: MatchTraderStub, server: TestServer) -> None:
        self.stub = stub
        self.server = server
        self.adapter = self.connect()

    def connect(self, **overrides: object) -> MatchTraderBrokerApi:
        fields: dict[str, object] = {
            "server": "mtr-test",
            "base_url": str(self.server.make_url("")),
            "api_key": self.stub.api_key,
            "system_uuid": self.stub.system_uuid,
            "payment_gateway_uuid": self.stub.gateway_uuid,
            "user_account_uuid": self.stub.user_account_uuid,
            "poll_interval_s": 0.0,
            "start_ns": T0_NS,
            "timeout_s": 2.0,
            "requests_per_minute": 60_000,
        }
        fields.update(overrides)
        return MatchTraderBrokerApi(msgspec.convert(fields, MatchTraderConfig))


@pytest.fixture
async def mtr() -> AsyncIterator[MatchTrader]:
    stub = MatchTraderStub()
    server = TestServer(stub.app())
    await server.start_server()
    world = MatchTrader(stub, server)
    yield world
    await world.adapter.close()
    await server.close()


def provision(account_id: str = "700001") -> ProvisionAccount:
    return ProvisionAccount(
        command_id=f"provision:{account_id}",
        account_id=account_id,
        group="prop\\challenge",
        leverage=100,
        deposit_cents=10_000_000,
        name="Trader One",
    )


def trades(stub: MatchTraderStub, login: str) -> None:
    """A deposit, then a buy opened and closed with profit."""
    stub.add_ledger(login, "DEPOSIT", 100_000.0, T0, "initial")
    stub.open_position(login, "31001", T0 + dt.timedelta(minutes=1))
    stub.close_position(login, "31001", T0 + dt.timedelta(minutes=2), 1.1025, 250.0)


async def test_provision_when_login_is_new_then_account_created_with_our_login_and_deposit(
    mtr: MatchTrader,
) -> None:
    codes = await mtr.adapter.execute([provision()])

    assert codes == [DONE]
    [created] = mtr.stub.created
    assert (created["login"], created["group"], created["leverageRatioPercent"]) == (
        "700001",
        "prop\\challenge",
        10_000,
    )
    [(path, payment)] = mtr.stub.payments
    assert path == "/v1/deposits/manual"
    assert (payment["amount"], payment["comment"]) == (100_000.0, "provision:700001")
    assert payment["paymentGatewayUuid"] == mtr.stub.gateway_uuid
    assert "700001" in mtr.adapter.logins  # polled from now on


async def test_provision_when_resent_then_no_second_account_and_no_second_deposit(
    mtr: MatchTrader,
) -> None:
    assert await mtr.adapter.execute([provision(), provision()]) == [DONE, DONE]

    assert len(mtr.stub.created) == 1
    assert len(mtr.stub.payments) == 1
    assert mtr.stub.accounts["700001"]["financeInfo"]["balance"] == 100_000.0


async def test_provision_when_no_user_account_configured_then_unsupported(
    mtr: MatchTrader,
) -> None:
    adapter = mtr.connect(user_account_uuid=None)
    try:
        assert await adapter.execute([provision()]) == [UNSUPPORTED]
    finally:
        await adapter.close()
    assert mtr.stub.created == []


async def test_disable_when_account_trades_then_access_right_patched_and_confirmed(
    mtr: MatchTrader,
) -> None:
    mtr.stub.add_account("700002", balance=1_000.0)
    freeze = DisableTrading(
        command_id="freeze:700002:e1",
        account_id="700002",
        reason="daily_loss",
        caused_by="mtr-test:close:co-1",
    )

    codes = await mtr.adapter.execute([freeze])
    events, _ = decode_messages(await mtr.adapter.fetch(10))

    assert codes == [DONE]
    assert mtr.stub.patches == [{"accessRight": "TRADING_DISABLED", "version": 3}]
    assert [type(e) for e in events] == [TradingDisabled]
    assert (await mtr.adapter.account_state("700002")).enabled is False


async def test_disable_when_version_moved_meanwhile_then_read_again_and_done(
    mtr: MatchTrader,
) -> None:
    mtr.stub.add_account("700003")
    mtr.stub.version_conflicts = 1
    freeze = DisableTrading(
        command_id="freeze:700003", account_id="700003", reason="max_loss", caused_by="e"
    )

    assert await mtr.adapter.execute([freeze]) == [DONE]
    assert mtr.stub.accounts["700003"]["accessRight"] == "TRADING_DISABLED"
    assert len(mtr.stub.patches) == 2


async def test_enable_when_account_was_disabled_then_full_access(mtr: MatchTrader) -> None:
    mtr.stub.add_account("700004", access="TRADING_DISABLED")

    codes = await mtr.adapter.execute(
        [EnableTrading(command_id="resume:700004", account_id="700004", reason="new day")]
    )

    assert codes == [DONE]
    assert mtr.stub.accounts["700004"]["accessRight"] == "FULL"


async def test_balance_when_withdrawal_then_manual_withdrawal_through_gateway(
    mtr: MatchTrader,
) -> None:
    mtr.stub.add_account("700005", balance=1_000.0)
    payout = OperateBalance(
        command_id="payout:700005:1",
        account_id="700005",
        kind=BalanceKind.WITHDRAWAL,
        amount_cents=25_050,
    )

    assert await mtr.adapter.execute([payout, payout]) == [DONE, DONE]
    assert [p for p, _ in mtr.stub.payments] == ["/v1/withdrawals/manual"]
    assert mtr.stub.accounts["700005"]["financeInfo"]["balance"] == 749.5


async def test_balance_when_credit_then_credit_in(mtr: MatchTrader) -> None:
    mtr.stub.add_account("700006")
    credit = OperateBalance(
        command_id="credit:700006", account_id="700006", kind=BalanceKind.CREDIT, amount_cents=5_000
    )

    assert await mtr.adapter.execute([credit]) == [DONE]
    assert mtr.stub.accounts["700006"]["financeInfo"]["credit"] == 50.0


async def test_balance_when_payment_rejected_then_unprocessable_code(mtr: MatchTrader) -> None:
    mtr.stub.add_account("700007")
    mtr.stub.payment_status = "REJECTED"
    deposit = OperateBalance(
        command_id="dep:700007", account_id="700007", kind=BalanceKind.DEPOSIT, amount_cents=100
    )

    assert await mtr.adapter.execute([deposit]) == [422]


async def test_balance_when_not_enough_money_then_http_status_code(mtr: MatchTrader) -> None:
    mtr.stub.add_account("700008", balance=10.0)
    payout = OperateBalance(
        command_id="payout:700008",
        account_id="700008",
        kind=BalanceKind.WITHDRAWAL,
        amount_cents=5_000,
    )

    assert await mtr.adapter.execute([payout]) == [422]


async def test_history_when_trades_exist_then_canonical_events_with_stable_ids(
    mtr: MatchTrader,
) -> None:
    mtr.stub.add_account("700009")
    trades(mtr.stub, "700009")

    first = await mtr.adapter.history("700009", T0_NS)
    second = await mtr.adapter.history("700009", T0_NS)
    events, rejected = decode_messages(first)

    assert first == second
    assert rejected == []
    deposit, opened, closed = events
    assert isinstance(deposit, BalanceOperated)
    assert deposit.amount == 100_000.0
    assert deposit.ts_ns == T0_NS
    assert isinstance(opened, DealExecuted)
    assert isinstance(closed, DealExecuted)
    assert (opened.event_id, opened.entry, opened.side, opened.position_id) == (
        "mtr-test:open:31001",
        DealEntry.IN,
        Side.BUY,
        31001,
    )
    assert (closed.event_id, closed.entry, closed.side) == (
        "mtr-test:close:co-31001",
        DealEntry.OUT,
        Side.SELL,
    )
    assert (closed.profit, closed.commission, closed.swap, closed.price) == (
        250.0,
        -7.0,
        -1.25,
        1.1025,
    )
    assert deposit.deal_id < opened.deal_id < closed.deal_id  # one time-ordered sequence


async def test_fetch_when_positions_open_and_close_then_each_deal_returned_once(
    mtr: MatchTrader,
) -> None:
    mtr.stub.add_account("700010")
    adapter = mtr.connect(logins=("700010",))
    now = dt.datetime.now(dt.UTC)  # the poll window follows the wall clock
    try:
        mtr.stub.add_ledger("700010", "DEPOSIT", 10_000.0, now - dt.timedelta(seconds=9))
        mtr.stub.open_position("700010", "32001", now - dt.timedelta(seconds=5))
        first, _ = decode_messages(await adapter.fetch(100))
        assert await adapter.fetch(100) == []
        mtr.stub.close_position("700010", "32001", now, 1.1, -40.0)
        later, _ = decode_messages(await adapter.fetch(100))
    finally:
        await adapter.close()

    assert [type(e).__name__ for e in first] == ["BalanceOperated", "DealExecuted"]
    assert [(e.entry, e.profit) for e in later] == [(DealEntry.OUT, -40.0)]


async def test_account_state_when_read_then_money_in_cents(mtr: MatchTrader) -> None:
    mtr.stub.add_account("700011", balance=26_000.0)
    mtr.stub.accounts["700011"]["financeInfo"].update(equity=25_993.56, credit=150.25)

    state = await mtr.adapter.account_state("700011")

    assert (state.balance_cents, state.credit_cents, state.equity_cents) == (
        2_600_000,
        15_025,
        2_599_356,
    )
    assert (state.currency, state.enabled) == ("USD", True)


async def test_positions_when_open_then_listed_with_profit_in_cents(mtr: MatchTrader) -> None:
    mtr.stub.add_account("700012")
    mtr.stub.open_position("700012", "33001", T0, side="SELL", volume=0.25, profit=-12.34)

    [position] = await mtr.adapter.positions("700012")

    assert (position.position_id, position.side, position.volume, position.profit_cents) == (
        33001,
        Side.SELL,
        0.25,
        -1234,
    )


async def test_close_all_when_positions_open_then_one_close_request_with_all(
    mtr: MatchTrader,
) -> None:
    mtr.stub.add_account("700013")
    mtr.stub.open_position("700013", "34001", T0)
    mtr.stub.open_position("700013", "34002", T0, symbol="GBPUSD")

    codes = await mtr.adapter.execute(
        [CloseAllPositions(command_id="flat:700013", account_id="700013", reason="max_loss")]
    )

    assert codes == [DONE]
    assert mtr.stub.closes[0]["closePositions"] == [
        {"positionId": "34001", "instrument": "EURUSD"},
        {"positionId": "34002", "instrument": "GBPUSD"},
    ]
    assert await mtr.adapter.positions("700013") == []


async def test_request_when_429_with_retry_after_then_rate_limited_with_its_delay(
    mtr: MatchTrader,
) -> None:
    mtr.stub.add_account("700014")
    mtr.stub.rate_limited = 1

    with pytest.raises(RateLimited) as raised:
        await mtr.adapter.positions("700014")
    assert raised.value.retry_after_s == 7.0
    assert await mtr.adapter.positions("700014") == []


async def test_request_when_server_answers_500_then_unavailable(mtr: MatchTrader) -> None:
    mtr.stub.http_status = 500

    with pytest.raises(Unavailable):
        await mtr.adapter.positions("700015")


async def test_request_when_server_is_too_slow_then_unavailable(mtr: MatchTrader) -> None:
    adapter = mtr.connect(timeout_s=0.2)
    mtr.stub.delay_s = 1.0
    try:
        with pytest.raises(Unavailable):
            await adapter.positions("700016")
    finally:
        await adapter.close()


async def test_request_when_api_key_is_wrong_then_refused(mtr: MatchTrader) -> None:
    adapter = mtr.connect(api_key="not-the-key")
    try:
        with pytest.raises(Refused):
            await adapter.positions("700017")
    finally:
        await adapter.close()


async def test_command_when_login_does_not_exist_then_404_for_that_command(
    mtr: MatchTrader,
) -> None:
    mtr.stub.add_account("700018")
    deposit = OperateBalance(
        command_id="dep:x", account_id="799999", kind=BalanceKind.DEPOSIT, amount_cents=100
    )
    flat = CloseAllPositions(command_id="flat:700018", account_id="700018", reason="max_loss")

    assert await mtr.adapter.execute([deposit, flat]) == [404, DONE]


def test_retry_after_when_given_as_http_date_then_seconds_from_now() -> None:
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=90)

    seconds = retry_after(later.strftime("%a, %d %b %Y %H:%M:%S GMT"))

    assert seconds is not None
    assert 85 <= seconds <= 90
    assert retry_after("7") == 7.0
    assert retry_after("soon") is None
