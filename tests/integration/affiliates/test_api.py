"""Affiliates over HTTP, with the supervisor as a Ray actor: a manager sets up a plan, a
parent and a sub-affiliate with codes; a referral; sales and a refund; finance runs the weekly
payout (once per run id); the statement, the reconciliation, and a partner token that sees its
own statement only."""

from __future__ import annotations

import datetime
from typing import Any

import msgspec
import pytest
import ray
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from actors.affiliates import AffiliateConfig, AffiliateSupervisor, start_affiliates
from actors.alerts import AffiliateReconciliation
from actors.commissions import CommissionPlan
from actors.hub import HubConfig, HubState, RemoteRiskHub
from api.auth import Role
from ledger import books
from ledger.affiliates import payable
from ledger.schema import alert_rules, purchases
from tests.api import serve
from tests.integration.affiliates.conftest import DAY, NOV_1, affiliate, plan, sale, trader

pytestmark = [pytest.mark.usefixtures("ray_session"), pytest.mark.postgres]


async def test_a_partner_programme_from_plan_to_payout_over_http(
    engine: AsyncEngine, migrated_postgres_url: str
) -> None:
    handle = start_affiliates(migrated_postgres_url, AffiliateConfig(tick_s=0, min_payout=5_00))
    try:
        async with serve(engine, affiliates=handle) as api:
            await _programme(api, engine)
    finally:
        await handle.close.remote()
        ray.kill(handle)


async def _programme(api: Any, engine: AsyncEngine) -> None:
    plan = {
        "plan_id": "std",
        "effective_ns": 0,
        "plan": {
            "currency": "USD",
            "tiers": [{"from_volume": 0, "rate_bp": 1000}],
            "overrides_bp": [500],
        },
    }
    status, created = await api.call(
        "POST", "/api/v1/commission-plans", role=Role.AFFILIATE_MANAGER, json=plan
    )
    assert (status, created["version"]) == (201, 1), created
    bad = {**plan, "plan": {"currency": "USD", "tiers": [{"from_volume": 5, "rate_bp": 1}]}}
    status, refused = await api.call("POST", "/api/v1/commission-plans", json=bad)
    assert status == 422, refused
    assert "first tier must start at a volume of 0" in str(refused)

    parent = {
        "id": "partner-x",
        "name": "Channel X",
        "email": "x@partner.test",
        "plan_id": "std",
        "payout_rail": "bank_wire",
        "payout_destination": "IBAN-X",
        "codes": ["chanx"],
    }
    child = {
        "id": "sub-y",
        "name": "Community Y",
        "email": "y@partner.test",
        "plan_id": "std",
        "parent_id": "partner-x",
        "payout_rail": "e_wallet",
        "payout_destination": "wallet-y",
        "codes": ["comy"],
    }
    for body in (parent, child):
        status, made = await api.call(
            "POST", "/api/v1/affiliates", role=Role.AFFILIATE_MANAGER, json=body
        )
        assert status == 201, made
    status, taken = await api.call("POST", "/api/v1/affiliates", json={**child, "id": "z"})
    assert status == 409, taken  # the code comy is taken
    status, orphan = await api.call(
        "POST", "/api/v1/affiliates", json={**child, "id": "z", "codes": [], "parent_id": "no"}
    )
    assert (status, orphan["errors"][0]["field"]) == (422, "body.parent_id")

    now = datetime.datetime.now(datetime.UTC)
    today_ns = int(now.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()) * 10**9
    await trader(engine, "ref-1", None, today_ns - 3 * DAY)
    status, touched = await api.call(
        "POST",
        "/api/v1/traders/ref-1/referrals",
        role=Role.OPERATIONS,
        json={"code": "comy", "ts_ns": today_ns - DAY},
    )
    assert (status, touched["affiliate_id"]) == (201, "sub-y")
    async with engine.begin() as conn:
        await conn.execute(
            insert(purchases).values(
                id="pur-1",
                trader_id="ref-1",
                plan_id="p",
                plan_version=1,
                payment_reference="psp-1",
                amount_minor=400_00,
                currency="USD",
                country="DE",
                account_id="acc-1",
                created_ns=today_ns + 1,
            )
        )
    await sale(engine, "purchase:pur-1", "purchase", "pur-1", "ref-1", 400_00, today_ns + 1)

    refund = {
        "event_id": "psp-refund-1",
        "kind": "refund",
        "amount": "100.00",
        "reason": "customer asked",
    }
    path = "/api/v1/purchases/pur-1/reversals"
    status, recorded = await api.call("POST", path, role=Role.OPERATIONS, json=refund)
    assert (status, recorded["refunded"]) == (201, "100.00"), recorded
    status, again = await api.call("POST", path, role=Role.OPERATIONS, json=refund)
    assert (status, again["event_id"]) == (200, recorded["event_id"])  # a retry, once
    status, reused = await api.call("POST", path, json={**refund, "amount": "5.00"})
    assert status == 409, reused
    status, too_much = await api.call(
        "POST", path, json={**refund, "event_id": "psp-refund-2", "amount": "300.01"}
    )
    assert (status, too_much["errors"][0]["field"]) == (422, "body.amount")

    status, run = await api.call(
        "POST", "/api/v1/affiliate-payouts/runs", role=Role.FINANCE, json={"run_id": "week-1"}
    )
    assert status == 200, run
    paid = sorted((p["affiliate_id"], p["amount"], p["rail"]) for p in run["paid"])
    assert paid == [("partner-x", 15_00, "bank_wire"), ("sub-y", 30_00, "e_wallet")]
    status, rerun = await api.call(
        "POST", "/api/v1/affiliate-payouts/runs", role=Role.FINANCE, json={"run_id": "week-1"}
    )
    assert sorted(p["id"] for p in rerun["paid"]) == sorted(p["id"] for p in run["paid"])
    denied = await api.call(
        "POST",
        "/api/v1/affiliate-payouts/runs",
        role=Role.AFFILIATE_MANAGER,
        json={"run_id": "week-2"},
    )
    assert denied[0] == 403

    day = now.date().isoformat()
    query = f"?from={day}&to={day}&currency=USD"
    status, statement = await api.call(
        "GET", f"/api/v1/affiliates/sub-y/statement{query}", role=Role.AFFILIATE_MANAGER
    )
    assert status == 200, statement
    assert (statement["earned"], statement["clawed"], statement["paid"], statement["closing"]) == (
        40_00,
        -10_00,
        30_00,
        0,
    )  # 10% of 400.00, a quarter refunded, the rest paid
    status, reconciled = await api.call(
        "GET", "/api/v1/affiliate-reconciliation", role=Role.FINANCE
    )
    assert (status, reconciled["ok"], reconciled["paid"]) == (200, True, {"USD": 45_00})

    status, issued = await api.call(
        "POST", "/api/v1/affiliates/partner-x/tokens", role=Role.AFFILIATE_MANAGER
    )
    assert status == 201, issued
    partner = {"Authorization": f"Bearer {issued['token']}"}
    own = await api.call(
        "GET", f"/api/v1/affiliates/partner-x/statement{query}", role=None, headers=partner
    )
    assert (own[0], own[1]["earned"]) == (200, 20_00)  # 5% of 400.00, its override
    other = await api.call(
        "GET", f"/api/v1/affiliates/sub-y/statement{query}", role=None, headers=partner
    )
    assert other[0] == 404  # another affiliate's: not there for this partner
    profile = await api.call("GET", "/api/v1/affiliates/partner-x", role=None, headers=partner)
    assert profile[0] == 403


async def test_a_difference_with_the_books_raises_an_alert_on_the_risk_hub(
    engine: AsyncEngine, migrated_postgres_url: str
) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            insert(alert_rules).values(
                id="ar_affiliate_reconciliation",
                name="books differ",
                severity="critical",
                enabled=1,
                condition=msgspec.json.encode(AffiliateReconciliation()).decode(),
                created_ns=1,
                updated_ns=1,
            )
        )
    await plan(engine, "flat", CommissionPlan(currency="USD"))
    await affiliate(engine, "aff-m", "flat")
    await trader(engine, "tm", "code-aff-m", NOV_1)
    await sale(engine, "pm", "purchase", "pur-m", "tm", 300_00, NOV_1 + DAY)
    hub = RemoteRiskHub.remote(migrated_postgres_url, HubConfig())
    supervisor = AffiliateSupervisor(migrated_postgres_url, AffiliateConfig(tick_s=0), hub=hub)
    try:
        await supervisor.accrue()
        assert (await supervisor.reconcile()).ok
        async with engine.begin() as conn:  # a transfer nobody accrued: the books differ
            await books.transfer(
                conn, "stray-1", payable("aff-m", "USD"), "affiliates:expense:USD", 1
            )
        found = await supervisor.reconcile()
        assert [(d.affiliate_id, d.accrued, d.paid, d.books) for d in found.differences] == [
            ("aff-m", 30_00, 0, 29_99)
        ]
        state = msgspec.msgpack.decode(await hub.state.remote(), type=HubState)
        assert [(a.kind, a.subject, a.severity) for a in state.alerts] == [
            ("affiliate_reconciliation", "affiliate:aff-m", "critical")
        ]
        await supervisor.reconcile()  # the same difference again: no second alert
        state = msgspec.msgpack.decode(await hub.state.remote(), type=HubState)
        assert len(state.alerts) == 1
    finally:
        await supervisor.close()
        ray.kill(hub)
