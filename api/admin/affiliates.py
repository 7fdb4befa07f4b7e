"""Affiliates: partners, their referral codes and commission plans, referrals (touches),
statements, the weekly payout runs, the reconciliation with the books, and partner tokens.

Commissions are accrued by the affiliate supervisor (`actors/affiliates.py`) from the sale
events; these routes read what it wrote. A partner's token (`POST
/api/v1/affiliates/{id}/tokens`, role `partner`) reads only its own affiliate's statement: any
other affiliate answers 404, as if it did not exist.
"""

from __future__ import annotations

import datetime
import re
import secrets
import time
from typing import Annotated, Any

import msgspec
from pydantic import BaseModel, ConfigDict, Field, model_validator
from ray.exceptions import RayError
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from actors.commissions import CommissionPlan
from api.admin import traders as trader_store
from api.auth import Permission, Role, create_token
from api.endpoints import Call, Endpoint, Reply
from api.problems import ApiError, FieldError, invalid, not_found
from api.services import AFFILIATES
from ledger import affiliates as store
from ledger import audit
from ledger.books import RAILS
from ledger.money import amount_text
from ledger.schema import (
    affiliate_codes,
    affiliate_payouts,
    affiliate_touches,
    affiliates,
    commission_plans,
)

_ID = r"^[A-Za-z0-9_-]{1,64}$"
_ID_RE = re.compile(_ID)
_SKEW_NS = 60 * 10**9  # clocks a minute apart are not an error


# -- commission plans ---------------------------------------------------------------------------


class CommissionPlanIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A new version of a commission plan; in force from `effective_ns` (now if not given)."""

    plan_id: Annotated[str, msgspec.Meta(pattern=_ID)]
    plan: CommissionPlan
    effective_ns: Annotated[int, msgspec.Meta(ge=0)] | None = None


class CommissionPlanVersion(msgspec.Struct, frozen=True, kw_only=True):
    plan_id: str
    version: int
    effective_ns: int
    created_ns: int
    created_by: str
    plan: CommissionPlan


class CommissionPlanList(msgspec.Struct, frozen=True, kw_only=True):
    versions: list[CommissionPlanVersion]


async def create_commission_plan(call: Call) -> Reply:
    body = call.body_as(CommissionPlanIn)
    now = time.time_ns()
    if body.effective_ns is not None and body.effective_ns < now - _SKEW_NS:
        async with call.engine.connect() as conn:
            exists = await conn.scalar(
                select(commission_plans.c.version)
                .where(commission_plans.c.plan_id == body.plan_id)
                .limit(1)
            )
        if exists is not None:  # purchases already commissioned would not be again
            message = "a new version takes effect now or later, not in the past"
            raise invalid("body", [FieldError(field="body.effective_ns", message=message)])
    for _ in range(3):  # two versions at once: the loser takes the next number
        try:
            async with call.engine.begin() as conn:
                latest = await conn.scalar(
                    select(func.max(commission_plans.c.version)).where(
                        commission_plans.c.plan_id == body.plan_id
                    )
                )
                version = CommissionPlanVersion(
                    plan_id=body.plan_id,
                    version=int(latest or 0) + 1,
                    effective_ns=now if body.effective_ns is None else body.effective_ns,
                    created_ns=now,
                    created_by=call.principal.name if call.principal else "",
                    plan=body.plan,
                )
                values = msgspec.structs.asdict(version)
                values["body"] = msgspec.json.encode(values.pop("plan")).decode()
                await conn.execute(commission_plans.insert().values(**values))
                record = call.audit(
                    "commission_plan.create", "commission_plan", body.plan_id, after=version
                )
                await audit.append(conn, [record])
            return Reply(version, status=201)
        except IntegrityError:
            continue
    raise ApiError(409, "Plan busy", f"plan {body.plan_id!r} is being changed; retry")


async def get_commission_plan(call: Call) -> Reply:
    plan_id = call.path("plan_id")
    async with call.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(commission_plans)
                .where(commission_plans.c.plan_id == plan_id)
                .order_by(commission_plans.c.version)
            )
        ).all()
    if not rows:
        raise not_found("Commission plan", plan_id)
    versions = [
        CommissionPlanVersion(
            plan_id=r.plan_id,
            version=r.version,
            effective_ns=r.effective_ns,
            created_ns=r.created_ns,
            created_by=r.created_by,
            plan=msgspec.json.decode(r.body, type=CommissionPlan),
        )
        for r in rows
    ]
    return Reply(CommissionPlanList(versions=versions))


# -- affiliates -------------------------------------------------------------------------------


class AffiliateIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    id: str | None = Field(default=None, pattern=_ID, description="generated if not given")
    name: str = Field(min_length=1, max_length=200)
    email: str = Field(min_length=3, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")
    plan_id: str = Field(pattern=_ID, description="its commission plan")
    parent_id: str | None = Field(
        default=None, pattern=_ID, description="the affiliate that brought it (an override)"
    )
    trader_id: str | None = Field(
        default=None, max_length=64, description="its own trader record, if it trades too"
    )
    payout_rail: str | None = Field(default=None, examples=["bank_wire"])
    payout_destination: str | None = Field(default=None, min_length=4, max_length=128)
    codes: list[str] = Field(default_factory=list, max_length=20)

    @model_validator(mode="after")
    def _checks(self) -> AffiliateIn:
        if self.payout_rail is not None and self.payout_rail not in RAILS:
            raise ValueError(f"payout_rail must be one of {', '.join(RAILS)}")
        if (self.payout_rail is None) != (self.payout_destination is None):
            raise ValueError("payout_rail and payout_destination go together")
        for code in self.codes:
            if not _ID_RE.match(code):
                raise ValueError(f"code {code!r}: letters, digits, _ and -, 1 to 64")
        return self


class AffiliateOut(BaseModel):
    id: str
    name: str
    email: str
    plan_id: str
    parent_id: str | None
    trader_id: str | None
    payout_rail: str | None
    payout_destination: str | None
    status: str
    codes: list[str]
    owed: dict[str, str] = Field(description="commissions accrued less paid, by currency")
    created_ns: int


async def create_affiliate(call: Call) -> Reply:
    body = call.body_as(AffiliateIn)
    affiliate_id = body.id or "aff_" + secrets.token_hex(6)
    now = time.time_ns()
    values = body.model_dump(exclude={"id", "codes"})
    try:
        async with call.engine.begin() as conn:
            await _check_references(conn, body)
            await conn.execute(
                affiliates.insert().values(
                    id=affiliate_id, status="active", created_ns=now, updated_ns=now, **values
                )
            )
            if body.codes:
                await conn.execute(
                    affiliate_codes.insert(),
                    [
                        {"code": c, "affiliate_id": affiliate_id, "created_ns": now}
                        for c in body.codes
                    ],
                )
            record = call.audit(
                "affiliate.create", "affiliate", affiliate_id, after=values | {"codes": body.codes}
            )
            await audit.append(conn, [record])
    except IntegrityError:
        raise ApiError(
            409, "Affiliate or code exists", "the affiliate id or one of its codes is taken"
        ) from None
    return Reply(await _affiliate(call, affiliate_id), status=201)


async def _check_references(conn: Any, body: AffiliateIn) -> None:
    errors = []
    if body.parent_id is not None and not await conn.scalar(
        select(affiliates.c.id).where(affiliates.c.id == body.parent_id)
    ):
        errors.append(FieldError(field="body.parent_id", message="no such affiliate"))
    if not await conn.scalar(
        select(commission_plans.c.plan_id)
        .where(commission_plans.c.plan_id == body.plan_id)
        .limit(1)
    ):
        errors.append(FieldError(field="body.plan_id", message="no such commission plan"))
    if errors:
        raise invalid("body", errors)


async def _affiliate(call: Call, affiliate_id: str) -> AffiliateOut:
    async with call.engine.connect() as conn:
        row = (
            await conn.execute(select(affiliates).where(affiliates.c.id == affiliate_id))
        ).first()
        if row is None:
            raise not_found("Affiliate", affiliate_id)
        codes = list(
            await conn.scalars(
                select(affiliate_codes.c.code)
                .where(affiliate_codes.c.affiliate_id == affiliate_id)
                .order_by(affiliate_codes.c.code)
            )
        )
        found = await store.reconcile_one(conn, affiliate_id)
    values = dict(row._mapping)
    values.pop("updated_ns")
    owed = {c: amount_text(v, c) for c, v in sorted(found.items())}
    return AffiliateOut(**values, codes=codes, owed=owed)


async def get_affiliate(call: Call) -> Reply:
    return Reply(await _affiliate(call, call.path("affiliate_id")))


class CodeIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    code: str = Field(pattern=_ID)


async def add_code(call: Call) -> Reply:
    body = call.body_as(CodeIn)
    affiliate_id = call.path("affiliate_id")
    try:
        async with call.engine.begin() as conn:
            if not await conn.scalar(
                select(affiliates.c.id).where(affiliates.c.id == affiliate_id)
            ):
                raise not_found("Affiliate", affiliate_id)
            await conn.execute(
                affiliate_codes.insert().values(
                    code=body.code, affiliate_id=affiliate_id, created_ns=time.time_ns()
                )
            )
            record = call.audit("affiliate.code", "affiliate", affiliate_id, after=body)
            await audit.append(conn, [record])
    except IntegrityError:
        raise ApiError(409, "Code taken", f"the code {body.code!r} is in use") from None
    return Reply(await _affiliate(call, affiliate_id), status=201)


# -- referrals --------------------------------------------------------------------------------


class ReferralIn(BaseModel):
    """A trader followed a referral link (the code given at signup counts already)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    code: str = Field(pattern=_ID)
    ts_ns: int | None = Field(default=None, ge=0, description="when; now if not given")


class ReferralOut(BaseModel):
    trader_id: str
    affiliate_id: str
    code: str
    ts_ns: int


async def record_referral(call: Call) -> Reply:
    body = call.body_as(ReferralIn)
    trader_id = call.path("trader_id")
    async with call.engine.begin() as conn:
        await trader_store.load(conn, trader_id)
        affiliate_id = await conn.scalar(
            select(affiliate_codes.c.affiliate_id).where(affiliate_codes.c.code == body.code)
        )
        if affiliate_id is None:
            raise invalid("body", [FieldError(field="body.code", message="no such code")])
        if body.ts_ns is not None and body.ts_ns > time.time_ns() + _SKEW_NS:
            message = "a referral is not in the future"
            raise invalid("body", [FieldError(field="body.ts_ns", message=message)])
        touched = ReferralOut(
            trader_id=trader_id,
            affiliate_id=affiliate_id,
            code=body.code,
            ts_ns=time.time_ns() if body.ts_ns is None else body.ts_ns,
        )
        await conn.execute(affiliate_touches.insert().values(**touched.model_dump()))
    return Reply(touched, status=201)


# -- statements -------------------------------------------------------------------------------


class StatementQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    start: datetime.date = Field(alias="from", examples=["2026-11-01"])
    end: datetime.date = Field(alias="to", examples=["2026-11-30"])
    currency: str = Field(default="USD", pattern="^[A-Z]{3}$")

    @model_validator(mode="after")
    def _range(self) -> StatementQuery:
        if self.end < self.start:
            raise ValueError("`to` is before `from`")
        if (self.end - self.start).days > 366:
            raise ValueError("at most 366 days at once")
        return self


async def get_statement(call: Call) -> Reply:
    query = call.query_as(StatementQuery)
    affiliate_id = call.path("affiliate_id")
    principal = call.principal
    partner = principal is not None and principal.role is Role.PARTNER
    if partner and principal is not None and principal.scope != f"affiliate:{affiliate_id}":
        raise not_found("Affiliate", affiliate_id)  # another partner's: not there
    async with call.engine.connect() as conn:
        if not await conn.scalar(select(affiliates.c.id).where(affiliates.c.id == affiliate_id)):
            raise not_found("Affiliate", affiliate_id)
        found = await store.statement(conn, affiliate_id, query.currency, query.start, query.end)
    return Reply(found)


# -- payouts and reconciliation -----------------------------------------------------------------


class RunIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    run_id: str = Field(
        pattern=_ID,
        description="names the run: the same id again pays nothing more",
        examples=["2026-W48"],
    )


async def run_payouts(call: Call) -> Reply:
    body = call.body_as(RunIn)
    handle = call.request.app.get(AFFILIATES)
    if handle is None:
        raise ApiError(503, "Affiliates unavailable", "this server runs no affiliate supervisor")
    try:
        await handle.accrue.remote()
        done = await handle.run_payouts.remote(body.run_id)
    except RayError as exc:
        raise ApiError(503, "Affiliates unavailable", f"the supervisor failed: {exc}") from exc
    async with call.engine.begin() as conn:
        record = call.audit("affiliate.payout_run", "payout_run", body.run_id, after=done)
        await audit.append(conn, [record])
    return Reply(done)


class PayoutLine(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    run_id: str
    affiliate_id: str
    amount: str
    currency: str
    rail: str
    ts_ns: int


class PayoutList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[PayoutLine]


class PayoutQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_id: str | None = Field(default=None, pattern=_ID)
    affiliate_id: str | None = Field(default=None, pattern=_ID)
    limit: int = Field(default=100, ge=1, le=1000)


async def list_payouts(call: Call) -> Reply:
    query = call.query_as(PayoutQuery)
    c = affiliate_payouts.c
    statement = select(affiliate_payouts).order_by(c.ts_ns.desc(), c.id).limit(query.limit)
    if query.run_id is not None:
        statement = statement.where(c.run_id == query.run_id)
    if query.affiliate_id is not None:
        statement = statement.where(c.affiliate_id == query.affiliate_id)
    async with call.engine.connect() as conn:
        rows = (await conn.execute(statement)).all()
    items = [
        PayoutLine(
            id=r.id,
            run_id=r.run_id,
            affiliate_id=r.affiliate_id,
            amount=amount_text(r.amount, r.currency),
            currency=r.currency,
            rail=r.rail,
            ts_ns=r.ts_ns,
        )
        for r in rows
    ]
    return Reply(PayoutList(items=items))


async def get_reconciliation(call: Call) -> Reply:
    async with call.engine.connect() as conn:
        await store.snapshot(conn)
        return Reply(await store.reconcile(conn))


# -- partner tokens -----------------------------------------------------------------------------


class TokenOut(BaseModel):
    token_id: str
    affiliate_id: str
    token: str = Field(description="shown once; only its hash is kept")


async def issue_partner_token(call: Call) -> Reply:
    affiliate_id = call.path("affiliate_id")
    async with call.engine.begin() as conn:
        if not await conn.scalar(select(affiliates.c.id).where(affiliates.c.id == affiliate_id)):
            raise not_found("Affiliate", affiliate_id)
        issued = await create_token(
            conn, f"partner:{affiliate_id}", Role.PARTNER, f"affiliate:{affiliate_id}"
        )
        record = call.audit(
            "token.create",
            "token",
            issued.token_id,
            after={"name": issued.name, "role": Role.PARTNER.value, "affiliate_id": affiliate_id},
        )
        await audit.append(conn, [record])
    return Reply(
        TokenOut(token_id=issued.token_id, affiliate_id=affiliate_id, token=issued.token),
        status=201,
    )


ENDPOINTS = [
    Endpoint(
        "POST",
        "/api/v1/commission-plans",
        "create_commission_plan",
        "A new version of a commission plan (percentage of the first or every purchase, "
        "tiered by monthly referred volume; a CPA; overrides for parents), in force from "
        "`effective_ns`.",
        create_commission_plan,
        Permission.AFFILIATES_WRITE,
        "affiliates",
        body=CommissionPlanIn,
        response=CommissionPlanVersion,
        status=201,
        errors=(409,),
    ),
    Endpoint(
        "GET",
        "/api/v1/commission-plans/{plan_id}",
        "get_commission_plan",
        "Every version of a commission plan.",
        get_commission_plan,
        Permission.AFFILIATES_READ,
        "affiliates",
        response=CommissionPlanList,
    ),
    Endpoint(
        "POST",
        "/api/v1/affiliates",
        "create_affiliate",
        "A new affiliate, with its commission plan, parent, payout rail and referral codes.",
        create_affiliate,
        Permission.AFFILIATES_WRITE,
        "affiliates",
        body=AffiliateIn,
        response=AffiliateOut,
        status=201,
        errors=(409,),
    ),
    Endpoint(
        "GET",
        "/api/v1/affiliates/{affiliate_id}",
        "get_affiliate",
        "An affiliate, its codes and what it is owed.",
        get_affiliate,
        Permission.AFFILIATES_READ,
        "affiliates",
        response=AffiliateOut,
    ),
    Endpoint(
        "POST",
        "/api/v1/affiliates/{affiliate_id}/codes",
        "add_affiliate_code",
        "Another referral code for the affiliate.",
        add_code,
        Permission.AFFILIATES_WRITE,
        "affiliates",
        body=CodeIn,
        response=AffiliateOut,
        status=201,
        errors=(409,),
    ),
    Endpoint(
        "POST",
        "/api/v1/traders/{trader_id}/referrals",
        "record_referral",
        "The trader followed a referral link: a touch, for attribution at its first purchase.",
        record_referral,
        Permission.TRADERS_WRITE,
        "affiliates",
        body=ReferralIn,
        response=ReferralOut,
        status=201,
    ),
    Endpoint(
        "GET",
        "/api/v1/affiliates/{affiliate_id}/statement",
        "get_affiliate_statement",
        "The affiliate's statement by UTC day: opening balance, commissions earned and taken "
        "back, paid, closing balance (a partner token: its own only).",
        get_statement,
        Permission.AFFILIATES_STATEMENT,
        "affiliates",
        query=StatementQuery,
        response=store.Statement,
    ),
    Endpoint(
        "POST",
        "/api/v1/affiliate-payouts/runs",
        "run_affiliate_payouts",
        "Run a payout: every affiliate owed at least the minimum is paid (a ledger transfer "
        "from its payable account to cash on its rail); the same run id again pays nothing.",
        run_payouts,
        Permission.AFFILIATES_PAY,
        "affiliates",
        body=RunIn,
        errors=(503,),
    ),
    Endpoint(
        "GET",
        "/api/v1/affiliate-payouts",
        "list_affiliate_payouts",
        "Affiliate payouts, newest first.",
        list_payouts,
        Permission.AFFILIATES_READ,
        "affiliates",
        query=PayoutQuery,
        response=PayoutList,
    ),
    Endpoint(
        "GET",
        "/api/v1/affiliate-reconciliation",
        "get_affiliate_reconciliation",
        "Accrued minus paid against the books' payable balance, per affiliate and in total.",
        get_reconciliation,
        Permission.AFFILIATES_READ,
        "affiliates",
        response=store.Reconciliation,
    ),
    Endpoint(
        "POST",
        "/api/v1/affiliates/{affiliate_id}/tokens",
        "issue_partner_token",
        "A token for the affiliate itself (role partner): it reads its own statement only.",
        issue_partner_token,
        Permission.AFFILIATES_WRITE,
        "affiliates",
        response=TokenOut,
        status=201,
    ),
]
