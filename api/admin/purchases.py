"""Purchases: `POST /api/v1/purchases` sells a plan to a trader and opens the account.

The purchase and its account (`pending`) are written in one transaction with their audit
records; then the account is opened on its platform through the bridge (the rate-limited
provisioning lane) and becomes `active` with its platform login, or `provisioning_failed` with
the reason, retried in the background (`api/admin/follower.py`) and by
`POST /api/v1/accounts/{id}/provision`. The answer is 201 in both cases: the sale happened.

Each sale is also a `purchase` sale event, in the same transaction; `POST
/api/v1/purchases/{id}/reversals` records a refund or a chargeback. The affiliate supervisor
accrues commissions from these events (`actors/affiliates.py`).
"""

from __future__ import annotations

import secrets
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from actors.commissions import Sale
from api.admin import plans as plan_store
from api.admin import registry
from api.admin import traders as trader_store
from api.admin.registry import Registered, Status
from api.auth import Permission
from api.endpoints import Call, Endpoint, Reply
from api.pagination import Page, PageQuery, decode_cursor, keyset, page_of
from api.problems import ApiError, FieldError, invalid, not_found
from api.services import Operator
from ledger import affiliates as sales
from ledger import audit
from ledger.affiliates import SaleIn
from ledger.money import amount_text, parse_amount
from ledger.schema import accounts, purchases


class PurchaseIn(BaseModel):
    """A sale: who, which plan (its latest version unless `plan_version` is given), the
    payment provider's reference (unique), and the fee paid in the plan's currency."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    trader_id: str = Field(min_length=1, max_length=64)
    plan_id: str = Field(min_length=1, max_length=64)
    plan_version: int | None = Field(default=None, ge=1, le=2**31 - 1)
    payment_reference: str = Field(min_length=1, max_length=128)
    currency: str = Field(pattern="^[A-Z]{3}$", examples=["USD"])
    amount: str = Field(
        max_length=32,
        description="positive decimal, at most the currency's decimals",
        examples=["99.00"],
    )

    @field_validator("amount")
    @classmethod
    def _amount(cls, value: str, info: ValidationInfo) -> str:
        if "currency" in info.data:  # else the currency's own error is reported
            parse_amount(value, info.data["currency"])
        return value

    @property
    def amount_minor(self) -> int:
        return parse_amount(self.amount, self.currency)


class Purchase(BaseModel):
    id: str
    trader_id: str
    plan_id: str
    plan_version: int
    payment_reference: str
    amount: str
    currency: str
    country: str
    account_id: str
    created_ns: int


class PurchaseOut(Purchase):
    """The purchase and its account as it stands after provisioning."""

    account: Registered


def _purchase(row: object) -> Purchase:
    values = dict(row)  # type: ignore[call-overload]
    values["amount"] = amount_text(values.pop("amount_minor"), values["currency"])
    return Purchase.model_validate(values)


async def create_purchase(call: Call) -> Reply:
    body = call.body_as(PurchaseIn)
    purchase, account = await _record_sale(call, body)
    operator: Operator = call.supervisor  # type: ignore[assignment]
    account = await registry.provision(call.engine, operator, account, call)
    return Reply(PurchaseOut(**purchase.model_dump(), account=account), status=201)


async def _record_sale(call: Call, body: PurchaseIn) -> tuple[Purchase, Registered]:
    now = time.time_ns()
    try:
        async with call.engine.begin() as conn:
            trader, version = await _references(conn, body)
            purchase = Purchase(
                id="pur_" + secrets.token_hex(8),
                trader_id=trader.id,
                plan_id=version.plan_id,
                plan_version=version.version,
                payment_reference=body.payment_reference,
                amount=amount_text(body.amount_minor, body.currency),
                currency=body.currency,
                country=trader.country,
                account_id="acc_" + secrets.token_hex(8),
                created_ns=now,
            )
            account = Registered(
                id=purchase.account_id,
                trader_id=trader.id,
                purchase_id=purchase.id,
                plan_id=version.plan_id,
                plan_version=version.version,
                phase=version.plan.phases[0].name,
                status=Status.PENDING,
                connection="",
                platform_login=None,
                failed_rule=None,
                reason=None,
                attempts=0,
                previous_id=None,
                created_ns=now,
                updated_ns=now,
            )
            await _insert(conn, purchase, body.amount_minor, account)
            records = [
                call.audit(
                    "purchase.create", "purchase", purchase.id, after=purchase, trader_id=trader.id
                ),
                call.audit(
                    "account.create", "account", account.id, after=account, trader_id=trader.id
                ),
            ]
            await audit.append(conn, records)
    except IntegrityError:
        raise await _reference_used(call, body.payment_reference) from None
    return purchase, account


async def _references(
    conn: AsyncConnection, body: PurchaseIn
) -> tuple[trader_store.Trader, plan_store.PlanVersion]:
    """The trader and plan version the body names, checked: each failure names its field."""
    try:
        trader = await trader_store.load(conn, body.trader_id)
    except ApiError:
        raise invalid(
            "body", [FieldError(field="body.trader_id", message="no such trader")]
        ) from None
    try:
        version = await plan_store.load(conn, body.plan_id, body.plan_version)
    except ApiError:
        field = "body.plan_version" if body.plan_version else "body.plan_id"
        raise invalid(
            "body", [FieldError(field=field, message="no such plan or version")]
        ) from None
    if version.plan.initial_balance is None:
        message = "the plan sets no initial balance, so no account can be opened under it"
        raise invalid("body", [FieldError(field="body.plan_id", message=message)])
    if body.currency != version.plan.currency:
        message = f"the plan is sold in {version.plan.currency}"
        raise invalid("body", [FieldError(field="body.currency", message=message)])
    return trader, version


async def _insert(
    conn: AsyncConnection, purchase: Purchase, amount_minor: int, account: Registered
) -> None:
    values = purchase.model_dump(exclude={"amount"})
    await conn.execute(purchases.insert().values(**values, amount_minor=amount_minor))
    await conn.execute(accounts.insert().values(**account.model_dump()))
    sale = SaleIn(
        event_id=f"purchase:{purchase.id}",
        kind="purchase",
        purchase_id=purchase.id,
        trader_id=purchase.trader_id,
        amount=amount_minor,
        currency=purchase.currency,
        ts_ns=purchase.created_ns,
    )
    await sales.record_sale(conn, sale)


async def _reference_used(call: Call, reference: str) -> ApiError:
    async with call.engine.connect() as conn:
        existing = await conn.scalar(
            select(purchases.c.id).where(purchases.c.payment_reference == reference)
        )
    return ApiError(
        409,
        "Payment already used",
        f"the payment reference {reference!r} belongs to purchase {existing!r}",
    )


async def get_purchase(call: Call) -> Reply:
    purchase_id = call.path("purchase_id")
    async with call.engine.connect() as conn:
        row = (await conn.execute(select(purchases).where(purchases.c.id == purchase_id))).first()
        if row is None:
            raise not_found("Purchase", purchase_id)
        purchase = _purchase(row._mapping)
        account = await registry.load(conn, purchase.account_id)
    return Reply(PurchaseOut(**purchase.model_dump(), account=account))


class PurchaseQuery(PageQuery):
    trader_id: str | None = Field(default=None, max_length=64)


async def list_purchases(call: Call) -> Reply:
    query = call.query_as(PurchaseQuery)
    after = decode_cursor(query.cursor, (int, str))
    statement = select(purchases)
    if query.trader_id is not None:
        statement = statement.where(purchases.c.trader_id == query.trader_id)
    statement = keyset(statement, purchases.c.created_ns, purchases.c.id, after, descending=True)
    async with call.engine.connect() as conn:
        rows = (await conn.execute(statement.limit(query.limit + 1))).all()
    found = [_purchase(r._mapping) for r in rows]
    return Reply(page_of(found, query.limit, lambda p: [p.created_ns, p.id]))


class ReversalIn(BaseModel):
    """A refund or a chargeback of (part of) a purchase, named by the caller's own id so that
    a retry is recorded once."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    event_id: str = Field(
        min_length=1, max_length=128, description="yours, unique: the PSP's refund id"
    )
    kind: Literal["refund", "chargeback"]
    amount: str = Field(max_length=32, description="in the purchase's currency")
    reason: str = Field(min_length=3, max_length=500)


class ReversalOut(BaseModel):
    event_id: str
    purchase_id: str
    kind: str
    amount: str
    currency: str
    refunded: str = Field(description="of the purchase, refunded or charged back in all")
    ts_ns: int


async def reverse_purchase(call: Call) -> Reply:
    """Record a refund or chargeback: at most what is left of the purchase; the same
    `event_id` again answers the one recorded (200), with other values 409."""
    body = call.body_as(ReversalIn)
    purchase_id = call.path("purchase_id")
    async with call.engine.begin() as conn:
        row = (
            await conn.execute(
                select(purchases).where(purchases.c.id == purchase_id).with_for_update()
            )
        ).first()
        if row is None:
            raise not_found("Purchase", purchase_id)
        try:
            amount = parse_amount(body.amount, row.currency)
        except ValueError as exc:
            raise invalid("body", [FieldError(field="body.amount", message=str(exc))]) from None
        event_id = f"reversal:{purchase_id}:{body.event_id}"
        known = await sales.sale(conn, event_id)
        if known is not None:
            if (known.kind, known.amount) != (body.kind, amount):
                raise ApiError(
                    409, "Event id reused", f"{body.event_id!r} was recorded with other values"
                )
            done = await sales.refunded(conn, purchase_id)
            return Reply(_reversal(known, row.currency, done))
        before = await sales.refunded(conn, purchase_id)
        left = int(row.amount_minor) - before
        if amount <= 0 or amount > left:
            message = f"must be positive and at most {amount_text(left, row.currency)} (left)"
            raise invalid("body", [FieldError(field="body.amount", message=message)])
        sale = SaleIn(
            event_id=event_id, kind=body.kind, purchase_id=purchase_id, trader_id=row.trader_id,
            amount=amount, currency=row.currency, ts_ns=time.time_ns(), reason=body.reason,
        )  # fmt: skip
        await sales.record_sale(conn, sale)
        record = call.audit(
            f"purchase.{body.kind}", "purchase", purchase_id, after=sale, trader_id=row.trader_id
        )
        await audit.append(conn, [record])
        recorded = await sales.sale(conn, event_id)
    assert recorded is not None
    return Reply(_reversal(recorded, row.currency, before + amount), status=201)


def _reversal(sale: Sale, currency: str, refunded: int) -> ReversalOut:
    return ReversalOut(
        event_id=sale.event_id,
        purchase_id=sale.purchase_id,
        kind=sale.kind,
        amount=amount_text(sale.amount, currency),
        currency=currency,
        refunded=amount_text(refunded, currency),
        ts_ns=sale.ts_ns,
    )


ENDPOINTS = [
    Endpoint(
        "POST",
        "/api/v1/purchases",
        "create_purchase",
        "Sell a plan to a trader: records the purchase, opens the account on its platform "
        "through the bridge and answers it with its platform login (or provisioning_failed "
        "with the reason; retried).",
        create_purchase,
        Permission.PURCHASES_WRITE,
        "purchases",
        body=PurchaseIn,
        response=PurchaseOut,
        status=201,
        idempotent=True,
        errors=(409,),
    ),
    Endpoint(
        "GET",
        "/api/v1/purchases",
        "list_purchases",
        "Purchases, newest first.",
        list_purchases,
        Permission.PURCHASES_READ,
        "purchases",
        query=PurchaseQuery,
        response=Page[Purchase],
    ),
    Endpoint(
        "POST",
        "/api/v1/purchases/{purchase_id}/reversals",
        "reverse_purchase",
        "Record a refund or chargeback of a purchase (once per `event_id`): the affiliates "
        "who earned on it have their commission taken back.",
        reverse_purchase,
        Permission.PURCHASES_WRITE,
        "purchases",
        body=ReversalIn,
        response=ReversalOut,
        status=201,
        errors=(409,),
    ),
    Endpoint(
        "GET",
        "/api/v1/purchases/{purchase_id}",
        "get_purchase",
        "One purchase and its first account.",
        get_purchase,
        Permission.PURCHASES_READ,
        "purchases",
        response=PurchaseOut,
    ),
]
