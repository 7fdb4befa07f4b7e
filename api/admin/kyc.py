"""KYC through the KYC supervisor (`actors/kyc_supervisor.py`): the jurisdiction policy, a
trader's case, compliance's queues (open cases by deadline, screening hits) and its decisions,
a trader's identity fields (the signup trigger: recorded and screened), document verifications
opened at the provider, and enhanced due diligence approved by compliance.

A tier recorded by hand (`PUT /api/v1/traders/{id}/kyc`) and the clearance question
(`GET .../kyc/clearance`, answered by the payout supervisor) stay with the payout endpoints
(`api/admin/payouts.py`).
"""

from __future__ import annotations

import datetime
import time
from typing import Any

import msgspec
from pydantic import BaseModel, ConfigDict, Field, field_validator
from ray.exceptions import RayError

from actors.kyc_supervisor import KycError
from api.admin import traders as trader_store
from api.admin.accounts import Reason
from api.auth import Permission
from api.endpoints import Call, Endpoint, Reply
from api.problems import ApiError
from api.services import KYC
from ledger import kyc
from ledger.kyc import Tier


def _supervisor(call: Call) -> Any:
    handle = call.request.app.get(KYC)
    if handle is None:
        raise ApiError(503, "KYC unavailable", "this server runs no KYC supervisor")
    return handle


async def _ask(pending: Any) -> Any:
    try:
        return await pending
    except KycError as exc:
        raise _problem(exc) from None
    except RayError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, KycError):
            raise _problem(cause) from None
        raise ApiError(503, "KYC unavailable", f"the KYC supervisor failed: {exc}") from exc


def _problem(exc: KycError) -> ApiError:
    status, title = {
        "not_found": (404, "Not found"),
        "conflict": (409, "KYC cannot take this step"),
    }.get(exc.code, (503, "KYC unavailable"))
    return ApiError(status, title, exc.detail)


class HitOut(BaseModel):
    id: str
    trader_id: str
    uid: str = Field(description="the list entry: list label and its own id")
    list_name: str
    listed_name: str = Field(description="the listed name or alias that matched")
    score: float
    reasons: list[str]
    status: str = Field(description="open (compliance's queue), cleared or confirmed")
    created_ns: int
    decided_ns: int | None
    decided_by: str | None
    reason: str | None


def hit_out(hit: kyc.HitRecord) -> HitOut:
    return HitOut.model_validate(msgspec.to_builtins(hit))


class HitList(BaseModel):
    items: list[HitOut]


class HitQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: str | None = Field(default=None, pattern="^(open|cleared|confirmed)$")
    trader_id: str | None = Field(default=None, max_length=64)


async def list_hits(call: Call) -> Reply:
    query = call.query_as(HitQuery)
    async with call.engine.connect() as conn:
        found = await kyc.hits(conn, status=query.status, trader_id=query.trader_id)
    return Reply(HitList(items=[hit_out(h) for h in found]))


async def clear_hit(call: Call) -> Reply:
    return await _decide(call, confirm=False)


async def confirm_hit(call: Call) -> Reply:
    return await _decide(call, confirm=True)


async def _decide(call: Call, *, confirm: bool) -> Reply:
    reason = call.body_as(Reason).reason
    assert call.principal is not None
    pending = _supervisor(call).decide.remote(
        call.path("hit_id"), confirm, call.principal.name, reason
    )
    return Reply(hit_out(await _ask(pending)))


class IdentityIn(BaseModel):
    """The light tier's identity fields (name and country are the trader's record)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    date_of_birth: str = Field(examples=["1990-04-21"])

    @field_validator("date_of_birth")
    @classmethod
    def _date(cls, value: str) -> str:
        born = datetime.date.fromisoformat(value)  # ValueError names the bad date
        if not datetime.date(1900, 1, 1) <= born <= datetime.date.today():
            raise ValueError("must be between 1900-01-01 and today")
        return born.isoformat()  # `19680314` is 1968-03-14, as the lists write it


class IdentityOut(BaseModel):
    trader_id: str
    hits: list[HitOut] = Field(
        description="the trader's screening hits waiting for compliance (open)"
    )


async def record_identity(call: Call) -> Reply:
    body = call.body_as(IdentityIn)
    trader_id = call.path("trader_id")
    async with call.engine.connect() as conn:
        await trader_store.load(conn, trader_id)  # 404 for an unknown trader
    found = await _ask(_supervisor(call).signup.remote(trader_id, body.date_of_birth))
    return Reply(IdentityOut(trader_id=trader_id, hits=[hit_out(h) for h in found]), status=201)


class VerificationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tier: Tier = Field(description="full (document and address) or enhanced (source of funds)")


class VerificationOut(BaseModel):
    trader_id: str
    tier: Tier
    provider_ref: str = Field(description="the provider's reference; documents stay there")


async def open_verification(call: Call) -> Reply:
    body = call.body_as(VerificationIn)
    trader_id = call.path("trader_id")
    async with call.engine.connect() as conn:
        await trader_store.load(conn, trader_id)
    reference = await _ask(_supervisor(call).verify.remote(trader_id, body.tier))
    return Reply(
        VerificationOut(trader_id=trader_id, tier=body.tier, provider_ref=reference), status=201
    )


class CaseSummary(BaseModel):
    trader_id: str
    tier: Tier = Field(description="verified")
    requested: Tier | None = Field(description="the tier asked for, if a request is open")
    requested_ns: int | None
    deadline_ns: int | None
    reminders_sent: int
    escalated_ns: int | None = Field(description="when the request passed its deadline")
    overdue: bool


def case_summary(trader_id: str, case: kyc.Case, now_ns: int) -> CaseSummary:
    return CaseSummary(
        trader_id=trader_id,
        tier=case.tier,
        requested=case.requested,
        requested_ns=case.requested_ns,
        deadline_ns=case.deadline_ns,
        reminders_sent=case.reminders_sent,
        escalated_ns=case.escalated_ns,
        overdue=case.deadline_ns is not None and case.deadline_ns <= now_ns,
    )


class VerificationRecord(BaseModel):
    provider_ref: str
    tier: Tier
    status: str = Field(description="pending, approved, rejected or resubmission_requested")
    reason: str | None
    occurred_ns: int = Field(description="the provider's time of its latest report (0: none)")


class CaseOut(CaseSummary):
    effective: Tier = Field(description="what payouts see: none while a screening hit stands")
    date_of_birth: str | None
    country: str | None
    hits: list[HitOut]
    verifications: list[VerificationRecord]


async def get_case(call: Call) -> Reply:
    trader_id = call.path("trader_id")
    async with call.engine.connect() as conn:
        await trader_store.load(conn, trader_id)  # 404 for an unknown trader
        case = await kyc.case(conn, trader_id) or kyc.Case(tier=Tier.NONE, requested=None)
        effective = (await kyc.tiers(conn, [trader_id]))[trader_id]
        found = await kyc.hits(conn, trader_id=trader_id)
        checks = await kyc.verifications(conn, trader_id)
    summary = case_summary(trader_id, case, time.time_ns())
    return Reply(
        CaseOut(
            **summary.model_dump(),
            effective=effective,
            date_of_birth=case.dob,
            country=case.country,
            hits=[hit_out(h) for h in found],
            verifications=[
                VerificationRecord.model_validate(msgspec.to_builtins(v)) for v in checks
            ],
        )
    )


class CaseQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: str = Field(
        default="open", pattern="^(open|overdue)$", description="open: every request; overdue"
    )
    limit: int = Field(default=100, ge=1, le=1000)


class CaseList(BaseModel):
    items: list[CaseSummary]


async def list_cases(call: Call) -> Reply:
    query = call.query_as(CaseQuery)
    now = time.time_ns()
    async with call.engine.connect() as conn:
        found = await kyc.open_cases(
            conn, overdue_at_ns=now if query.status == "overdue" else None, limit=query.limit
        )
    return Reply(CaseList(items=[case_summary(t, c, now) for t, c in found]))


class EnhancedIn(BaseModel):
    """Compliance's review of a trader's source of funds."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    source_of_funds: str = Field(
        min_length=10,
        max_length=2000,
        description="where the trader's money comes from, as reviewed",
        examples=["salary as a software engineer since 2015; payslips reviewed"],
    )
    evidence: str | None = Field(
        default=None,
        max_length=200,
        description="the reference of the evidence in the firm's document store (never the "
        "document)",
    )
    reason: str = Field(min_length=3, max_length=500)


class TierOut(BaseModel):
    trader_id: str
    tier: Tier


async def approve_enhanced(call: Call) -> Reply:
    body = call.body_as(EnhancedIn)
    trader_id = call.path("trader_id")
    async with call.engine.connect() as conn:
        await trader_store.load(conn, trader_id)
    assert call.principal is not None
    pending = _supervisor(call).approve_enhanced.remote(
        trader_id, body.source_of_funds, body.evidence, call.principal.name, body.reason
    )
    case = await _ask(pending)
    return Reply(TierOut(trader_id=trader_id, tier=case.tier))


async def get_policy(call: Call) -> Reply:
    policy = await _ask(_supervisor(call).policy.remote())
    return Reply(msgspec.to_builtins(policy) | {"high_risk": policy.high_risk()})


ENDPOINTS = [
    Endpoint(
        "GET",
        "/api/v1/kyc/policy",
        "get_kyc_policy",
        "The KYC policy: the tier each trigger asks for, thresholds and deadlines, by "
        "jurisdiction.",
        get_policy,
        Permission.KYC_READ,
        "kyc",
        errors=(503,),
    ),
    Endpoint(
        "GET",
        "/api/v1/traders/{trader_id}/kyc",
        "get_kyc",
        "A trader's KYC case: the verified and effective tier, the tier asked for with its "
        "deadline, reminders and escalation, screening hits and verifications.",
        get_case,
        Permission.KYC_READ,
        "kyc",
        response=CaseOut,
    ),
    Endpoint(
        "GET",
        "/api/v1/kyc/cases",
        "list_kyc_cases",
        "Compliance's queue of open KYC requests, the nearest deadline first; `status=overdue`: "
        "those past it (escalated).",
        list_cases,
        Permission.KYC_READ,
        "kyc",
        query=CaseQuery,
        response=CaseList,
    ),
    Endpoint(
        "POST",
        "/api/v1/traders/{trader_id}/kyc/enhanced",
        "approve_kyc_enhanced",
        "Approve enhanced due diligence after reviewing the source of funds (audited, with the "
        "evidence's reference): the trader must be verified to full with no screening hit "
        "standing; held payouts are decided again.",
        approve_enhanced,
        Permission.KYC_WRITE,
        "kyc",
        body=EnhancedIn,
        response=TierOut,
        errors=(409, 503),
    ),
    Endpoint(
        "GET",
        "/api/v1/kyc/hits",
        "list_kyc_hits",
        "Sanctions and PEP screening hits; `status=open` is compliance's queue.",
        list_hits,
        Permission.KYC_READ,
        "kyc",
        query=HitQuery,
        response=HitList,
    ),
    Endpoint(
        "POST",
        "/api/v1/kyc/hits/{hit_id}/clear",
        "clear_kyc_hit",
        "Clear an open hit as another person (with a reason, audited): held payouts released.",
        clear_hit,
        Permission.KYC_WRITE,
        "kyc",
        body=Reason,
        response=HitOut,
        errors=(409, 503),
    ),
    Endpoint(
        "POST",
        "/api/v1/kyc/hits/{hit_id}/confirm",
        "confirm_kyc_hit",
        "Confirm an open hit as a true match (with a reason, audited): payouts stay held.",
        confirm_hit,
        Permission.KYC_WRITE,
        "kyc",
        body=Reason,
        response=HitOut,
        errors=(409, 503),
    ),
    Endpoint(
        "POST",
        "/api/v1/traders/{trader_id}/kyc/identity",
        "record_kyc_identity",
        "Record the light tier's identity fields: the signup trigger asks for the policy's tier "
        "and screens the trader.",
        record_identity,
        Permission.KYC_WRITE,
        "kyc",
        body=IdentityIn,
        response=IdentityOut,
        status=201,
        errors=(503,),
    ),
    Endpoint(
        "POST",
        "/api/v1/traders/{trader_id}/kyc/verifications",
        "open_kyc_verification",
        "Open a document verification at the provider; its outcome arrives by webhook.",
        open_verification,
        Permission.KYC_WRITE,
        "kyc",
        body=VerificationIn,
        response=VerificationOut,
        status=201,
        errors=(503,),
    ),
]
