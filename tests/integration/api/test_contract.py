"""The API's contract, checked against the running app on PostgreSQL and a real runtime: every
route with every role against the permission matrix as written here, and a property-based fuzzer
(schemathesis) over the generated OpenAPI document: no 5xx, no answer outside the schema."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import hypothesis
import pytest
import ray
import schemathesis
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy.ext.asyncio import AsyncEngine

from actors.affiliates import AffiliateConfig, start_affiliates
from actors.kyc_supervisor import KycConfig, start_kyc
from actors.payouts import start_payouts
from actors.plans import DEFAULT_PLAN
from actors.runtime import Runtime, RuntimeConfig
from actors.verification import VerifierConfig
from api.app import endpoints
from api.auth import Role
from bridge.connections import EmbeddedConnection
from bridge.simulator import SimulatorConfig
from ledger.database import create_engine
from tests.api import Api, serve
from tests.database import run_async, truncate_ledger

pytestmark = pytest.mark.usefixtures("ray_session")

EVERYONE = set(Role) - {Role.PARTNER}  # every staff role: a partner reads its statement only
ADM, RSK, OPS, FIN, CMP, SUP, AFF, PTN = (
    Role.ADMIN, Role.RISK, Role.OPERATIONS, Role.FINANCE, Role.COMPLIANCE, Role.SUPPORT,
    Role.AFFILIATE_MANAGER, Role.PARTNER,
)  # fmt: skip
ALLOWED: dict[str, set[Role]] = {
    "health": set(Role),  # any valid token, a partner's too
    "stats": EVERYONE,
    "create_plan": {ADM, OPS},
    "list_plans": EVERYONE,
    "get_plan": EVERYONE,
    "list_plan_versions": EVERYONE,
    "get_plan_version": EVERYONE,
    "create_trader": {ADM, OPS},
    "list_traders": EVERYONE,
    "get_trader": EVERYONE,
    "create_sales_rep": {ADM, OPS},
    "list_sales_reps": {ADM, OPS, AFF},
    "get_sales_rep": {ADM, OPS, AFF},
    "update_sales_rep": {ADM, OPS},
    "create_lead_rule": {ADM, OPS},
    "list_lead_rules": {ADM, OPS, AFF},
    "delete_lead_rule": {ADM, OPS},
    "create_purchase": {ADM, OPS},
    "reverse_purchase": {ADM, OPS},
    "create_commission_plan": {ADM, AFF},
    "get_commission_plan": {ADM, FIN, AFF},
    "create_affiliate": {ADM, AFF},
    "get_affiliate": {ADM, FIN, AFF},
    "add_affiliate_code": {ADM, AFF},
    "record_referral": {ADM, OPS},
    "get_affiliate_statement": {ADM, FIN, AFF, PTN},
    "run_affiliate_payouts": {ADM, FIN},
    "list_affiliate_payouts": {ADM, FIN, AFF},
    "get_affiliate_reconciliation": {ADM, FIN, AFF},
    "issue_partner_token": {ADM, AFF},
    "list_purchases": {ADM, OPS, FIN, CMP, SUP},
    "get_purchase": {ADM, OPS, FIN, CMP, SUP},
    "get_account": EVERYONE,
    "list_accounts": EVERYONE,
    "freeze_account": {ADM, RSK},
    "unfreeze_account": {ADM, RSK},
    "provision_account": {ADM, OPS},
    "get_trader_timeline": {ADM, RSK, OPS, CMP, SUP},
    "report_transactions": {ADM, FIN, CMP},
    "report_cohorts": {ADM, RSK, OPS, FIN, AFF},
    "get_exposure": {ADM, RSK},
    "list_alerts": {ADM, RSK},
    "acknowledge_alert": {ADM, RSK},
    "list_alert_rules": {ADM, RSK},
    "create_alert_rule": {ADM, RSK},
    "replace_alert_rule": {ADM, RSK},
    "delete_alert_rule": {ADM, RSK},
    "load_calendar": {ADM, RSK},
    "list_calendar": {ADM, RSK},
    "create_payout": {ADM, OPS},
    "list_payouts": {ADM, OPS, FIN, CMP, SUP},
    "get_payout": {ADM, OPS, FIN, CMP, SUP},
    "approve_payout": {ADM, FIN},
    "reject_payout": {ADM, FIN},
    "get_kyc": {ADM, FIN, CMP, SUP},
    "set_kyc": {ADM, CMP},
    "get_kyc_policy": {ADM, FIN, CMP, SUP},
    "get_kyc_clearance": {ADM, FIN, CMP, SUP},
    "list_kyc_cases": {ADM, FIN, CMP, SUP},
    "approve_kyc_enhanced": {ADM, CMP},
    "list_kyc_hits": {ADM, FIN, CMP, SUP},
    "clear_kyc_hit": {ADM, CMP},
    "confirm_kyc_hit": {ADM, CMP},
    "record_kyc_identity": {ADM, CMP},
    "open_kyc_verification": {ADM, CMP},
    "list_audit": {ADM, RSK, CMP},
    "verify_audit": {ADM, RSK, CMP},
}
"""Who may call each route, written out by hand: a change to the matrix or to a route's
permission that moves one of these fails here until this table agrees."""


@pytest.fixture(scope="module")
async def engine(migrated_postgres_url: str) -> AsyncIterator[AsyncEngine]:
    run_async(truncate_ledger(migrated_postgres_url))
    engine = create_engine(migrated_postgres_url)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="module")
async def api(engine: AsyncEngine, migrated_postgres_url: str) -> AsyncIterator[Api]:
    quiet = SimulatorConfig(server="fuzz", ticks_per_second=0.0, trades_per_trader_per_minute=0.0)
    runtime = Runtime(
        RuntimeConfig(
            database_url=migrated_postgres_url,
            shards=1,
            plan=DEFAULT_PLAN,
            connections=(EmbeddedConnection(name="fuzz", simulator=quiet),),
            command_timeout_s=5.0,
        )
    )
    await runtime.start()
    payouts = start_payouts(migrated_postgres_url, runtime)
    verifier = VerifierConfig(webhook_url="http://127.0.0.1:9/none", secret=b"contract")
    kyc = start_kyc(migrated_postgres_url, config=KycConfig(tick_s=0, verifier=verifier))
    affiliates = start_affiliates(migrated_postgres_url, AffiliateConfig(tick_s=0))
    try:
        async with serve(
            engine, runtime, hub=runtime.hub, payouts=payouts, kyc=kyc, affiliates=affiliates
        ) as client:
            yield client
    finally:
        await affiliates.close.remote()
        ray.kill(affiliates)
        await payouts.close.remote()
        ray.kill(payouts)
        await kyc.close.remote()
        ray.kill(kyc)
        await runtime.close()


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("GET", "/api/v1/traders/a%00b", None, "path.trader_id"),
        ("GET", "/api/v1/accounts?plan=x%00", None, "query.plan"),
        ("POST", "/api/v1/traders", {"name": "A\u0000"}, "body"),
        ("POST", "/api/v1/purchases", {"trader_id": "t", "plan_id": "p", "plan_version": 2**31,
                                       "payment_reference": "r", "currency": "USD",
                                       "amount": "1.00"}, "body.plan_version"),
        ("POST", "/api/v1/purchases", {"trader_id": "t", "plan_id": "p", "payment_reference": "r",
                                       "currency": "JPY", "amount": "10.50"}, "body.amount"),
    ],
)  # fmt: skip
async def test_values_the_database_cannot_hold_are_refused_naming_the_field(
    api: Api, method: str, path: str, body: object, field: str
) -> None:
    status, problem = await api.call(method, path, json=body)
    assert status == 422, problem
    assert problem["errors"][0]["field"] == field


def test_every_route_is_in_the_written_table() -> None:
    assert sorted(e.operation for e in endpoints()) == sorted(ALLOWED)


async def test_every_route_with_every_role_follows_the_matrix(api: Api) -> None:
    for endpoint in endpoints():
        path = endpoint.path.replace("{", "").replace("}", "")  # any id: auth comes first
        body = {} if endpoint.body is not None else None
        if endpoint.permission is not None:
            status, _ = await api.call(endpoint.method, path, role=None, json=body)
            assert status == 401, (endpoint.operation, "no token", status)
        for role in Role:
            status, answer = await api.call(endpoint.method, path, role=role, json=body)
            if role in ALLOWED[endpoint.operation]:
                assert status not in (401, 403), (endpoint.operation, role, status, answer)
                assert status < 500, (endpoint.operation, role, status, answer)
            else:
                assert status == 403, (endpoint.operation, role, status, answer)
                assert role.value in answer["detail"]


async def test_fuzzing_the_openapi_document_finds_no_5xx_and_no_answer_off_schema(
    api: Api,
) -> None:
    plan = {**{"id": "fz", "name": "Fuzz"}, "initial_balance": 5000, "phases": [{"name": "one"}]}
    await api.call("POST", "/api/v1/plans", json=plan)  # something real to find, too
    failures = await asyncio.to_thread(fuzz, api.url, api.tokens[Role.ADMIN], 15)
    assert not failures, "\n\n".join(failures)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def fuzz(url: str, token: str, examples: int) -> list[str]:
    """Valid and invalid requests to every operation; each failure as text."""
    schema = schemathesis.openapi.from_url(f"{url}/api/openapi.json")
    headers = {"Authorization": f"Bearer {token}"}
    failures = []
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            @hypothesis.settings(
                max_examples=examples,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(hypothesis.HealthCheck),
            )
            def run(case: schemathesis.Case) -> None:
                case.call_and_validate(base_url=url, headers=headers, checks=CHECKS)

            try:
                run()
            except Unsatisfiable:
                continue  # nothing to make invalid: no parameters and no body
            except Exception as exc:
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    return failures
