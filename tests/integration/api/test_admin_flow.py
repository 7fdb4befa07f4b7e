"""The operators' flow through HTTP only, on PostgreSQL and a real runtime: trader, plan,
purchase, an account opened on the simulator through the bridge, deals, a breach, the freeze;
then the timeline and the audit chain. The deals come from the platform (the simulator), as a
trader's would."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
import ray
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from actors.kyc_supervisor import KycConfig, start_kyc
from actors.plans import DEFAULT_PLAN
from actors.runtime import Runtime, RuntimeConfig
from api.admin.follower import Follower, FollowerConfig
from api.auth import Role
from bridge.connections import EmbeddedConnection, SimulatedConnection
from bridge.simulator import SimulatorConfig, SimulatorReport
from ledger import kyc
from ledger.database import create_engine
from ledger.kyc import Tier
from ledger.schema import audit_log, journal
from tests.api import Api, serve
from tests.conftest import eventually
from tests.database import run_async, truncate_ledger
from tests.processes import simulate

pytestmark = pytest.mark.usefixtures("ray_session")

DEALS = 1_000_000  # above the simulator's own deal numbers (its deposits)
FAST = FollowerConfig(interval_s=0.05, settle_s=0.0, retry_base_s=0.2)

PLAN = {
    "id": "flow-10k",
    "name": "Flow 10K",
    "initial_balance": 10_000,
    "phases": [
        {"name": "challenge", "daily_loss": {"pct": 5}, "max_loss": {"pct": 10},
         "profit_target": {"pct": 8}},
        {"name": "verification", "daily_loss": {"pct": 5}, "max_loss": {"pct": 10},
         "profit_target": {"pct": 5}},
    ],
}  # fmt: skip

TRADER = {
    "email": "ada@example.com",
    "name": "Ada Lovelace",
    "country": "GB",
    "language": "en",
    "timezone": "Europe/London",
    "source": "youtube",
    "campaign": "spring",
}


@pytest.fixture
async def engine(migrated_postgres_url: str) -> AsyncIterator[AsyncEngine]:
    run_async(truncate_ledger(migrated_postgres_url))
    engine = create_engine(migrated_postgres_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def runtime(migrated_postgres_url: str) -> AsyncIterator[Runtime]:
    quiet = SimulatorConfig(server="flow", ticks_per_second=0.0, trades_per_trader_per_minute=0.0)
    config = RuntimeConfig(
        database_url=migrated_postgres_url,
        shards=2,
        plan=DEFAULT_PLAN,
        connections=(EmbeddedConnection(name="flow", simulator=quiet),),
    )
    runtime = Runtime(config)
    await runtime.start()
    yield runtime
    await runtime.close()


@pytest.fixture
async def api(engine: AsyncEngine, runtime: Runtime) -> AsyncIterator[Api]:
    async with serve(engine, runtime, follow=FAST) as client:
        yield client


def message(**body: object) -> bytes:
    return msgspec.json.encode(body)


async def trade(
    runtime: Runtime, account_id: str, n: int, *, after_ns: int, exit_bid: float
) -> int:
    """The trader buys 1 lot of EURUSD at 1.0851 on the platform, a second after `after_ns`;
    the bid moves to `exit_bid`. Returns the time of the last message."""
    base = after_ns + 1_000_000_000
    messages = [
        message(type="tick", event_id=f"f:{n}:1", ts_ns=base + 1, symbol="EURUSD",
                bid=1.0850, ask=1.0851),
        message(type="deal", event_id=f"f:{n}:2", ts_ns=base + 2, account_id=account_id,
                deal_id=DEALS + n, position_id=n, symbol="EURUSD", entry="in", side="buy",
                volume=1.0, price=1.0851),
        message(type="tick", event_id=f"f:{n}:3", ts_ns=base + 3, symbol="EURUSD",
                bid=exit_bid, ask=exit_bid + 0.0001),
    ]  # fmt: skip
    await runtime.cell().server.inject.remote(messages)
    return base + 3


async def account(api: Api, account_id: str) -> dict[str, Any]:
    status, body = await api.call("GET", f"/api/v1/accounts/{account_id}")
    assert status == 200, body
    return dict(body)


async def buy(
    api: Api, trader_id: str, reference: str, plan_id: str = "flow-10k"
) -> dict[str, Any]:
    body = {"trader_id": trader_id, "plan_id": plan_id, "payment_reference": reference,
            "amount": "99.00", "currency": "USD"}  # fmt: skip
    status, sold = await api.call(
        "POST", "/api/v1/purchases", role=Role.OPERATIONS, json=body,
        headers={"Idempotency-Key": f"buy-{reference}"},
    )  # fmt: skip
    assert status == 201, sold
    return dict(sold)


async def test_purchase_to_breach_through_http_then_timeline_and_audit_tell_it(
    api: Api, runtime: Runtime
) -> None:
    assert (await api.call("POST", "/api/v1/plans", role=Role.OPERATIONS, json=PLAN))[0] == 201
    status, trader = await api.call("POST", "/api/v1/traders", role=Role.OPERATIONS, json=TRADER)
    assert status == 201, trader

    sold = await buy(api, trader["id"], "psp-1")
    opened = sold["account"]
    assert (opened["status"], opened["phase"], opened["plan_version"]) == (
        "active", "challenge", 1
    )  # fmt: skip
    assert opened["platform_login"] == opened["id"]
    account_id = opened["id"]
    funded = await eventually(
        lambda: account(api, account_id), lambda a: a["live"] and a["live"]["balance"] == 10_000
    )
    rules = {r["rule"]: r for r in funded["live"]["rules"]}
    assert rules["daily_loss"]["limit"] == 9_500.0
    assert rules["profit_target"]["limit"] == 800.0

    opened_ns = funded["live"]["last_event_ns"]
    await trade(runtime, account_id, 1, after_ns=opened_ns, exit_bid=1.0290)  # 561 pips: -5,610
    failed = await eventually(
        lambda: account(api, account_id), lambda a: a["registered"]["status"] == "failed"
    )
    assert failed["registered"]["failed_rule"] == "daily_loss"
    assert failed["live"]["frozen"] is True
    report: SimulatorReport = await runtime.cell().server.report.remote()
    assert account_id in report.disabled  # frozen on the platform, not only here

    async def timeline() -> list[str]:
        path = f"/api/v1/traders/{trader['id']}/timeline"
        status, page = await api.call("GET", path, role=Role.SUPPORT)
        assert status == 200, page
        return [item["kind"] for item in page["items"]]

    # the shard journals in batches: the freeze's confirmation lands a moment after the rest
    kinds = await eventually(timeline, lambda k: "account_frozen" in k)
    for expected in ("deal", "rule_breached", "phase_failed", "trader.create", "purchase.create"):
        assert expected in kinds, kinds
    assert kinds.index("phase_failed") < kinds.index("deal")  # newest first

    status, trail = await api.call(
        "GET", "/api/v1/audit", role=Role.COMPLIANCE, params={"trader_id": trader["id"]}
    )
    assert status == 200, trail
    actions = [entry["action"] for entry in trail["items"]]
    assert actions[0] == "account.failed"
    assert {"trader.create", "purchase.create", "account.provisioned"} <= set(actions)
    status, verdict = await api.call("GET", "/api/v1/audit/verify", role=Role.COMPLIANCE)
    assert (status, verdict["ok"]) == (200, True), verdict


async def test_passed_phase_opens_the_next_phase_account_on_the_platform(
    api: Api, runtime: Runtime
) -> None:
    await api.call("POST", "/api/v1/plans", role=Role.OPERATIONS, json=PLAN)
    _, trader = await api.call("POST", "/api/v1/traders", role=Role.OPERATIONS, json=TRADER)
    account_id = (await buy(api, trader["id"], "psp-2"))["account"]["id"]
    funded = await eventually(
        lambda: account(api, account_id), lambda a: a["live"]["balance"] == 10_000
    )
    last_ns = await trade(
        runtime, account_id, 2, after_ns=funded["live"]["last_event_ns"], exit_bid=1.0951
    )  # +1,000 floating
    close = message(type="deal", event_id="f:2:4", ts_ns=last_ns + 1, account_id=account_id,
                    deal_id=DEALS + 3, position_id=2, symbol="EURUSD", entry="out", side="sell",
                    volume=1.0, price=1.0951, profit=1000.0)  # fmt: skip
    await runtime.cell().server.inject.remote([close])

    passed = await eventually(
        lambda: account(api, account_id), lambda a: a["registered"]["status"] == "passed"
    )
    assert passed["live"]["balance"] == 11_000
    successor = await eventually(
        lambda: account(api, f"{account_id}-p2"),
        lambda a: a["registered"]["status"] == "active" and a["live"]["balance"] == 10_000,
    )
    assert successor["registered"]["phase"] == "verification"
    assert successor["registered"]["previous_id"] == account_id
    assert successor["live"]["rules"][2]["limit"] == 500.0  # verification's 5% target


async def test_operator_freezes_and_unfreezes_on_the_platform_with_a_reason(
    api: Api, runtime: Runtime
) -> None:
    await api.call("POST", "/api/v1/plans", role=Role.OPERATIONS, json=PLAN)
    _, trader = await api.call("POST", "/api/v1/traders", role=Role.OPERATIONS, json=TRADER)
    account_id = (await buy(api, trader["id"], "psp-3"))["account"]["id"]
    path = f"/api/v1/accounts/{account_id}"

    status, refused = await api.call("POST", f"{path}/freeze", role=Role.SUPPORT,
                                     json={"reason": "dispute"})  # fmt: skip
    assert status == 403, refused
    status, unreasoned = await api.call("POST", f"{path}/freeze", role=Role.RISK, json={})
    assert (status, unreasoned["errors"][0]["field"]) == (422, "body.reason")

    status, frozen = await api.call(
        "POST", f"{path}/freeze", role=Role.RISK, json={"reason": "BoE news, unhedged GBPJPY"}
    )
    assert (status, frozen["status"], frozen["reason"]) == (
        200, "frozen", "BoE news, unhedged GBPJPY"
    )  # fmt: skip
    report: SimulatorReport = await runtime.cell().server.report.remote()
    assert account_id in report.disabled
    again = await api.call("POST", f"{path}/freeze", role=Role.RISK, json={"reason": "twice"})
    assert again[0] == 409

    status, thawed = await api.call(
        "POST", f"{path}/unfreeze", role=Role.RISK, json={"reason": "news passed"}
    )
    assert (status, thawed["status"]) == (200, "active")
    report = await runtime.cell().server.report.remote()
    assert account_id not in report.disabled

    _, trail = await api.call("GET", "/api/v1/audit", params={"target_id": account_id})
    by_action = {entry["action"]: entry for entry in trail["items"]}
    assert by_action["account.freeze"]["actor"] == "risk"
    before = by_action["account.freeze"]["before"]
    assert (before["status"], before["reason"]) == ("active", None)
    assert by_action["account.unfreeze"]["after"]["status"] == "active"


async def test_purchase_when_platform_is_down_then_retried_until_active(
    engine: AsyncEngine, migrated_postgres_url: str
) -> None:
    port = free_port()
    connection = SimulatedConnection(name="late", base_url=f"http://127.0.0.1:{port}")
    config = RuntimeConfig(
        database_url=migrated_postgres_url,
        shards=1,
        plan=DEFAULT_PLAN,
        connections=(connection,),
        command_timeout_s=1.0,
    )
    runtime = Runtime(config)
    await runtime.start()
    try:
        async with serve(engine, runtime, follow=FAST) as api:
            await api.call("POST", "/api/v1/plans", role=Role.OPERATIONS, json=PLAN)
            _, trader = await api.call("POST", "/api/v1/traders", role=Role.OPERATIONS, json=TRADER)
            sold = await buy(api, trader["id"], "psp-4")
            assert sold["account"]["status"] == "provisioning_failed"
            assert "did not answer" in sold["account"]["reason"]
            quiet = ("--trades-per-minute", "0", "--ticks-per-second", "0", "--server", "late")
            async with simulate("--port", str(port), *quiet):
                opened = await eventually(
                    lambda: account(api, sold["account"]["id"]),
                    lambda a: a["registered"]["status"] == "active",
                    timeout_s=60,
                )
            assert opened["registered"]["attempts"] >= 2
            assert opened["registered"]["reason"] is None
    finally:
        await runtime.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_purchase_retried_with_its_key_answers_the_first_sale_and_opens_one_account(
    api: Api, runtime: Runtime
) -> None:
    await api.call("POST", "/api/v1/plans", role=Role.OPERATIONS, json=PLAN)
    _, trader = await api.call("POST", "/api/v1/traders", role=Role.OPERATIONS, json=TRADER)
    first = await buy(api, trader["id"], "psp-5")
    again = await buy(api, trader["id"], "psp-5")
    assert again == first
    body = {"trader_id": trader["id"], "plan_id": "flow-10k", "payment_reference": "psp-6",
            "amount": "99.00", "currency": "USD"}  # fmt: skip
    status, reused = await api.call(
        "POST", "/api/v1/purchases", role=Role.OPERATIONS, json=body,
        headers={"Idempotency-Key": "buy-psp-5"},
    )  # fmt: skip
    assert status == 409, reused
    _, listed = await api.call("GET", "/api/v1/accounts", params={"trader_id": trader["id"]})
    assert [a["id"] for a in listed["items"]] == [first["account"]["id"]]


async def test_freezes_sent_with_one_request_id_each_reach_the_platform(
    api: Api, runtime: Runtime
) -> None:
    await api.call("POST", "/api/v1/plans", role=Role.OPERATIONS, json=PLAN)
    _, trader = await api.call("POST", "/api/v1/traders", role=Role.OPERATIONS, json=TRADER)
    account_id = (await buy(api, trader["id"], "psp-7"))["account"]["id"]
    same = {"X-Request-Id": "ticket-4711"}
    for action in ("freeze", "unfreeze", "freeze"):
        status, body = await api.call(
            "POST", f"/api/v1/accounts/{account_id}/{action}", role=Role.RISK,
            json={"reason": "dispute 4711"}, headers=same,
        )  # fmt: skip
        assert status == 200, (action, body)
    report: SimulatorReport = await runtime.cell().server.report.remote()
    assert account_id in report.disabled  # the second freeze was sent, not taken as done


async def test_unfreeze_when_the_rule_engine_failed_the_account_is_refused(
    engine: AsyncEngine, runtime: Runtime
) -> None:
    async with serve(engine, runtime) as api:  # no follower: the registry lags the shard
        await api.call("POST", "/api/v1/plans", role=Role.OPERATIONS, json=PLAN)
        _, trader = await api.call("POST", "/api/v1/traders", role=Role.OPERATIONS, json=TRADER)
        account_id = (await buy(api, trader["id"], "psp-8"))["account"]["id"]
        funded = await eventually(
            lambda: account(api, account_id), lambda a: a["live"]["balance"] == 10_000
        )
        path = f"/api/v1/accounts/{account_id}"
        assert (await api.call("POST", f"{path}/freeze", json={"reason": "look"}))[0] == 200
        opened_ns = funded["live"]["last_event_ns"]
        await trade(runtime, account_id, 8, after_ns=opened_ns, exit_bid=1.0290)
        await eventually(
            lambda: account(api, account_id), lambda a: a["live"]["status"] == "failed"
        )

        status, refused = await api.call("POST", f"{path}/unfreeze", json={"reason": "oops"})
        assert status == 409, refused
        assert "failed" in refused["detail"]
        report: SimulatorReport = await runtime.cell().server.report.remote()
        assert account_id in report.disabled


FUNDED_PLAN = {
    "id": "flow-funded",
    "name": "Flow funded",
    "initial_balance": 10_000,
    "phases": [
        {"name": "challenge", "daily_loss": {"pct": 5}, "max_loss": {"pct": 10},
         "profit_target": {"pct": 8}},
        {"name": "funded", "daily_loss": {"pct": 5}, "max_loss": {"pct": 10}},
    ],
}  # fmt: skip
INSTANT_PLAN = {
    "id": "flow-instant",
    "name": "Flow instant funding",
    "initial_balance": 10_000,
    "phases": [{"name": "funded", "daily_loss": {"pct": 4}, "max_loss": {"pct": 8}}],
}


async def pass_challenge(
    api: Api, runtime: Runtime, engine: AsyncEngine, n: int, after_ns: int = 0
) -> dict[str, Any]:
    """A new trader buys the funded plan and passes its challenge on the platform, trading
    after `after_ns` (the market's time moves forward); once the pass is in the journal, the
    trader, its account and the time of its last trade."""
    trader = {**TRADER, "email": f"kyc-{n}@example.com"}
    _, created = await api.call("POST", "/api/v1/traders", role=Role.OPERATIONS, json=trader)
    account_id = (await buy(api, created["id"], f"psp-kyc-{n}", plan_id="flow-funded"))["account"][
        "id"
    ]
    opened = await eventually(
        lambda: account(api, account_id), lambda a: a["live"]["balance"] == 10_000
    )
    since = max(after_ns, opened["live"]["last_event_ns"])
    last_ns = await trade(runtime, account_id, n, after_ns=since, exit_bid=1.0951)
    close = message(type="deal", event_id=f"f:{n}:4", ts_ns=last_ns + 1, account_id=account_id,
                    deal_id=DEALS + 100 + n, position_id=n, symbol="EURUSD", entry="out",
                    side="sell", volume=1.0, price=1.0951, profit=1000.0)  # fmt: skip
    before = await passes(engine)
    await runtime.cell().server.inject.remote([close])
    await eventually(lambda: passes(engine), lambda found: found > before)
    return {**created, "account_id": account_id, "last_ns": last_ns + 1}


async def passes(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        found = await conn.execute(select(journal.c.seq).where(journal.c.kind == "phase_passed"))
        return len(found.all())


async def asked(engine: AsyncEngine, trader_id: str) -> Tier | None:
    async with engine.connect() as conn:
        case = await kyc.case(conn, trader_id)
    return None if case is None else case.requested


async def test_a_funding_asks_kyc_for_the_funded_tier_from_the_follower_or_the_kyc_sweep(
    engine: AsyncEngine, runtime: Runtime, migrated_postgres_url: str
) -> None:
    live = start_kyc(migrated_postgres_url, (), KycConfig(tick_s=0))
    dead = start_kyc(migrated_postgres_url, (), KycConfig(tick_s=0))
    ray.kill(dead, no_restart=True)
    try:
        async with serve(engine, runtime, kyc=live) as api:  # the test drives the follower
            for plan in (FUNDED_PLAN, INSTANT_PLAN):
                await api.call("POST", "/api/v1/plans", role=Role.OPERATIONS, json=plan)

            told = await pass_challenge(api, runtime, engine, 9)  # the follower tells KYC
            assert await Follower(engine, runtime, FAST, kyc=live).follow() == 1
            assert await asked(engine, told["id"]) is Tier.FULL  # GB: the default funded tier
            async with engine.connect() as conn:
                actions = await conn.scalars(
                    select(audit_log.c.action).where(audit_log.c.trader_id == told["id"])
                )
                assert "kyc.funded" in set(actions)
            successor = await account(api, f"{told['account_id']}-p2")
            assert successor["registered"]["phase"] == "funded"

            # deal numbers above those the platform used since (the first close, a deposit)
            untold = await pass_challenge(api, runtime, engine, 200, told["last_ns"])  # KYC down
            assert await Follower(engine, runtime, FAST, kyc=dead).follow() == 1
            assert (await account(api, untold["account_id"]))["registered"]["status"] == "passed"
            assert await asked(engine, untold["id"]) is None

            instant = {**TRADER, "email": "instant@example.com"}
            _, bought = await api.call(
                "POST", "/api/v1/traders", role=Role.OPERATIONS, json=instant
            )
            await buy(api, bought["id"], "psp-instant", plan_id="flow-instant")  # funded at once

            swept = await live.tick.remote()  # the sweep finds both
            assert swept.funded == sorted([untold["id"], bought["id"]])
            assert await asked(engine, untold["id"]) is Tier.FULL
            assert await asked(engine, bought["id"]) is Tier.FULL
            assert (await live.tick.remote()).funded == []  # asked once
    finally:
        await live.close.remote()
        ray.kill(live)
