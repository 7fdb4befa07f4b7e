"""Payouts: `POST /api/v1/payouts` asks for one (an `Idempotency-Key` is required: a payout
must never be asked twice by a retry), the payout supervisor decides it against the checklist
before answering; finance works the review queue (`GET /api/v1/payouts?status=review`, then
approve or reject with a reason); compliance records a trader's verified KYC tier, which
releases the payouts held for it. Every step is in the audit trail and the trader's timeline.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from typing import Any

import msgspec
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from ray.exceptions import RayActorError, RayError
from sqlalchemy import select

from actors.payout_checks import Request
from actors.payouts import PayoutError, Submitted, Who
from api import idempotency
from api.admin import traders as trader_store
from api.admin.accounts import Reason
from api.auth import Permission
from api.endpoints import Call, Endpoint, Reply
from api.pagination import Page, PageQuery, decode_cursor, keyset, page_of
from api.problems import ApiError, FieldError, invalid, not_found
from api.services import PAYOUTS
from ledger import audit, kyc
from ledger import payouts as store
from ledger.money import amount_text, parse_amount
from ledger.payouts import Payout, Status
from ledger.schema import payouts

log = logging.getLogger(__name__)


class Amount(BaseModel):
    """An amount of money as text in a currency, at most `MAX_MINOR` minor units."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    currency: str = Field(pattern="^[A-Z]{3}$", examples=["USD"])
    amount: str = Field(max_length=32, examples=["1200.00"])

    @field_validator("amount")
    @classmethod
    def _amount(cls, value: str, info: ValidationInfo) -> str:
        if "currency" in info.data and parse_amount(value, info.data["currency"]) > MAX_MINOR:
            raise ValueError(f"at most {MAX_MINOR} minor units")
        return value


class PayoutIn(Amount):
    """A funded account's payout request: the amount to the trader (in the account's
    currency), where it goes, and the device and IP it was asked from (duplicate-account
    signals)."""

    account_id: str = Field(min_length=1, max_length=64)
    destination: str = Field(
        min_length=4,
        max_length=128,
        description="the payout destination: IBAN, card token, wallet id or address",
        examples=["GB33BUKB20201555555555"],
    )
    device: str = Field(default="", max_length=128, description="device fingerprint")
    ip: str = Field(default="", max_length=64, examples=["203.0.113.7"])

    @field_validator("ip")
    @classmethod
    def _ip(cls, value: str) -> str:
        if value:
            ipaddress.ip_address(value)  # ValueError names the bad address
        return value


MAX_MINOR = 10**15
"""The largest payout amount in minor units (10 trillion dollars; far inside 64 bits)."""


class CheckOut(BaseModel):
    name: str
    ok: bool
    detail: str


class PayoutOut(BaseModel):
    id: str
    trader_id: str
    account_id: str
    period: int
    currency: str
    amount: str
    gross: str = Field(description="what the payout takes off the platform account")
    split_pct: float
    status: Status
    reasons: list[str] = Field(description="the checks that failed")
    checks: list[CheckOut]
    destination: str
    rail: str | None
    fee: str
    attempts: int
    provider_ref: str | None
    balance_reset: bool
    created_ns: int
    updated_ns: int


def payout_out(payout: Payout) -> PayoutOut:
    c = payout.currency
    values: dict[str, Any] = msgspec.to_builtins(payout)
    for name in ("amount", "gross", "fee"):
        values[name] = amount_text(values[name], c)
    values["balance_reset"] = values.pop("reset")
    for hidden in ("request_key", "device", "ip", "country"):
        values.pop(hidden)
    return PayoutOut.model_validate(values)


def _supervisor(call: Call) -> Any:
    handle = call.request.app.get(PAYOUTS)
    if handle is None:
        raise ApiError(503, "Payouts unavailable", "this server runs no payout supervisor")
    return handle


async def create_payout(call: Call) -> Reply:
    body = call.body_as(PayoutIn)
    key = call.request.headers.get(idempotency.HEADER)
    if key is None:
        message = "a payout needs an Idempotency-Key, so that a retry never pays twice"
        raise invalid("header", [FieldError(field=f"header.{idempotency.HEADER}", message=message)])
    idempotency.check_key(key)
    assert call.principal is not None
    request = Request(
        key=f"{call.principal.token_id}:{key}",
        account_id=body.account_id,
        amount=parse_amount(body.amount, body.currency),
        currency=body.currency,
        destination=body.destination,
        device=body.device,
        ip=body.ip,
        request_id=call.request_id,
    )
    handle = _supervisor(call)
    deadline = time.monotonic() + SUBMIT_PATIENCE_S
    delay_s = 0.05
    while True:
        try:
            answer: Submitted = await _ask(handle.submit.remote(request))
            break
        except RayActorError:
            # The supervisor died with the request in hand (nothing was answered, so nothing
            # is lost): ask the restarted one, which finds the payout by its key or decides it.
            if time.monotonic() > deadline:
                detail = f"the payout supervisor did not come back within {SUBMIT_PATIENCE_S:.0f} s"
                raise ApiError(503, "Payouts unavailable", detail) from None
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, 1.0)
    # The supervisor keeps the key (payouts are unique by it), so the generic store is not
    # used: a replay answers the payout as it stands now, marked as the generic one marks it.
    replayed = {"Idempotent-Replayed": "true"} if answer.replayed else {}
    return Reply(payout_out(answer.payout), status=201, headers=replayed)


SUBMIT_PATIENCE_S = 30.0
"""How long a payout request waits for a restarting payout supervisor before a 503."""


async def _ask(pending: Any) -> Any:
    """The supervisor's answer to a call, its refusals as problems."""
    try:
        answer = await pending
    except PayoutError as exc:
        raise _problem(exc) from None
    except RayActorError:
        raise
    except RayError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, PayoutError):
            raise _problem(cause) from None
        detail = f"the payout supervisor failed: {type(exc).__name__}"
        raise ApiError(503, "Payouts unavailable", detail) from exc
    return answer


_PROBLEMS = {
    "not_found": (404, "Payout not found"),
    "conflict": (409, "Payout cannot take this step"),
    "key_reused": (409, "Idempotency-Key reused"),
}


def _problem(exc: PayoutError) -> ApiError:
    status, title = _PROBLEMS.get(exc.code, (503, "Payouts unavailable"))
    return ApiError(status, title, exc.detail)


class PayoutQuery(PageQuery):
    """Filters of the payout list (newest first); `status=review` is finance's queue."""

    status: Status | None = None
    trader_id: str | None = Field(default=None, max_length=64)
    account_id: str | None = Field(default=None, max_length=64)


async def list_payouts(call: Call) -> Reply:
    query = call.query_as(PayoutQuery)
    after = decode_cursor(query.cursor, (int, str))
    statement = select(payouts)
    if query.status is not None:
        statement = statement.where(payouts.c.status == query.status.value)
    if query.trader_id is not None:
        statement = statement.where(payouts.c.trader_id == query.trader_id)
    if query.account_id is not None:
        statement = statement.where(payouts.c.account_id == query.account_id)
    statement = keyset(statement, payouts.c.created_ns, payouts.c.id, after, descending=True)
    async with call.engine.connect() as conn:
        rows = (await conn.execute(statement.limit(query.limit + 1))).all()
    found = [payout_out(store.payout_of(r._mapping)) for r in rows]
    return Reply(page_of(found, query.limit, lambda p: [p.created_ns, p.id]))


async def get_payout(call: Call) -> Reply:
    payout_id = call.path("payout_id")
    async with call.engine.connect() as conn:
        payout = await store.load(conn, payout_id)
    if payout is None:
        raise not_found("Payout", payout_id)
    return Reply(payout_out(payout))


async def approve(call: Call) -> Reply:
    return await _review(call, approve=True)


async def reject(call: Call) -> Reply:
    return await _review(call, approve=False)


async def _review(call: Call, *, approve: bool) -> Reply:
    reason = call.body_as(Reason).reason
    principal = call.principal
    assert principal is not None
    who = Who(actor=principal.name, role=principal.role.value, request_id=call.request_id)
    pending = _supervisor(call).review.remote(call.path("payout_id"), approve, reason, who)
    try:
        payout: Payout = await _ask(pending)
        return Reply(payout_out(payout))
    except RayActorError:
        raise ApiError(
            503,
            "Payouts unavailable",
            "the payout supervisor restarted during the call: look the payout up, then retry",
        ) from None


# -- KYC tiers ---------------------------------------------------------------------------------


class KycIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    tier: kyc.Tier
    reason: str = Field(min_length=3, max_length=500)


class KycOut(BaseModel):
    trader_id: str
    tier: kyc.Tier
    requested: kyc.Tier | None = Field(description="the tier a held payout asked for")
    released: list[PayoutOut] = Field(
        default_factory=list,
        description="held payouts decided again after this change (empty if the payout "
        "supervisor could not be reached: its periodic re-check decides them)",
    )


class ClearanceQuery(Amount):
    """The payout asked about: its amount in the account's currency."""


class ClearanceOut(BaseModel):
    trader_id: str
    currency: str
    amount: str
    cleared: bool = Field(description="whether KYC lets a payout of this amount through now")
    tier: kyc.Tier = Field(description="verified (none while a screening hit stands)")
    needed: kyc.Tier = Field(
        description="what a payout of this amount needs, after the trader's payouts so far"
    )
    screening_hit: bool
    detail: str


async def get_clearance(call: Call) -> Reply:
    """The payout supervisor's own question, asked of it: is the trader cleared for this
    amount? Answered from the KYC case as its checklist would."""
    query = call.query_as(ClearanceQuery)
    trader_id = call.path("trader_id")
    async with call.engine.connect() as conn:
        await trader_store.load(conn, trader_id)  # 404 for an unknown trader
    amount = parse_amount(query.amount, query.currency)
    try:
        found = await _ask(_supervisor(call).clearance.remote(trader_id, amount, query.currency))
    except RayActorError:
        raise ApiError(
            503, "Payouts unavailable", "the payout supervisor is restarting: ask again"
        ) from None
    return Reply(
        ClearanceOut(
            trader_id=trader_id,
            currency=query.currency,
            amount=amount_text(amount, query.currency),
            **msgspec.to_builtins(found),
        )
    )


async def set_kyc(call: Call) -> Reply:
    """Record a trader's verified tier (audited), then let the payout supervisor decide again
    the payouts held for it."""
    body = call.body_as(KycIn)
    trader_id = call.path("trader_id")
    async with call.engine.begin() as conn:
        await trader_store.load(conn, trader_id)
        before = await kyc.case(conn, trader_id)
        recorded = await kyc.set_tier(conn, trader_id, body.tier)
        after = {**msgspec.to_builtins(recorded), "reason": body.reason}
        record = call.audit(
            "kyc.set_tier", "trader", trader_id, before=before, after=after, trader_id=trader_id
        )
        await audit.append(conn, [record])
    released: list[Payout] = []
    handle = call.request.app.get(PAYOUTS)
    if handle is not None:
        try:
            released = await handle.kyc_changed.remote(trader_id)
        except RayError:  # the tier is recorded: the supervisor's own re-check releases them
            log.warning("payout supervisor unreachable after KYC of %s", trader_id)
    return Reply(
        KycOut(
            trader_id=trader_id,
            tier=recorded.tier,
            requested=recorded.requested,
            released=[payout_out(p) for p in released],
        )
    )


ENDPOINTS = [
    Endpoint(
        "POST",
        "/api/v1/payouts",
        "create_payout",
        "Ask for a payout (Idempotency-Key required). Answered once the checklist has "
        "decided it: approved (then paid), review (failed checks named), held (KYC asked "
        "for) or rejected (reasons named).",
        create_payout,
        Permission.PAYOUTS_REQUEST,
        "payouts",
        body=PayoutIn,
        response=PayoutOut,
        status=201,
        idempotent=True,
        own_key=True,
        errors=(409, 503),
    ),
    Endpoint(
        "GET",
        "/api/v1/payouts",
        "list_payouts",
        "Payouts, newest first; `status=review` is the review queue.",
        list_payouts,
        Permission.PAYOUTS_READ,
        "payouts",
        query=PayoutQuery,
        response=Page[PayoutOut],
    ),
    Endpoint(
        "GET",
        "/api/v1/payouts/{payout_id}",
        "get_payout",
        "One payout with its checklist and where it stands.",
        get_payout,
        Permission.PAYOUTS_READ,
        "payouts",
        response=PayoutOut,
    ),
    Endpoint(
        "POST",
        "/api/v1/payouts/{payout_id}/approve",
        "approve_payout",
        "Approve a payout in review (with a reason, audited); it is then paid.",
        approve,
        Permission.PAYOUTS_REVIEW,
        "payouts",
        body=Reason,
        response=PayoutOut,
        errors=(409, 503),
    ),
    Endpoint(
        "POST",
        "/api/v1/payouts/{payout_id}/reject",
        "reject_payout",
        "Reject a payout in review (with a reason, audited).",
        reject,
        Permission.PAYOUTS_REVIEW,
        "payouts",
        body=Reason,
        response=PayoutOut,
        errors=(409, 503),
    ),
    Endpoint(
        "GET",
        "/api/v1/traders/{trader_id}/kyc/clearance",
        "get_kyc_clearance",
        "Is the trader cleared by KYC for a payout of `amount` now? The payout checklist's own "
        "answer, from the case.",
        get_clearance,
        Permission.KYC_READ,
        "kyc",
        query=ClearanceQuery,
        response=ClearanceOut,
        errors=(503,),
    ),
    Endpoint(
        "PUT",
        "/api/v1/traders/{trader_id}/kyc",
        "set_kyc",
        "Record a trader's verified KYC tier (audited); payouts held for it are decided again.",
        set_kyc,
        Permission.KYC_WRITE,
        "payouts",
        body=KycIn,
        response=KycOut,
    ),
]
