"""The MT5 Web API adapter against a stub server on loopback
(tests/unit/bridge/adapters/mt5_stub.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
import pytest
from aiohttp.test_utils import TestServer

from bridge.adapters.mt5 import USER_RIGHT_TRADE_DISABLED, Mt5Config, Mt5WebApi, ServerClock
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
from tests.unit.bridge.adapters.mt5_stub import Mt5Stub

T0_S = 1_772_442_000  # 2026-03-02T09:00:00Z
T0 = T0_S * 1_000_000_000


class Mt5:
    """The stub, its loopback server, and an adapter logged in to it."""

    def __init__(self, stub: Mt5Stub, server: TestServer) -> None:
        self.stub = stub
        self.server = server
        self.adapter = self.connect()

    def connect(self, **overrides: object) -> Mt5WebApi:
        """Another adapter on the same stub (its own session), with config overrides."""
        fields: dict[str, object] = {
            "server": "mt5-test",
            "base_url": str(self.server.make_url("")),
            "login": self.stub.manager_login,
            "password": self.stub.password,
            "poll_interval_s": 0.0,
            "start_ns": T0,
            "timeout_s": 2.0,
        }
        fields.update(overrides)
        return Mt5WebApi(msgspec.convert(fields, Mt5Config))


@pytest.fixture
async def mt5() -> AsyncIterator[Mt5]:
    stub = Mt5Stub()
    server = TestServer(stub.app())
    await server.start_server()
    world = Mt5(stub, server)
    yield world
    await world.adapter.close()
    await server.close()


def trades(stub: Mt5Stub, login: str) -> None:
    """A deposit, a buy opened and closed with profit, commission and swap."""
    stub.add_deal(login, 2, T0_S, Profit="100000.00", Comment="initial")
    stub.add_deal(
        login,
        0,
        T0_S + 60,
        Entry=0,
        Symbol="EURUSD",
        Price="1.10000",
        Volume=10000,
        VolumeExt=100000000,
        PositionID=7001,
        Commission="-3.50",
    )
    stub.add_deal(
        login,
        1,
        T0_S + 120,
        Entry=1,
        Symbol="EURUSD",
        Price="1.10250",
        Volume=10000,
        PositionID=7001,
        Profit="250.00",
        Storage="-1.20",
        Commission="-3.50",
    )


def provision(account_id: str = "5001", command_id: str = "provision:5001") -> ProvisionAccount:
    return ProvisionAccount(
        command_id=command_id,
        account_id=account_id,
        group="demo\\pv",
        leverage=100,
        deposit_cents=10_000_000,
        name="Trader One",
    )


async def test_provision_when_login_is_new_then_user_added_with_initial_deposit(
    mt5: Mt5,
) -> None:
    codes = await mt5.adapter.execute([provision()])

    assert codes == [DONE]
    query, body = mt5.stub.user_adds[0]
    assert query["login"] == "5001"
    assert query["leverage"] == "100"
    assert "pass_main" not in query
    assert body["PassMain"]
    assert body["PassInvestor"]
    assert mt5.stub.accounts["5001"]["Balance"] == "100000.00"
    assert [d["Comment"] for d in mt5.stub.deals] == ["provision:5001"]


async def test_provision_when_resent_then_no_second_account_and_no_second_deposit(
    mt5: Mt5,
) -> None:
    first = await mt5.adapter.execute([provision()])
    again = await mt5.adapter.execute([provision()])

    assert first == again == [DONE]
    assert len(mt5.stub.user_adds) == 2  # the second answered 3004 "exists"
    assert mt5.stub.accounts["5001"]["Balance"] == "100000.00"
    assert len(mt5.stub.deals) == 1


async def test_command_when_account_id_is_not_a_login_then_invalid_parameters_code(
    mt5: Mt5,
) -> None:
    codes = await mt5.adapter.execute([provision(account_id="acc-1")])

    assert codes == [3]  # MT_RET_ERR_PARAMS
    assert mt5.stub.user_adds == []


async def test_disable_when_account_trades_then_trade_disabled_bit_set_and_confirmed(
    mt5: Mt5,
) -> None:
    mt5.stub.add_user("5002", rights=0x163)
    freeze = DisableTrading(
        command_id="freeze:5002:e9",
        account_id="5002",
        reason="daily_loss",
        caused_by="mt5-test:deal:9",
    )

    codes = await mt5.adapter.execute([freeze])
    events, rejected = decode_messages(await mt5.adapter.fetch(10))

    assert codes == [DONE]
    assert int(mt5.stub.users["5002"]["Rights"]) == 0x163 | 0x4  # other rights kept
    assert rejected == []
    assert [(e.account_id, e.command_id) for e in events] == [("5002", "freeze:5002:e9")]
    state = await mt5.adapter.account_state("5002")
    assert state.enabled is False


async def test_enable_when_account_was_disabled_then_trade_disabled_bit_cleared(mt5: Mt5) -> None:
    mt5.stub.add_user("5003", rights=0x163 | 0x4)

    codes = await mt5.adapter.execute(
        [EnableTrading(command_id="resume:5003", account_id="5003", reason="new day")]
    )

    assert codes == [DONE]
    assert int(mt5.stub.users["5003"]["Rights"]) == 0x163
    assert (await mt5.adapter.account_state("5003")).enabled is True


async def test_balance_when_withdrawal_then_negative_balance_deal_with_command_comment(
    mt5: Mt5,
) -> None:
    mt5.stub.add_user("5004", balance=1_000.0)
    payout = OperateBalance(
        command_id="payout:5004:1",
        account_id="5004",
        kind=BalanceKind.WITHDRAWAL,
        amount_cents=25_050,
    )

    codes = await mt5.adapter.execute([payout])

    assert codes == [DONE]
    deal = mt5.stub.deals[-1]
    assert (deal["Action"], deal["Profit"], deal["Comment"]) == ("2", "-250.50", "payout:5004:1")
    assert mt5.stub.accounts["5004"]["Balance"] == "749.50"


async def test_balance_when_resent_then_carried_out_once(mt5: Mt5) -> None:
    mt5.stub.add_user("5005")
    deposit = OperateBalance(
        command_id="d" * 40, account_id="5005", kind=BalanceKind.DEPOSIT, amount_cents=100
    )

    assert await mt5.adapter.execute([deposit, deposit]) == [DONE, DONE]
    assert len(mt5.stub.deals) == 1
    assert len(mt5.stub.deals[0]["Comment"]) <= 31  # a long command id is digested to fit


async def test_balance_when_not_enough_money_then_platform_retcode(mt5: Mt5) -> None:
    mt5.stub.add_user("5006", balance=10.0)
    payout = OperateBalance(
        command_id="payout:5006", account_id="5006", kind=BalanceKind.WITHDRAWAL, amount_cents=5_000
    )

    assert await mt5.adapter.execute([payout]) == [10019]


async def test_history_when_deals_exist_then_canonical_events_with_stable_ids(mt5: Mt5) -> None:
    mt5.stub.add_user("5007")
    trades(mt5.stub, "5007")

    first = await mt5.adapter.history("5007", T0)
    second = await mt5.adapter.history("5007", T0)
    events, rejected = decode_messages(first)

    assert first == second
    assert rejected == []
    deposit, opened, closed = events
    assert isinstance(deposit, BalanceOperated)
    assert deposit.kind is BalanceKind.DEPOSIT
    assert deposit.amount == 100_000.0
    assert deposit.ts_ns == T0 + 250_000_000
    assert isinstance(opened, DealExecuted)
    assert isinstance(closed, DealExecuted)
    assert (opened.entry, opened.side, opened.volume, opened.position_id) == (
        DealEntry.IN,
        Side.BUY,
        1.0,
        7001,
    )
    assert (closed.entry, closed.side, closed.profit, closed.swap, closed.commission) == (
        DealEntry.OUT,
        Side.SELL,
        250.0,
        -1.2,
        -3.5,
    )
    assert [e.event_id for e in events] == [f"mt5-test:deal:{d['Deal']}" for d in mt5.stub.deals]
    assert [e.deal_id for e in events] == sorted(e.deal_id for e in events)


async def test_history_when_since_is_later_then_earlier_deals_left_out(mt5: Mt5) -> None:
    mt5.stub.add_user("5008")
    trades(mt5.stub, "5008")

    events, _ = decode_messages(await mt5.adapter.history("5008", T0 + 61 * 1_000_000_000))

    assert [e.entry for e in events] == [DealEntry.OUT]


async def test_fetch_when_new_deals_arrive_then_each_returned_once_oldest_first(
    mt5: Mt5,
) -> None:
    mt5.stub.add_user("5009")
    mt5.stub.add_user("5010")
    trades(mt5.stub, "5009")

    first = await mt5.adapter.fetch(100)
    assert await mt5.adapter.fetch(100) == []
    mt5.stub.add_deal("5010", 2, T0_S + 300, Profit="5000.00")
    later = await mt5.adapter.fetch(100)

    tickets = [msgspec.json.decode(m)["deal_id"] for m in first + later]
    assert tickets == sorted(int(d["Deal"]) for d in mt5.stub.deals)


async def test_fetch_when_more_deals_than_asked_then_rest_kept_for_next_fetch(mt5: Mt5) -> None:
    mt5.stub.add_user("5011")
    trades(mt5.stub, "5011")

    batches = [await mt5.adapter.fetch(2), await mt5.adapter.fetch(2)]

    assert [len(b) for b in batches] == [2, 1]


async def test_account_state_when_read_then_money_in_cents_and_group_currency(mt5: Mt5) -> None:
    mt5.stub.add_user("5012", balance=26_000.0)
    mt5.stub.accounts["5012"].update(Credit="150.25", Equity="25993.56")

    state = await mt5.adapter.account_state("5012")

    assert (state.balance_cents, state.credit_cents, state.equity_cents) == (
        2_600_000,
        15_025,
        2_599_356,
    )
    assert (state.currency, state.enabled) == ("USD", True)


async def test_account_states_when_batch_read_then_two_requests_and_unknown_logins_left_out(
    mt5: Mt5,
) -> None:
    mt5.stub.add_user("5012", balance=26_000.0)
    mt5.stub.add_user("5013", balance=100.0, rights=0x163 | USER_RIGHT_TRADE_DISABLED)
    mt5.stub.accounts["5012"].update(Equity="25993.56")

    states = await mt5.adapter.account_states(["5012", "5999", "5013", "not-a-login"])

    asked = [p for p in mt5.stub.paths if not p.startswith("/api/auth/")]
    assert asked == ["/api/user/account/get_batch", "/api/user/get_batch", "/api/group/get"]
    assert [(s.account_id, s.equity_cents, s.enabled) for s in states] == [
        ("5012", 2_599_356, True),
        ("5013", 10_000, False),
    ]
    assert states[0] == await mt5.adapter.account_state("5012")  # the same reading as one by one
    assert await mt5.adapter.account_states(["5998", "5999"]) == []


async def test_account_state_when_login_does_not_exist_then_not_found(mt5: Mt5) -> None:
    # Reconciliation reports such an account as missing on the platform, not as an error.
    with pytest.raises(NotFound, match="retcode 13"):
        await mt5.adapter.account_state("5999")


async def test_positions_when_open_then_lots_and_profit_in_cents(mt5: Mt5) -> None:
    mt5.stub.add_user("5013")
    mt5.stub.add_position("5013", 9001, Action=1, Volume=2500, VolumeExt=0, Profit="-12.34")

    [position] = await mt5.adapter.positions("5013")

    assert (position.position_id, position.side, position.volume, position.profit_cents) == (
        9001,
        Side.SELL,
        0.25,
        -1234,
    )


async def test_close_all_when_positions_open_then_dealer_closes_each_with_opposite_side(
    mt5: Mt5,
) -> None:
    mt5.stub.add_user("5014")
    mt5.stub.add_position("5014", 9101, Action=0)
    mt5.stub.add_position("5014", 9102, Action=1, Volume=500)

    codes = await mt5.adapter.execute(
        [CloseAllPositions(command_id="flat:5014", account_id="5014", reason="max_loss")]
    )

    assert codes == [DONE]
    sent = [(r["Action"], r["Position"], r["Type"], r["Volume"]) for r in mt5.stub.dealer_requests]
    assert sent == [("200", "9101", "1", "10000"), ("200", "9102", "0", "500")]
    assert await mt5.adapter.positions("5014") == []


async def test_request_when_server_answers_too_frequent_then_rate_limited(mt5: Mt5) -> None:
    mt5.stub.add_user("5015")
    mt5.stub.too_frequent = 1

    with pytest.raises(RateLimited):
        await mt5.adapter.account_state("5015")
    assert (await mt5.adapter.account_state("5015")).enabled is True


async def test_request_when_server_answers_503_then_unavailable(mt5: Mt5) -> None:
    mt5.stub.http_status = 503

    with pytest.raises(Unavailable):
        await mt5.adapter.positions("5016")


async def test_request_when_server_is_too_slow_then_unavailable(mt5: Mt5) -> None:
    adapter = mt5.connect(timeout_s=0.2)
    mt5.stub.delay_s = 1.0
    try:
        with pytest.raises(Unavailable):
            await adapter.positions("5017")
    finally:
        await adapter.close()


async def test_login_when_password_is_wrong_then_refused(mt5: Mt5) -> None:
    adapter = mt5.connect(password="not-the-password")
    try:
        with pytest.raises(Refused):
            await adapter.positions("5018")
    finally:
        await adapter.close()


async def test_session_when_server_forgot_it_then_logs_in_again_once(mt5: Mt5) -> None:
    mt5.stub.add_user("5019")
    await mt5.adapter.positions("5019")
    mt5.stub.sessions.clear()

    assert await mt5.adapter.positions("5019") == []
    assert mt5.stub.logins == 2


def test_server_clock_when_server_runs_two_hours_ahead_then_deals_converted_to_utc() -> None:
    clock = ServerClock("Europe/London", 2)  # "GMT+2, DST with London" style server clock
    winter_server_ms = (T0_S + 2 * 3600) * 1000  # 2026-03-02 11:00 server = 09:00 UTC

    assert clock.to_utc_ns(winter_server_ms) == T0
    assert clock.to_server_s(T0) == T0_S + 2 * 3600


async def test_command_when_login_does_not_exist_then_not_found_retcode_for_that_command(
    mt5: Mt5,
) -> None:
    mt5.stub.add_user("5020")
    commands = [
        DisableTrading(command_id="f:1", account_id="5999", reason="r", caused_by="e"),
        DisableTrading(command_id="f:2", account_id="5020", reason="r", caused_by="e"),
    ]

    assert await mt5.adapter.execute(commands) == [13, DONE]  # 13: MT_RET_ERR_NOTFOUND
