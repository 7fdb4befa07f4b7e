"""Payouts through HTTP on a real runtime: a population of compliant traders and seeded
violators decided by the checklist, the approved paid (ledger, provider webhooks, platform
balance reset), finance's review queue, KYC releasing a held payout, and every step in the
audit trail and the trader's timeline."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from actors.runtime import Runtime
from api.auth import Role
from ledger import books, kyc
from loadtests.funded import Trader, seed
from tests.api import Api
from tests.conftest import eventually

pytestmark = [pytest.mark.usefixtures("ray_session"), pytest.mark.postgres]

COMPLIANT = 60


def population() -> dict[str, list[Trader]]:
    def group(name: str, n: int, **fields: Any) -> list[Trader]:
        return [
            Trader(trader_id=f"{name}-{i}", account_id=f"acc-{name}-{i}", **fields)
            for i in range(n)
        ]

    return {
        "compliant": group("ok", COMPLIANT),
        "consistency": group("one-day", 3, days=(900.0,)),  # all the profit on one day
        "breach": group("breach", 3, days=(300.0, -600.0)),  # a daily loss above 500
        "kyc": group("no-kyc", 3, tier=kyc.Tier.NONE),
        "duplicate": group("dup", 3),  # pays to a compliant trader's destination
    }


def payout_body(
    trader: Trader, amount: str = "500.00", destination: str | None = None
) -> dict[str, Any]:
    return {
        "account_id": trader.account_id,
        "currency": "USD",
        "amount": amount,
        "destination": destination or f"DE89-{trader.trader_id}",
        "device": f"device-{trader.trader_id}",
        "ip": "198.51.100.7" if trader.trader_id.startswith("dup") else "",
    }


async def post(api: Api, key: str, body: dict[str, Any]) -> tuple[int, bool, dict[str, Any]]:
    """(status, whether it was marked a replay, body) of a payout request."""
    headers = {"Authorization": f"Bearer {api.tokens[Role.OPERATIONS]}", "Idempotency-Key": key}
    async with api.session.post(api.url + "/api/v1/payouts", json=body, headers=headers) as sent:
        replayed = sent.headers.get("Idempotent-Replayed") == "true"
        return sent.status, replayed, dict(await sent.json())


async def ask(api: Api, key: str, body: dict[str, Any]) -> dict[str, Any]:
    status, found = await api.call(
        "POST", "/api/v1/payouts", role=Role.OPERATIONS, json=body, headers={"Idempotency-Key": key}
    )
    assert status == 201, found
    return dict(found)


async def test_compliant_traders_are_auto_approved_and_every_seeded_violator_is_caught(
    api: Api, engine: AsyncEngine, runtime: Runtime, supervisor: Any
) -> None:
    groups = population()
    await seed(engine, runtime, [t for g in groups.values() for t in g])
    await wait_for_profit(runtime, groups)

    compliant = await asyncio.gather(
        *(ask(api, f"k-{t.trader_id}", payout_body(t)) for t in groups["compliant"])
    )
    approved = [p for p in compliant if p["status"] == "approved"]
    assert len(approved) >= 0.9 * COMPLIANT, [p["reasons"] for p in compliant]
    assert len(approved) == COMPLIANT  # none of them breaks a rule: all pass
    first = approved[0]
    assert [c["name"] for c in first["checks"]] == [
        "funded", "window", "min_profit", "consistency", "no_breach", "kyc", "duplicates",
        "amount", "rail",
    ]  # fmt: skip
    assert all(c["ok"] for c in first["checks"])
    assert (first["rail"], first["fee"], first["gross"]) == ("card", "7.50", "625.00")

    expected = {"consistency": ("review", "consistency"), "breach": ("rejected", "no_breach"),
                "kyc": ("held", "kyc"), "duplicate": ("review", "duplicates")}  # fmt: skip
    for name, (status, reason) in expected.items():
        for i, trader in enumerate(groups[name]):
            destination = f"DE89-ok-{i}" if name == "duplicate" else None
            decided = await ask(
                api, f"k-{trader.trader_id}", payout_body(trader, destination=destination)
            )
            assert (decided["status"], reason in decided["reasons"]) == (status, True), decided
            failed = {c["name"]: c["detail"] for c in decided["checks"] if not c["ok"]}
            assert reason in failed
    dup = await ask(api, "k-dup-0", payout_body(groups["duplicate"][0], destination="DE89-ok-0"))
    assert (
        "destination also used by ok-0"
        in {c["name"]: c["detail"] for c in dup["checks"]}["duplicates"]
    )

    # The approved are paid: settled by the provider's webhook, the platform balance reduced.
    assert await supervisor.idle.remote(30.0)
    paid = await payout(api, first["id"])
    assert (paid["status"], paid["balance_reset"], paid["attempts"]) == ("settled", True, 1)
    view = await eventually(
        lambda: runtime.account(first["account_id"]),
        lambda v: v is not None and v.balance == 10_275.0,
    )
    assert view is not None  # 10,900 less the gross 625.00 (500.00 to the trader at 80%)

    async with engine.connect() as conn:
        report = await books.reconcile(conn)
        found = await books.balances(conn)
    assert report.ok, report
    paid_out = 500_00 * COMPLIANT
    assert found["payouts:expense:USD"].posted == paid_out
    assert found["payouts:payable:USD"].posted == 0  # everything owed was paid
    assert found["rails:fees:USD"].posted == 750 * COMPLIANT
    assert found["cash:card:USD"].posted == -(paid_out + 750 * COMPLIANT)

    # Each step is in the audit trail and the trader's timeline.
    steps = [
        "payout.request",
        "payout.approved",
        "payout.send",
        "payout.settle",
        "payout.balance_reset",
    ]
    status, trail = await api.call(
        "GET", "/api/v1/audit", params={"target_type": "payout", "target_id": first["id"]}
    )
    assert status == 200, trail
    assert sorted(e["action"] for e in trail["items"]) == sorted(steps)
    status, timeline = await api.call(
        "GET", f"/api/v1/traders/{first['trader_id']}/timeline", params={"kinds": ",".join(steps)}
    )
    assert status == 200, timeline
    assert [i["kind"] for i in timeline["items"]] == steps[::-1]


async def wait_for_profit(runtime: Runtime, groups: dict[str, list[Trader]]) -> None:
    """Until every injected deal reached its shard."""
    for group in groups.values():
        for trader in group:
            total = 10_000 + sum(trader.days)
            await eventually(
                lambda t=trader: runtime.account(t.account_id),  # type: ignore[misc]
                lambda v, total=total: v is not None and v.balance == total,  # type: ignore[misc]
                timeout_s=30.0,
            )


async def payout(api: Api, payout_id: str) -> dict[str, Any]:
    status, found = await api.call("GET", f"/api/v1/payouts/{payout_id}", role=Role.FINANCE)
    assert status == 200, found
    return dict(found)


async def test_finance_works_the_review_queue_and_kyc_releases_a_held_payout(
    api: Api, engine: AsyncEngine, runtime: Runtime, supervisor: Any
) -> None:
    lone = [
        Trader(trader_id=f"one-day-{i}", account_id=f"acc-one-day-{i}", days=(900.0,))
        for i in range(2)
    ]
    unverified = Trader(trader_id="new", account_id="acc-new", tier=kyc.Tier.LIGHT)
    await seed(engine, runtime, [*lone, unverified])
    await wait_for_profit(runtime, {"all": [*lone, unverified]})
    for trader in lone:
        assert (await ask(api, f"k-{trader.trader_id}", payout_body(trader)))["status"] == "review"

    status, queue = await api.call(
        "GET", "/api/v1/payouts", role=Role.FINANCE, params={"status": "review"}
    )
    assert status == 200, queue
    assert sorted(p["account_id"] for p in queue["items"]) == ["acc-one-day-0", "acc-one-day-1"]
    to_pay, to_refuse = sorted(queue["items"], key=lambda p: p["account_id"])

    reason = {"reason": "one big day, from a news-free trend; checked by hand"}
    denied = await api.call(
        "POST", f"/api/v1/payouts/{to_pay['id']}/approve", role=Role.SUPPORT, json=reason
    )
    assert denied[0] == 403
    status, approved = await api.call(
        "POST", f"/api/v1/payouts/{to_pay['id']}/approve", role=Role.FINANCE, json=reason
    )
    assert (status, approved["status"]) == (200, "approved"), approved
    status, refused = await api.call(
        "POST", f"/api/v1/payouts/{to_refuse['id']}/reject", role=Role.FINANCE,
        json={"reason": "gambling on one day"},
    )  # fmt: skip
    assert (status, refused["status"]) == (200, "rejected"), refused
    again = await api.call(
        "POST", f"/api/v1/payouts/{to_refuse['id']}/approve", role=Role.FINANCE, json=reason
    )
    assert again[0] == 409, again
    missing = await api.call(
        "POST", "/api/v1/payouts/po_nope/approve", role=Role.FINANCE, json=reason
    )
    assert missing[0] == 404, missing
    status, trail = await api.call(
        "GET", "/api/v1/audit", params={"target_type": "payout", "target_id": to_pay["id"]}
    )
    approval = next(e for e in trail["items"] if e["action"] == "payout.approve")
    assert (approval["actor"], approval["role"], approval["after"]["reason"]) == (
        "finance", "finance", reason["reason"]
    )  # fmt: skip
    assert await supervisor.idle.remote(30.0)
    assert (await payout(api, to_pay["id"]))["status"] == "settled"

    # A key is one request: the same key with another amount, at the same time, is refused;
    # the same request again answers the payout it made, marked as a replay.
    one_day = lone[0]
    both = await asyncio.gather(
        post(api, "same", payout_body(one_day, "100.00")),
        post(api, "same", payout_body(one_day, "200.00")),
    )
    made = next(found for status, _, found in both if status == 201)
    refused = next(found for status, _, found in both if status != 201)
    assert refused["status"] == 409, both
    assert refused["title"] == "Idempotency-Key reused", refused
    assert [replayed for status, replayed, _ in both if status == 201] == [False]
    status, replayed, again = await post(
        api, "same", payout_body(one_day, made["amount"])
    )  # a true resend: the same payout
    assert (status, replayed, again["id"]) == (201, True, made["id"])
    status, _, bad = await post(api, "k" * 256, payout_body(one_day))
    assert (status, bad["errors"][0]["field"]) == (400, "header.Idempotency-Key"), bad
    status, _ = await api.call("POST", f"/api/v1/payouts/{made['id']}/reject", role=Role.FINANCE,
                               json={"reason": "test request, withdrawn"})  # fmt: skip
    assert status == 409  # rejected (its period is paid), not in review

    # KYC: light is not enough for a payout; the held payout asks for full, and is decided
    # again (approved) when compliance records it.
    held = await ask(api, "k-new", payout_body(unverified))
    assert (held["status"], held["reasons"]) == ("held", ["kyc"]), held
    status, case = await api.call("GET", "/api/v1/traders/new/kyc", role=Role.COMPLIANCE)
    assert (status, case["tier"], case["requested"]) == (200, "light", "full"), case
    status, case = await api.call(
        "PUT", "/api/v1/traders/new/kyc", role=Role.COMPLIANCE,
        json={"tier": "full", "reason": "passport and utility bill verified"},
    )  # fmt: skip
    assert status == 200, case
    assert (case["tier"], case["requested"]) == ("full", None)
    assert [(p["id"], p["status"]) for p in case["released"]] == [(held["id"], "approved")]
    assert await supervisor.idle.remote(30.0)
    assert (await payout(api, held["id"]))["status"] == "settled"
