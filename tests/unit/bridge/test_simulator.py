"""The platform simulator: deterministic for a seed, obeys commands, a self-consistent oracle;
and its server: the rate limit and the faults a real server has, seen through `Platform`."""

from __future__ import annotations

import pickle
import time
from types import SimpleNamespace
from typing import Any

import msgspec
import pytest

from bridge.codec import decode_messages
from bridge.commands import (
    AnyPlatformCommand,
    CloseAllPositions,
    DisableTrading,
    OperateBalance,
    ProvisionAccount,
)
from bridge.events import (
    AnyPlatformEvent,
    BalanceKind,
    BalanceOperated,
    DealExecuted,
    PriceTicked,
    TradingDisabled,
)
from bridge.platform import (
    DONE,
    Failure,
    Faults,
    Platform,
    RateLimited,
    Refused,
    SimulatorConnection,
    SimulatorServer,
    Unavailable,
)
from bridge.simulator import (
    NO_MONEY,
    SIM_EPOCH_NS,
    NewsJump,
    PlatformSimulator,
    SimAccount,
    SimulatorConfig,
    UnknownAccount,
)

ACCOUNTS = [f"acc-{i}" for i in range(30)]
BUSY = SimulatorConfig(
    seed=7, trades_per_trader_per_minute=120.0, reckless_fraction=0.5, reckless_risk_per_tick=900.0
)


def run(config: SimulatorConfig, intervals: list[float]) -> list[bytes]:
    sim = PlatformSimulator(config)
    sim.provision(ACCOUNTS)
    stream: list[bytes] = []
    for seconds in intervals:
        sim.advance(seconds)
        stream.extend(sim.take(1_000_000))
    return stream


def decoded(raw: list[bytes]) -> list[AnyPlatformEvent]:
    events, rejections = decode_messages(raw)
    assert rejections == []
    return events


def disable(account_id: str, command_id: str = "freeze:1") -> DisableTrading:
    return DisableTrading(
        command_id=command_id, account_id=account_id, reason="daily_loss", caused_by="sim-1:1"
    )


def test_simulator_when_same_seed_and_intervals_then_identical_message_streams() -> None:
    intervals = [0.3, 1.0, 0.05, 2.0]

    first, second = run(BUSY, intervals), run(BUSY, intervals)

    assert len(first) > 100
    assert first == second


def test_simulator_when_seed_differs_then_streams_differ() -> None:
    other = msgspec.structs.replace(BUSY, seed=8)

    assert run(BUSY, [1.0, 1.0]) != run(other, [1.0, 1.0])


def test_simulator_messages_when_decoded_at_the_edge_then_none_is_rejected() -> None:
    events = decoded(run(BUSY, [2.0]))

    deals = [e for e in events if isinstance(e, DealExecuted)]
    assert deals
    assert [d.deal_id for d in deals] == sorted({d.deal_id for d in deals})


def test_disabled_account_when_it_tries_to_trade_then_rejected_and_no_new_deals() -> None:
    config = msgspec.structs.replace(BUSY, trades_per_trader_per_minute=600.0)
    sim = PlatformSimulator(config)
    sim.provision(["solo"])
    sim.advance(1.0)
    assert any(isinstance(e, DealExecuted) for e in decoded(sim.take(100_000)))

    assert sim.execute([disable("solo")]) == [0]
    sim.take(100_000)
    sim.advance(5.0)

    after = decoded(sim.take(100_000))
    assert sim.report().rejected_after_disable > 0
    assert not [e for e in after if isinstance(e, DealExecuted)]
    assert sim.report().disabled == ["solo"]


def test_disable_trading_when_sent_twice_then_confirmed_both_times_and_disabled_once() -> None:
    sim = PlatformSimulator(BUSY)
    sim.provision(["a", "b"])

    codes = sim.execute([disable("a", "freeze:1"), disable("a", "freeze:2")])

    confirmations = [e for e in decoded(sim.take(100)) if isinstance(e, TradingDisabled)]
    assert codes == [0, 0]
    assert [(c.account_id, c.command_id) for c in confirmations] == [
        ("a", "freeze:1"),
        ("a", "freeze:2"),
    ]
    assert sim.accounts["a"].disabled_by == "freeze:1"
    assert sim.report().disabled == ["a"]


@pytest.mark.parametrize(
    "command",
    [disable("ghost"), CloseAllPositions(command_id="c", account_id="ghost", reason="max_loss")],
    ids=["disable", "close_all"],
)
def test_command_when_account_unknown_then_retcode_10013_and_nothing_emitted(
    command: DisableTrading | CloseAllPositions,
) -> None:
    sim = PlatformSimulator(BUSY)
    sim.provision(["a"])

    assert sim.execute([command]) == [10013]
    assert sim.take(100) == []


def test_close_all_when_account_has_positions_then_each_closes_with_an_out_deal() -> None:
    sim = PlatformSimulator(msgspec.structs.replace(BUSY, trades_per_trader_per_minute=600.0))
    sim.provision(["solo"])
    sim.advance(2.0)
    sim.take(100_000)
    open_ids = set(sim.accounts["solo"].positions)
    assert open_ids

    assert sim.execute([CloseAllPositions(command_id="c", account_id="solo", reason="x")]) == [0]

    deals = [e for e in decoded(sim.take(100_000)) if isinstance(e, DealExecuted)]
    assert {d.position_id for d in deals} == open_ids
    assert all(d.entry == "out" for d in deals)
    assert sim.accounts["solo"].positions == {}


def floor_of(sim: PlatformSimulator, account: SimAccount) -> float:
    """The binding floor in currency units, computed here from the limits, not by the simulator."""
    limits = sim.config.limits
    initial = round(limits.initial_balance * 100)
    daily = account.day_start_balance - round(initial * limits.daily_loss_pct / 100)
    static = initial - round(initial * limits.max_loss_pct / 100)
    return max(daily, static) / 100


def test_oracle_crossings_when_run_then_they_agree_with_its_own_equity() -> None:
    sim = PlatformSimulator(BUSY)
    sim.provision(ACCOUNTS)
    sim.advance(3.0)

    crossed = sim.report().crossed
    assert crossed  # the configuration is reckless enough that the check is not vacuous
    for account_id, crossing in crossed.items():
        assert crossing.account_id == account_id
        assert crossing.equity <= crossing.floor
        assert crossing.rule in {"daily_loss", "max_loss"}
    for account in sim.accounts.values():
        if account.account_id not in crossed:
            assert sim.equity(account) > floor_of(sim, account)


def test_provision_when_ids_repeat_then_existing_accounts_are_kept() -> None:
    sim = PlatformSimulator(BUSY)

    assert sim.provision(["a", "b"]) == 2
    sim.accounts["a"].balance = 100
    assert sim.provision(["a", "b", "c"]) == 1
    assert sim.accounts["a"].balance == 100
    assert sim.report().accounts == 3


def injected_tick(event_id: str) -> bytes:
    tick = PriceTicked(event_id=event_id, ts_ns=1, symbol="EURUSD", bid=1.0, ask=1.1)
    return msgspec.json.encode(tick)


def test_freeze_when_caused_by_an_injected_event_then_its_latency_is_recorded() -> None:
    sim = PlatformSimulator(BUSY)
    sim.provision(["a"])
    sim.outbox.append((0, injected_tick("news:7")))

    assert sim.take(10) == [injected_tick("news:7")]
    sim.execute([DisableTrading(command_id="f", account_id="a", reason="r", caused_by="news:7")])

    latencies = sim.report().breach_to_freeze_ns
    assert len(latencies) == 1
    assert latencies[0] > 0


def test_freeze_when_caused_by_an_event_never_handed_over_then_no_latency() -> None:
    sim = PlatformSimulator(BUSY)
    sim.provision(["a", "b"])
    sim.outbox.append((0, injected_tick("news:1")))  # still in the outbox: not handed over

    sim.execute([DisableTrading(command_id="f", account_id="a", reason="r", caused_by="news:1")])
    sim.execute([disable("b")])  # sim-1:1 is the confirmation above, not yet taken either

    assert sim.report().breach_to_freeze_ns == []


def test_injected_message_when_malformed_then_handed_over_untimed() -> None:
    sim = PlatformSimulator(BUSY)
    garbage = [b"{not json", b"[1, 2]", b'{"type": "tick"}']
    sim.outbox.extend((0, message) for message in garbage)

    assert sim.take(10) == garbage
    assert sim.injected_ns == {}


def test_freeze_when_caused_by_a_generated_event_then_timed_by_its_sequence() -> None:
    sim = PlatformSimulator(msgspec.structs.replace(BUSY, trades_per_trader_per_minute=600.0))
    sim.provision(["solo"])
    sim.advance(1.0)
    first = decoded(sim.take(100_000))[0]

    sim.execute(
        [DisableTrading(command_id="f", account_id="solo", reason="r", caused_by=first.event_id)]
    )

    assert len(sim.report().breach_to_freeze_ns) == 1


# -- accounts, balance operations, queries --------------------------------------------------------

QUIET = SimulatorConfig(seed=3, ticks_per_second=0.0, trades_per_trader_per_minute=0.0)


def open_account(
    account_id: str = "a", deposit_cents: int = 1_000_000, command_id: str = "open:a"
) -> ProvisionAccount:
    return ProvisionAccount(
        command_id=command_id,
        account_id=account_id,
        group="real\\pro",
        leverage=30,
        deposit_cents=deposit_cents,
        currency="EUR",
    )


def operate(
    kind: BalanceKind, amount_cents: int, command_id: str = "op:1", account_id: str = "a"
) -> OperateBalance:
    return OperateBalance(
        command_id=command_id, account_id=account_id, kind=kind, amount_cents=amount_cents
    )


def balances(raw: list[bytes]) -> list[BalanceOperated]:
    return [e for e in decoded(raw) if isinstance(e, BalanceOperated)]


def test_provision_command_when_new_then_opens_in_group_and_announces_the_deposit() -> None:
    sim = PlatformSimulator(QUIET)

    assert sim.execute([open_account()]) == [DONE]

    account = sim.accounts["a"]
    assert (account.group, account.leverage, account.currency) == ("real\\pro", 30, "EUR")
    assert account.balance == account.initial == 1_000_000
    [deposit] = balances(sim.take(100))
    assert (deposit.account_id, deposit.kind, deposit.amount) == ("a", "deposit", 10_000.0)


def test_provision_command_when_account_exists_then_done_and_unchanged() -> None:
    sim = PlatformSimulator(QUIET)
    sim.execute([open_account()])
    sim.take(100)

    codes = sim.execute([open_account(deposit_cents=5, command_id="open:again")])

    assert codes == [DONE]
    assert sim.accounts["a"].balance == 1_000_000
    assert sim.accounts["a"].leverage == 30
    assert sim.take(100) == []


def test_provision_when_called_by_ids_then_funded_at_the_initial_balance_without_event() -> None:
    sim = PlatformSimulator(QUIET)

    assert sim.provision(["a"]) == 1

    assert sim.accounts["a"].balance == round(QUIET.limits.initial_balance * 100)
    assert sim.accounts["a"].initial == sim.accounts["a"].balance
    assert sim.take(100) == []  # the runtime's entities open funded: no second deposit


@pytest.mark.parametrize(
    ("kind", "balance", "credit", "amount"),
    [
        (BalanceKind.DEPOSIT, 1_002_500, 0, 25.0),
        (BalanceKind.WITHDRAWAL, 997_500, 0, -25.0),
        (BalanceKind.CORRECTION, 1_002_500, 0, 25.0),
        (BalanceKind.CREDIT, 1_000_000, 2_500, 25.0),
    ],
)
def test_balance_operation_when_carried_out_then_money_moves_and_a_signed_event_follows(
    kind: BalanceKind, balance: int, credit: int, amount: float
) -> None:
    sim = PlatformSimulator(QUIET)
    sim.execute([open_account()])
    sim.take(100)

    assert sim.execute([operate(kind, 2_500)]) == [DONE]

    account = sim.accounts["a"]
    assert (account.balance, account.credit) == (balance, credit)
    assert sim.equity_cents(account) == balance + credit
    [event] = balances(sim.take(100))
    assert (event.kind, event.amount) == (kind, amount)


def test_balance_operation_when_command_id_repeats_then_done_and_applied_once() -> None:
    sim = PlatformSimulator(QUIET)
    sim.execute([open_account()])
    sim.take(100)

    codes = sim.execute([operate(BalanceKind.DEPOSIT, 100), operate(BalanceKind.DEPOSIT, 100)])

    assert codes == [DONE, DONE]
    assert sim.accounts["a"].balance == 1_000_100
    assert len(balances(sim.take(100))) == 1


def test_withdrawal_when_beyond_the_balance_then_no_money_and_a_later_resend_gets_through() -> None:
    sim = PlatformSimulator(QUIET)
    sim.execute([open_account(deposit_cents=1_000)])
    sim.take(100)

    assert sim.execute([operate(BalanceKind.WITHDRAWAL, 1_001, "w")]) == [NO_MONEY]
    assert sim.accounts["a"].balance == 1_000
    assert sim.take(100) == []

    sim.execute([operate(BalanceKind.DEPOSIT, 1, "d")])
    assert sim.execute([operate(BalanceKind.WITHDRAWAL, 1_001, "w")]) == [DONE]
    assert sim.accounts["a"].balance == 0


def test_balance_operation_when_account_unknown_then_retcode_10013() -> None:
    sim = PlatformSimulator(QUIET)

    assert sim.execute([operate(BalanceKind.DEPOSIT, 100, account_id="ghost")]) == [10013]
    assert sim.take(100) == []


def test_oracle_when_funded_by_a_command_then_floors_follow_that_deposit() -> None:
    sim = PlatformSimulator(QUIET)
    sim.execute([open_account(deposit_cents=200_000)])

    assert sim.floors(sim.accounts["a"]) == (190_000, 180_000)


def test_oracle_when_account_not_funded_then_trading_never_counts_as_a_crossing() -> None:
    config = msgspec.structs.replace(
        BUSY, reckless_fraction=1.0, trades_per_trader_per_minute=600.0
    )
    sim = PlatformSimulator(config)
    sim.execute([open_account(deposit_cents=0)])

    sim.advance(3.0)

    assert any(isinstance(e, DealExecuted) for e in decoded(sim.take(100_000)))
    assert sim.equity_cents(sim.accounts["a"]) < 0  # it lost money it never had
    assert sim.report().crossed == {}


def account_messages(raw: list[bytes], account_id: str) -> list[bytes]:
    """The account's deals and balance operations in a stream, as sent."""
    return [
        message
        for message, event in zip(raw, decoded(raw), strict=True)
        if isinstance(event, DealExecuted | BalanceOperated) and event.account_id == account_id
    ]


def test_history_when_queried_then_the_same_messages_the_stream_carried() -> None:
    sim = PlatformSimulator(BUSY)
    sim.execute([open_account("a"), open_account("b", command_id="open:b")])
    sim.provision(ACCOUNTS)
    sim.advance(2.0)
    sim.execute([operate(BalanceKind.WITHDRAWAL, 100)])
    stream = sim.take(1_000_000)

    history = sim.history("a", 0)

    assert len(history) > 3
    assert history == account_messages(stream, "a")
    assert sim.history("b", 0) == account_messages(stream, "b")


def test_history_when_since_given_then_only_what_happened_at_or_after_it() -> None:
    sim = PlatformSimulator(msgspec.structs.replace(BUSY, trades_per_trader_per_minute=600.0))
    sim.execute([open_account()])
    sim.advance(2.0)
    everything = decoded(sim.history("a", 0))
    middle = everything[len(everything) // 2].ts_ns

    later = decoded(sim.history("a", middle))

    assert later == [e for e in everything if e.ts_ns >= middle]
    assert 0 < len(later) < len(everything)


def test_history_when_account_unknown_then_unknown_account() -> None:
    with pytest.raises(UnknownAccount):
        PlatformSimulator(QUIET).history("ghost", 0)


def test_positions_when_account_trades_then_their_profits_make_up_its_equity() -> None:
    sim = PlatformSimulator(msgspec.structs.replace(BUSY, trades_per_trader_per_minute=600.0))
    sim.provision(["solo"])
    sim.advance(2.0)
    account = sim.accounts["solo"]

    positions = sim.positions("solo")

    assert positions
    assert positions.keys() == account.positions.keys()
    floating = sum(sim.profit_cents(p) for p in positions.values())
    assert floating != 0
    assert sim.equity_cents(account) == account.balance + floating


# -- news -------------------------------------------------------------------------------------


def test_news_jump_when_due_then_one_tick_at_its_time_gaps_the_price() -> None:
    config = msgspec.json.decode(
        b'{"ticks_per_second": 0, "news": [[1.5, "EURUSD", -0.02]]}', type=SimulatorConfig
    )
    sim = PlatformSimulator(config)
    before = sim.mid["EURUSD"]

    sim.advance(1.0)
    assert sim.take(10) == []
    sim.advance(1.0)

    [tick] = decoded(sim.take(10))
    assert isinstance(tick, PriceTicked)
    assert (tick.symbol, tick.ts_ns) == ("EURUSD", SIM_EPOCH_NS + 1_500_000_000)
    assert sim.mid["EURUSD"] == pytest.approx(before * 0.98)
    assert (tick.bid + tick.ask) / 2 == pytest.approx(before * 0.98)
    assert sim.sim_ns == SIM_EPOCH_NS + 2_000_000_000


def test_news_jump_when_it_moves_against_open_positions_then_the_oracle_sees_it() -> None:
    # Every price falls 90 %, then rises a hundredfold: whichever side a position is on, it hurts.
    symbols = [i.symbol for i in BUSY.instruments]
    news = [NewsJump(at_s=5.0, symbol=s, move=-0.9) for s in symbols]
    news += [NewsJump(at_s=5.5, symbol=s, move=99.0) for s in symbols]
    config = msgspec.structs.replace(
        BUSY,
        ticks_per_second=0.0,
        trades_per_trader_per_minute=600.0,
        reckless_fraction=0.0,
        careful_risk_per_tick=50.0,
        news=tuple(news),
    )
    sim = PlatformSimulator(config)
    sim.provision(["solo"])
    sim.advance(2.0)
    sim.execute([disable("solo")])  # it keeps its positions and opens no more
    assert sim.positions("solo")
    assert sim.report().crossed == {}  # prices have not moved yet
    sim.take(100_000)

    sim.advance(4.0)

    jumps = [e for e in decoded(sim.take(100_000)) if isinstance(e, PriceTicked)]
    assert {e.ts_ns - SIM_EPOCH_NS for e in jumps} == {5_000_000_000, 5_500_000_000}
    assert len(jumps) == len(news)
    assert sim.report().crossed["solo"].event_id in {e.event_id for e in jumps}


@pytest.mark.parametrize(
    "news", [[[1.0, "NOPE", 0.01]], [[1.0, "EURUSD", -1.0]], [[-1.0, "EURUSD", 0.01]]]
)
def test_news_jump_when_invalid_then_config_rejected_naming_the_field(news: object) -> None:
    with pytest.raises(msgspec.ValidationError, match="news"):
        msgspec.convert({"news": news}, type=SimulatorConfig)


def test_simulator_when_same_seed_and_commands_then_identical_streams() -> None:
    config = msgspec.structs.replace(BUSY, news=(NewsJump(at_s=0.5, symbol="EURUSD", move=0.01),))

    def scripted() -> list[bytes]:
        sim = PlatformSimulator(config)
        sim.execute([open_account("a"), open_account("b", command_id="open:b")])
        sim.advance(1.0)
        sim.execute([operate(BalanceKind.WITHDRAWAL, 500), operate(BalanceKind.CREDIT, 7, "c")])
        sim.advance(1.0)
        return sim.take(1_000_000)

    first, second = scripted(), scripted()

    assert len(first) > 50
    assert first == second


# -- the server: rate limit and faults, seen through `Platform` -----------------------------------


class Local:
    """A `SimulatorServer` as its Ray handle is used (`handle.method.remote(...)`), in-process."""

    def __init__(self, server: SimulatorServer) -> None:
        self.server = server

    def __getattr__(self, name: str) -> Any:
        return SimpleNamespace(remote=getattr(self.server, name))


def connect(
    config: SimulatorConfig = QUIET, **options: Any
) -> tuple[SimulatorServer, SimulatorConnection]:
    server = SimulatorServer(config, **options)
    return server, SimulatorConnection(Local(server))


async def test_connection_when_commands_and_queries_then_the_platform_answers() -> None:
    _, connection = connect()
    platform: Platform = connection

    assert await platform.execute([open_account(), operate(BalanceKind.CREDIT, 500)]) == [0, 0]

    state = await platform.account_state("a")
    assert (state.balance_cents, state.credit_cents, state.equity_cents) == (
        1_000_000,
        500,
        1_000_500,
    )
    assert (state.currency, state.enabled) == ("EUR", True)
    assert await platform.positions("a") == []
    stream = await platform.fetch(100)
    assert await platform.history("a", 0) == account_messages(stream, "a")
    assert len(stream) == 2


async def test_connection_when_positions_open_then_each_with_its_profit() -> None:
    server, connection = connect(msgspec.structs.replace(BUSY, trades_per_trader_per_minute=600.0))
    server.sim.provision(["solo"])
    server.sim.advance(2.0)

    positions = await connection.positions("solo")

    assert {p.position_id for p in positions} == set(server.sim.accounts["solo"].positions)
    state = await connection.account_state("solo")
    assert state.equity_cents == state.balance_cents + sum(p.profit_cents for p in positions)


async def test_connection_when_account_unknown_then_refused() -> None:
    _, connection = connect()

    with pytest.raises(Refused, match="ghost"):
        await connection.account_state("ghost")


async def test_connection_when_over_the_rate_limit_then_rate_limited_and_counted() -> None:
    server, connection = connect(requests_per_second=0.5, burst=1)
    await connection.execute([open_account()])

    with pytest.raises(RateLimited) as limited:
        await connection.account_state("a")
    await connection.fetch(10)  # the event stream is not limited

    assert limited.value.retry_after_s == 2.0
    assert (await server.report()).rate_limited == 1


async def test_connection_when_no_rate_limit_then_never_rate_limited() -> None:
    server, connection = connect()

    for i in range(50):
        await connection.execute([open_account(f"a{i}", command_id=f"open:{i}")])

    assert (await server.report()).rate_limited == 0


async def test_connection_when_server_answers_503_then_unavailable_and_not_carried_out() -> None:
    server, connection = connect(faults=Faults(unavailable=1.0))

    with pytest.raises(Unavailable):
        await connection.execute([open_account()])
    with pytest.raises(Unavailable):
        await connection.fetch(10)

    assert server.sim.accounts == {}


async def test_execute_when_connection_dropped_then_unavailable_yet_carried_out() -> None:
    server, connection = connect(faults=Faults(dropped=1.0))
    commands: list[AnyPlatformCommand] = [open_account(), operate(BalanceKind.DEPOSIT, 100)]

    with pytest.raises(Unavailable):
        await connection.execute(commands)
    assert server.sim.accounts["a"].balance == 1_000_100  # carried out all the same

    server.faults = Faults()  # the connection is back: the caller retries
    assert await connection.execute(commands) == [DONE, DONE]
    assert server.sim.accounts["a"].balance == 1_000_100
    assert len(balances(await connection.fetch(100))) == 2


async def test_fetch_when_connection_dropped_then_the_batch_comes_again() -> None:
    server, connection = connect(faults=Faults(dropped=1.0))
    server.sim.execute([open_account()])

    with pytest.raises(Unavailable):
        await connection.fetch(10)
    server.faults = Faults()

    assert len(balances(await connection.fetch(10))) == 1


async def test_request_when_latency_injected_then_answer_takes_at_least_that_long() -> None:
    _, connection = connect(faults=Faults(latency_ms=(40.0, 40.0)))

    started = time.monotonic()
    await connection.execute([open_account()])

    assert time.monotonic() - started >= 0.04


def busy_server(faults: Faults) -> tuple[SimulatorServer, SimulatorConnection, list[bytes]]:
    """A server holding two busy seconds of events (its clock stopped), and those events."""
    server, connection = connect(BUSY, faults=faults)
    server.halted = True
    server.sim.provision(ACCOUNTS)
    server.sim.advance(2.0)
    return server, connection, [message for _, message in server.sim.outbox]


def owner(event: AnyPlatformEvent) -> str:
    return event.symbol if isinstance(event, PriceTicked) else event.account_id


async def test_fetch_when_events_lost_then_they_never_come_and_the_rest_keep_their_order() -> None:
    server, connection, sent = busy_server(Faults(seed=5, lost=0.3))

    got = await connection.fetch(len(sent))
    after = await connection.fetch(len(sent))

    assert after == []
    assert 0 < len(got) < len(sent)
    remaining = iter(sent)
    assert all(message in remaining for message in got)  # a subsequence: nothing reordered
    assert await server.backlog() == 0


async def test_fetch_when_events_duplicated_then_each_comes_again_in_the_next_batch() -> None:
    _, connection, sent = busy_server(Faults(seed=5, duplicated=1.0))

    first = await connection.fetch(len(sent))
    second = await connection.fetch(len(sent))

    assert first == sent
    assert second == sent


async def test_fetch_when_reordered_then_only_independent_events_swap() -> None:
    _, connection, sent = busy_server(Faults(seed=5, reordered=0.5))

    got = await connection.fetch(len(sent))

    assert got != sent
    assert sorted(got) == sorted(sent)
    before, after = decoded(sent), decoded(got)
    for key in {owner(e) for e in before}:  # each account's order is kept
        assert [e for e in after if owner(e) == key] == [e for e in before if owner(e) == key]
    kinds = [[isinstance(e, PriceTicked) for e in events] for events in (before, after)]
    assert kinds[0] == kinds[1]  # a tick never swaps with an account's event
    ticks = [[e for e in events if isinstance(e, PriceTicked)] for events in (before, after)]
    assert ticks[0] == ticks[1]  # nor with another tick: an account may hold both symbols


def test_faults_when_out_of_range_then_rejected() -> None:
    with pytest.raises(ValueError, match="unavailable"):
        Faults(unavailable=1.5)
    with pytest.raises(ValueError, match="latency_ms"):
        Faults(latency_ms=(50.0, 10.0))


def test_failure_when_it_crosses_an_actor_boundary_then_it_arrives_unchanged() -> None:
    failure = Failure(status=429, detail="too many requests", retry_after_s=0.5)

    assert pickle.loads(pickle.dumps(failure)) == failure
