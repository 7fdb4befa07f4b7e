"""The KYC supervisor on a real runtime and payout supervisor (PostgreSQL, Ray): the signup,
funded and deadline triggers by jurisdiction, screening at signup, and a list update that turns
a cleared trader into a hit and holds their pending payout until compliance clears it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
import ray
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from actors.alerts import KycOverdue
from actors.hub import HubState
from actors.kyc_policy import KycPolicy, Rules
from actors.kyc_supervisor import KycConfig, KycError, start_kyc
from actors.payments import PayoutPolicy
from actors.runtime import Runtime
from actors.screening import ListEntry, load_simple
from api.auth import Role
from ledger import audit, kyc
from ledger.kyc import Tier
from ledger.schema import accounts, alert_rules, audit_log, kyc_tiers, traders
from loadtests.funded import Trader, seed
from tests.api import Api, serve
from tests.integration.payouts.conftest import FAST, start_supervisor
from tests.integration.payouts.test_checklist import ask, payout, payout_body, wait_for_profit

pytestmark = [pytest.mark.usefixtures("ray_session"), pytest.mark.postgres]

LISTS = Path(__file__).resolve().parents[3] / "deploy" / "kyc" / "lists"
VARLAMOV = "SANCTIONS-TEST:aleksandr-petrovich-varlamov-1968-03-14"
HOUR = 3_600 * 10**9


def sample() -> list[ListEntry]:
    return load_simple((LISTS / "sample.csv").read_text(encoding="utf-8"))


@pytest.fixture
async def kyc_supervisor(migrated_postgres_url: str, supervisor: Any, runtime: Runtime) -> Any:
    config = KycConfig(tick_s=0)  # the test drives the deadlines
    handle = start_kyc(migrated_postgres_url, sample(), config, payouts=supervisor, hub=runtime.hub)
    await handle.start.remote()  # the start lists stored (and nobody yet to re-screen)
    yield handle
    await handle.close.remote()
    ray.kill(handle)


async def rename(engine: AsyncEngine, trader_id: str, name: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(update(traders).where(traders.c.id == trader_id).values(name=name))


async def actions(engine: AsyncEngine, trader_id: str) -> list[str]:
    """The trader's audit actions, newest first (as the timeline shows them)."""
    query = select(audit_log).where(audit_log.c.trader_id == trader_id)
    entries = await audit.read(engine, query.order_by(audit_log.c.seq.desc()), 100)
    return [e.action for e in entries]


async def test_triggers_by_jurisdiction_screening_at_signup_and_deadlines(
    engine: AsyncEngine, runtime: Runtime, kyc_supervisor: Any
) -> None:
    people = [
        Trader(trader_id="de-1", account_id="acc-de-1", tier=Tier.NONE),
        Trader(trader_id="ng-1", account_id="acc-ng-1", country="NG", tier=Tier.NONE),
        Trader(trader_id="listed-1", account_id="acc-listed-1", country="RU", tier=Tier.NONE),
    ]
    await seed(engine, runtime, people)
    await rename(engine, "listed-1", "Varlamov Aleksandr")
    async with engine.begin() as conn:
        await conn.execute(
            alert_rules.insert().values(
                id="ar_kyc_overdue", name="KYC overdue", severity="warning", enabled=1,
                condition=msgspec.json.encode(KycOverdue()).decode(), created_ns=1, updated_ns=1,
            )
        )  # fmt: skip
    await runtime.hub.reload_rules.remote()
    started = time.time_ns()

    assert await kyc_supervisor.signup.remote("de-1", "1990-04-04") == []
    assert await kyc_supervisor.signup.remote("ng-1", "1985-02-02") == []
    hits = await kyc_supervisor.signup.remote("listed-1", "1968-03-14")
    assert [(h.uid, h.status) for h in hits] == [(VARLAMOV, "open")]
    assert await kyc_supervisor.funded.remote("de-1") is Tier.FULL
    assert await kyc_supervisor.funded.remote("ng-1") is Tier.ENHANCED  # high risk: earlier

    async with engine.connect() as conn:
        de, ng = await kyc.case(conn, "de-1"), await kyc.case(conn, "ng-1")
        effective = await kyc.tiers(conn, ["listed-1"])
    assert de is not None
    assert ng is not None
    assert (de.requested, de.dob, de.country) == (Tier.FULL, "1990-04-04", "DE")
    assert de.deadline_ns is not None
    assert de.requested_ns is not None
    assert de.deadline_ns - de.requested_ns == 72 * HOUR
    assert ng.requested is Tier.ENHANCED
    assert ng.deadline_ns is not None
    assert ng.requested_ns is not None
    assert ng.deadline_ns - ng.requested_ns == 168 * HOUR
    assert effective == {"listed-1": Tier.NONE}  # an open hit: nothing is cleared

    early = await kyc_supervisor.tick.remote(started + HOUR)
    assert (early.reminded, early.escalated) == ([], [])
    day = await kyc_supervisor.tick.remote(started + 25 * HOUR)
    assert set(day.reminded) == {"de-1", "ng-1"}  # the first reminder of each (24 h)
    assert day.escalated == ["listed-1"]  # light within 24 h: late (no reminder fits before)
    assert day.alerted == 1  # operations alerted on the risk hub
    quiet = await kyc_supervisor.tick.remote(started + 26 * HOUR)
    assert (quiet.reminded, quiet.escalated) == ([], [])  # not twice
    late = await kyc_supervisor.tick.remote(started + 73 * HOUR)
    assert late.escalated == ["de-1"]  # full within 72 h; enhanced has a week
    assert late.alerted == 1
    state = msgspec.msgpack.decode(await runtime.hub.state.remote(), type=HubState)
    overdue = sorted((a.trader_id, a.kind, a.subject) for a in state.alerts)
    assert overdue == [
        ("de-1", "kyc_overdue", "kyc:full"),
        ("listed-1", "kyc_overdue", "kyc:light"),
    ]
    assert late.reminded == ["de-1", "ng-1"]  # the second reminders (48 h), late or not
    assert (await kyc_supervisor.tick.remote(started + 74 * HOUR)).escalated == []

    assert await actions(engine, "de-1") == [
        "kyc.escalated", "kyc.reminder", "kyc.reminder", "kyc.funded", "kyc.signup"
    ]  # fmt: skip
    assert "kyc.hit" in await actions(engine, "listed-1")
    with pytest.raises(KycError, match="not_found"):
        await kyc_supervisor.funded.remote("nobody")


async def test_a_list_update_turns_a_cleared_trader_into_a_hit_and_holds_the_pending_payout(
    api: Api, engine: AsyncEngine, runtime: Runtime, supervisor: Any, kyc_supervisor: Any
) -> None:
    lone = Trader(trader_id="one-day-9", account_id="acc-one-day-9", days=(900.0,))
    await seed(engine, runtime, [lone])
    await wait_for_profit(runtime, {"all": [lone]})
    await rename(engine, lone.trader_id, "Marguerite Okonkwo-Lindqvist")
    assert await kyc_supervisor.signup.remote(lone.trader_id, "1979-07-07") == []  # cleared
    pending = await ask(api, "k-kyc-1", payout_body(lone))
    assert pending["status"] == "review"  # all on one day: finance must look

    listed = ListEntry(uid="PEP:77", list="PEP", name="Marguerite Okonkwo Lindqvist",
                       dobs=("1979-07-07",), country="DE")  # fmt: skip
    rescreen = await kyc_supervisor.lists_updated.remote([*sample(), listed])

    assert rescreen.traders >= 1
    assert [(h.trader_id, h.uid) for h in rescreen.new_hits] == [(lone.trader_id, "PEP:77")]
    held = await payout(api, pending["id"])
    assert (held["status"], held["reasons"]) == ("held", ["consistency", "kyc", "review"])
    again = await kyc_supervisor.lists_updated.remote([*sample(), listed])
    assert again.new_hits == []  # the same hit is not opened twice

    hit_id = rescreen.new_hits[0].id
    cleared = await kyc_supervisor.decide.remote(hit_id, False, "cora", "another person: DOB 1979 "
                                                 "is shared, passport differs")  # fmt: skip
    assert (cleared.status, cleared.decided_by) == ("cleared", "cora")
    assert (await payout(api, pending["id"]))["status"] == "review"  # back to finance
    with pytest.raises(KycError, match="conflict"):
        await kyc_supervisor.decide.remote(hit_id, True, "cora", "changed my mind")
    assert {"kyc.hit", "kyc.hit_cleared"} <= set(await actions(engine, lone.trader_id))


async def test_the_cumulative_threshold_adds_up_the_traders_payouts_on_every_account(
    engine: AsyncEngine, runtime: Runtime, migrated_postgres_url: str
) -> None:
    first = Trader(trader_id="two-accounts", account_id="acc-two-1")
    second = Trader(trader_id="two-accounts-b", account_id="acc-two-2")
    await seed(engine, runtime, [first, second])
    async with engine.begin() as conn:  # both accounts are one trader's
        await conn.execute(
            update(accounts)
            .where(accounts.c.id == second.account_id)
            .values(trader_id="two-accounts")
        )
    await wait_for_profit(runtime, {"all": [first, second]})
    policy = PayoutPolicy(retry_s=0.1, kyc=KycPolicy(default=Rules(enhanced_total_above=900_00)))
    handle = start_supervisor(
        migrated_postgres_url, runtime, msgspec.structs.replace(FAST, policy=policy)
    )
    try:
        await handle.ready.remote()
        async with serve(engine, runtime, payouts=handle) as api:
            assert (await ask(api, "k-two-1", payout_body(first)))["status"] == "approved"
            held = await ask(api, "k-two-2", payout_body(second))  # 1,000.00 in all: enhanced
            assert (held["status"], held["reasons"]) == ("held", ["kyc"])
            assert held["trader_id"] == "two-accounts"
    finally:
        await handle.close.remote()
        ray.kill(handle)


async def test_a_restarted_supervisor_screens_against_the_lists_in_force_and_new_files_rescreen(
    engine: AsyncEngine, runtime: Runtime, migrated_postgres_url: str, kyc_supervisor: Any
) -> None:
    people = [Trader(trader_id=f"pep-{i}", account_id=f"acc-pep-{i}") for i in range(2)]
    await seed(engine, runtime, people)
    listed = ListEntry(uid="PEP:88", list="PEP", name="Ottoline Brackenridge-Sowerby",
                       dobs=("1971-01-01",), country="DE")  # fmt: skip
    assert (await kyc_supervisor.lists_updated.remote([*sample(), listed])).new_hits == []

    ray.kill(kyc_supervisor, no_restart=False)  # Ray starts it again, with its start lists
    await rename(engine, "pep-0", "Ottoline Brackenridge-Sowerby")
    found = await kyc_supervisor.signup.remote("pep-0", "1971-01-01")  # retried by Ray
    assert [h.uid for h in found] == ["PEP:88"]  # the list update made before the restart

    await rename(engine, "pep-1", "Ottoline Brackenridge-Sowerby")
    redeployed = start_kyc(migrated_postgres_url, [listed], KycConfig(tick_s=0))
    try:
        await redeployed.start.remote()  # new list files: stored and everyone re-screened
        async with engine.connect() as conn:
            opened = await kyc.hits(conn, status="open")
        assert sorted((h.trader_id, h.uid) for h in opened) == [
            ("pep-0", "PEP:88"), ("pep-1", "PEP:88")
        ]  # fmt: skip
    finally:
        await redeployed.close.remote()
        ray.kill(redeployed)


async def test_the_case_queue_clearance_and_enhanced_due_diligence_over_http(
    engine: AsyncEngine, runtime: Runtime, supervisor: Any, kyc_supervisor: Any
) -> None:
    cleared = Trader(trader_id="sof-1", account_id="acc-sof-1")
    light = Trader(trader_id="sof-2", account_id="acc-sof-2", tier=Tier.LIGHT)
    listed = Trader(trader_id="sof-3", account_id="acc-sof-3", country="RU")
    await seed(engine, runtime, [cleared, light, listed])
    await rename(engine, listed.trader_id, "Varlamov Aleksandr")
    assert len(await kyc_supervisor.signup.remote(listed.trader_id, "1968-03-14")) == 1
    assert await kyc_supervisor.funded.remote(light.trader_id) is Tier.FULL
    async with engine.begin() as conn:  # the light trader's request is past its deadline
        await conn.execute(
            update(kyc_tiers)
            .where(kyc_tiers.c.trader_id == light.trader_id)
            .values(deadline_ns=time.time_ns() - HOUR)
        )

    async with serve(engine, runtime, payouts=supervisor, kyc=kyc_supervisor) as api:

        async def clearance(trader: Trader, amount: str) -> dict[str, Any]:
            path = f"/api/v1/traders/{trader.trader_id}/kyc/clearance"
            status, body = await api.call(
                "GET", f"{path}?currency=USD&amount={amount}", role=Role.FINANCE
            )
            assert status == 200, body
            return dict(body)

        small, large = await clearance(cleared, "500.00"), await clearance(cleared, "20000.00")
        assert (small["cleared"], small["needed"], small["amount"]) == (True, "full", "500.00")
        assert (large["cleared"], large["needed"]) == (False, "enhanced")  # above 10,000.00
        hit = await clearance(listed, "500.00")
        assert (hit["cleared"], hit["tier"], hit["screening_hit"]) == (False, "none", True)

        sof = {
            "source_of_funds": "salary as an engineer since 2015; payslips reviewed",
            "evidence": "dms://kyc/sof-1/payslips",
            "reason": "payslips match deposits",
        }
        path = f"/api/v1/traders/{cleared.trader_id}/kyc/enhanced"
        assert (await api.call("POST", path, role=Role.FINANCE, json=sof))[0] == 403
        status, approved = await api.call("POST", path, role=Role.COMPLIANCE, json=sof)
        assert (status, approved) == (200, {"trader_id": "sof-1", "tier": "enhanced"})
        assert (await clearance(cleared, "20000.00"))["cleared"] is True
        again = await api.call("POST", path, role=Role.COMPLIANCE, json=sof)
        assert again[0] == 409
        for trader in (light, listed):  # not on top of full; not while a hit stands
            path = f"/api/v1/traders/{trader.trader_id}/kyc/enhanced"
            status, refused = await api.call("POST", path, role=Role.COMPLIANCE, json=sof)
            assert status == 409, refused
        short = {**sof, "source_of_funds": "cash"}
        assert (await api.call("POST", path, role=Role.COMPLIANCE, json=short))[0] == 422

        status, case = await api.call("GET", f"/api/v1/traders/{listed.trader_id}/kyc")
        assert status == 200, case
        assert (case["tier"], case["effective"], case["date_of_birth"]) == (
            "full", "none", "1968-03-14"
        )  # fmt: skip
        assert [(h["uid"], h["status"]) for h in case["hits"]] == [(VARLAMOV, "open")]
        status, queue = await api.call("GET", "/api/v1/kyc/cases?status=overdue")
        assert [(c["trader_id"], c["requested"], c["overdue"]) for c in queue["items"]] == [
            ("sof-2", "full", True)
        ]
        status, everyone = await api.call("GET", "/api/v1/kyc/cases")
        assert {c["trader_id"] for c in everyone["items"]} == {"sof-2"}  # seeded tiers cover

        status, timeline = await api.call(
            "GET", f"/api/v1/traders/{cleared.trader_id}/timeline", role=Role.COMPLIANCE
        )
        assert status == 200, timeline
        kinds = [item["kind"] for item in timeline["items"]]
        assert "kyc.enhanced_approved" in kinds
        entry = next(i for i in timeline["items"] if i["kind"] == "kyc.enhanced_approved")
        assert entry["data"]["after"]["evidence"] == "dms://kyc/sof-1/payslips"
        assert entry["data"]["actor"] == Role.COMPLIANCE.value
