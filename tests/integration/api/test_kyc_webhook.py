"""KYC over HTTP into the KYC supervisor (Ray, PostgreSQL): the verification provider's
webhooks (a bad signature refused, duplicates harmless, out-of-order reports resolved by the
provider's time, an approval raising the tier), and compliance's screening queue."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import ray
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from actors.kyc_supervisor import KycConfig, start_kyc
from actors.screening import load_simple
from actors.verification import SIGNATURE_HEADER, TIMESTAMP_HEADER, Report, VerifierConfig
from api.auth import Role
from ledger import kyc
from ledger.database import create_engine
from ledger.kyc import Tier
from ledger.schema import audit_log, traders
from ledger.signing import sign
from tests.api import Api, serve
from tests.database import run_async, truncate_ledger

pytestmark = [pytest.mark.usefixtures("ray_session"), pytest.mark.postgres]

SECRET = b"kyc-webhook-test-secret"
LISTS = Path(__file__).resolve().parents[3] / "deploy" / "kyc" / "lists"
VARLAMOV = "SANCTIONS-TEST:aleksandr-petrovich-varlamov-1968-03-14"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def engine(migrated_postgres_url: str) -> AsyncIterator[AsyncEngine]:
    run_async(truncate_ledger(migrated_postgres_url))
    engine = create_engine(migrated_postgres_url)
    async with engine.begin() as conn:
        await conn.execute(traders.delete())
        names = {"v-1": "Trader v-1", "v-2": "Trader v-2", "v-3": "Trader v-3",
                 "v-4": "VARLAMOV, Aleksandr P."}  # fmt: skip
        for trader_id, name in names.items():
            await conn.execute(
                traders.insert().values(
                    id=trader_id, email=f"{trader_id}@example.test", name=name,
                    country="DE", language="en", timezone="UTC", source="direct",
                    created_ns=time.time_ns(),
                )
            )  # fmt: skip
    yield engine
    await engine.dispose()


@pytest.fixture
async def served(migrated_postgres_url: str, engine: AsyncEngine) -> AsyncIterator[tuple[Api, Any]]:
    port = free_port()
    verifier = VerifierConfig(
        webhook_url=f"http://127.0.0.1:{port}/webhooks/v1/kyc",
        secret=SECRET,
        duplicate_rate=1.0,  # every final report twice
        stale_rate=1.0,  # and the `pending` one after it
        outcomes={"v-1": "approved", "v-2": "rejected", "v-3": "resubmission_requested"},
    )
    lists = load_simple((LISTS / "sample.csv").read_text(encoding="utf-8"))
    config = KycConfig(tick_s=0, verifier=verifier)
    handle = start_kyc(migrated_postgres_url, lists, config)
    async with serve(engine, kyc=handle, kyc_webhook_secret=SECRET, port=port) as api:
        yield api, handle
    await handle.close.remote()
    ray.kill(handle)


async def post(api: Api, body: bytes, *, secret: bytes = SECRET, at: float | None = None) -> Any:
    timestamp = str(int(time.time() if at is None else at))
    headers = {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: sign(secret, timestamp, body),
               "Content-Type": "application/json"}  # fmt: skip
    async with api.session.post(api.url + "/webhooks/v1/kyc", data=body, headers=headers) as sent:
        return sent.status, await sent.json(content_type=None)


def report(ref: str, trader: str, status: str, occurred_ns: int) -> bytes:
    return msgspec.json.encode(
        Report(event_id=f"{ref}:{occurred_ns}", provider_ref=ref, trader_id=trader,
               tier=Tier.FULL, status=status, occurred_ns=occurred_ns)  # type: ignore[arg-type]
    )  # fmt: skip


async def verification_actions(engine: AsyncEngine, trader: str) -> list[str]:
    query = select(audit_log.c.action, audit_log.c.after).where(audit_log.c.trader_id == trader)
    async with engine.connect() as conn:
        rows = (await conn.execute(query.order_by(audit_log.c.seq))).all()
    return [r.action for r in rows]


async def test_a_simulated_approval_arrives_twice_and_late_and_is_applied_once(
    served: tuple[Api, Any], engine: AsyncEngine
) -> None:
    _, handle = served
    approved = await handle.verify.remote("v-1", Tier.FULL)
    rejected = await handle.verify.remote("v-2", Tier.FULL)

    sent = await handle.delivered.remote()

    assert [r.status for r in sent if r.provider_ref == approved] == [
        "approved", "approved", "pending"
    ]  # fmt: skip
    async with engine.connect() as conn:
        one, two = await kyc.verifications(conn, "v-1"), await kyc.verifications(conn, "v-2")
        tiers = await kyc.tiers(conn, ["v-1", "v-2"])
    assert [(v.provider_ref, v.status) for v in one] == [(approved, "approved")]
    assert [(v.provider_ref, v.status, v.reason) for v in two] == [
        (rejected, "rejected", "document expired")
    ]
    assert tiers == {"v-1": Tier.FULL, "v-2": Tier.NONE}
    assert await verification_actions(engine, "v-1") == [
        "kyc.verification_started", "kyc.verification", "kyc.verified"
    ]  # fmt: skip


async def test_bad_signatures_and_malformed_reports_are_refused(
    served: tuple[Api, Any], engine: AsyncEngine
) -> None:
    api, handle = served
    ref = await handle.verify.remote("v-3", Tier.FULL)
    body = report(ref, "v-3", "approved", time.time_ns())

    assert (await post(api, body, secret=b"not-the-secret"))[0] == 401
    assert (await post(api, body, at=time.time() - 3_600))[0] == 401  # an old signed request
    status, found = await post(api, b'{"provider_ref": 1}')
    assert (status, found["title"]) == (400, "Malformed report")
    status, found = await post(api, report("ver_nope", "v-3", "approved", time.time_ns()))
    assert (status, found["title"]) == (503, "Unknown verification")  # the provider retries
    async with api.session.post(api.url + "/webhooks/v1/kyc", data=body) as unsigned:
        assert unsigned.status == 401


async def test_out_of_order_reports_resolve_by_the_providers_time(
    served: tuple[Api, Any], engine: AsyncEngine
) -> None:
    api, handle = served
    ref = await handle.verify.remote("v-3", Tier.FULL)
    await handle.delivered.remote()  # the simulated provider's own reports are out of the way
    base = time.time_ns() + 10**9

    newer = await post(api, report(ref, "v-3", "resubmission_requested", base + 2_000))
    older = await post(api, report(ref, "v-3", "approved", base + 1_000))  # late
    again = await post(api, report(ref, "v-3", "resubmission_requested", base + 2_000))

    assert [newer, older, again] == [
        (200, {"outcome": "applied"}), (200, {"outcome": "stale"}), (200, {"outcome": "stale"})
    ]  # fmt: skip
    async with engine.connect() as conn:
        found = await kyc.verifications(conn, "v-3")
        tiers = await kyc.tiers(conn, ["v-3"])
    assert [(v.status, v.occurred_ns) for v in found] == [("resubmission_requested", base + 2_000)]
    assert tiers == {"v-3": Tier.NONE}  # the late approval did not count


async def test_compliance_works_the_screening_queue(served: tuple[Api, Any]) -> None:
    api, _ = served
    status, recorded = await api.call(
        "POST", "/api/v1/traders/v-4/kyc/identity", role=Role.COMPLIANCE,
        json={"date_of_birth": "19680314"},  # ISO without dashes: stored as 1968-03-14
    )  # fmt: skip
    assert status == 201, recorded
    assert [h["uid"] for h in recorded["hits"]] == [VARLAMOV]
    status, bad = await api.call(
        "POST", "/api/v1/traders/v-4/kyc/identity", role=Role.COMPLIANCE,
        json={"date_of_birth": "1968-02-30"},
    )  # fmt: skip
    assert (status, bad["errors"][0]["field"]) == (422, "body.date_of_birth"), bad

    status, queue = await api.call("GET", "/api/v1/kyc/hits", params={"status": "open"})
    assert status == 200
    hit_id = queue["items"][0]["id"]
    assert [h["trader_id"] for h in queue["items"]] == ["v-4"]
    reason = {"reason": "passport checked: another person"}
    denied = await api.call("POST", f"/api/v1/kyc/hits/{hit_id}/clear", role=Role.SUPPORT,
                            json=reason)  # fmt: skip
    assert denied[0] == 403
    status, cleared = await api.call(
        "POST", f"/api/v1/kyc/hits/{hit_id}/clear", role=Role.COMPLIANCE, json=reason
    )
    assert (status, cleared["status"], cleared["decided_by"]) == (200, "cleared", "compliance")
    again = await api.call("POST", f"/api/v1/kyc/hits/{hit_id}/confirm", role=Role.COMPLIANCE,
                           json=reason)  # fmt: skip
    assert again[0] == 409
    missing = await api.call("POST", "/api/v1/kyc/hits/nope/clear", role=Role.COMPLIANCE,
                             json=reason)  # fmt: skip
    assert missing[0] == 404
    status, opened = await api.call(
        "POST", "/api/v1/traders/v-4/kyc/verifications", role=Role.COMPLIANCE,
        json={"tier": "full"},
    )  # fmt: skip
    assert (status, opened["provider_ref"].startswith("ver_")) == (201, True)

    status, policy = await api.call("GET", "/api/v1/kyc/policy", role=Role.FINANCE)
    assert status == 200
    assert policy["high_risk"] == ["NG", "PK"]
    assert policy["default"]["funded"] == "full"
    assert policy["jurisdictions"]["AE"]["enhanced_payout_above"] == 500000
