"""Affiliate records in the database: sale events, plans in force, statements and the
reconciliation of commissions against the books. Functions take a connection inside the
caller's transaction.

Each affiliate has a payable account per currency in the books, `affiliates:payable:<id>:<CCY>`
(a liability: what the firm owes it), against `affiliates:expense:<CCY>`. Commission lines
accrue to it, clawbacks take from it (it goes negative when a clawback follows a payout: the
next commissions pay that back), payouts move it to cash on the affiliate's rail.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Iterable
from typing import Any

import msgspec
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from actors.commissions import CommissionPlan, PlanInForce, Sale
from ledger.books import Kind, LedgerAccount
from ledger.schema import (
    affiliate_lines,
    affiliate_payouts,
    commission_plans,
    ledger_accounts,
    sale_events,
)

PAYABLE = "affiliates:payable"
EXPENSE = "affiliates:expense"


def payable(affiliate_id: str, currency: str) -> str:
    return f"{PAYABLE}:{affiliate_id}:{currency}"


def payable_account(affiliate_id: str, currency: str) -> LedgerAccount:
    return LedgerAccount(
        id=payable(affiliate_id, currency),
        kind=Kind.LIABILITY,
        currency=currency,
        name=f"Commissions payable to affiliate {affiliate_id}",
    )


class SaleIn(msgspec.Struct, frozen=True, kw_only=True):
    event_id: str
    kind: str  # purchase, refund, chargeback
    purchase_id: str
    trader_id: str
    amount: int
    currency: str
    ts_ns: int
    reason: str | None = None


async def record_sale(conn: AsyncConnection, sale: SaleIn) -> bool:
    """Record a sale event; False if one with its id exists already (a retry: nothing
    changes). The caller compares the stored one if a mismatch matters."""
    found = await conn.scalar(
        select(sale_events.c.seq).where(sale_events.c.event_id == sale.event_id)
    )
    if found is not None:
        return False
    await conn.execute(
        sale_events.insert().values(**msgspec.structs.asdict(sale), recorded_ns=time.time_ns())
    )
    return True


async def sale(conn: AsyncConnection, event_id: str) -> Sale | None:
    row = (
        await conn.execute(select(sale_events).where(sale_events.c.event_id == event_id))
    ).first()
    return None if row is None else sale_of(row)


def sale_of(row: Any) -> Sale:
    return Sale(
        seq=int(row.seq),
        event_id=row.event_id,
        kind=row.kind,
        purchase_id=row.purchase_id,
        trader_id=row.trader_id,
        amount=int(row.amount),
        currency=row.currency,
        ts_ns=int(row.ts_ns),
    )


async def refunded(conn: AsyncConnection, purchase_id: str) -> int:
    """What of a purchase was refunded or charged back so far."""
    c = sale_events.c
    total = await conn.scalar(
        select(func.coalesce(func.sum(c.amount), 0)).where(
            c.purchase_id == purchase_id, c.kind.in_(("refund", "chargeback"))
        )
    )
    return int(total or 0)


async def plans_in_force(conn: AsyncConnection) -> dict[str, list[tuple[int, PlanInForce]]]:
    """Every version of every commission plan, by plan, oldest in force first:
    (effective_ns, the version)."""
    found: dict[str, list[tuple[int, PlanInForce]]] = {}
    query = select(commission_plans).order_by(
        commission_plans.c.plan_id, commission_plans.c.effective_ns, commission_plans.c.version
    )
    for row in await conn.execute(query):
        plan = msgspec.json.decode(row.body, type=CommissionPlan)
        found.setdefault(row.plan_id, []).append(
            (int(row.effective_ns), PlanInForce(id=row.plan_id, version=row.version, plan=plan))
        )
    return found


def in_force(versions: list[tuple[int, PlanInForce]], ts_ns: int) -> PlanInForce | None:
    """The version in force at `ts_ns`: the latest to take effect at or before it."""
    chosen = None
    for effective_ns, version in versions:
        if effective_ns <= ts_ns:
            chosen = version
    return chosen


Totals = dict[tuple[str, str], int]
"""Amounts by (affiliate, currency)."""


async def totals(
    conn: AsyncConnection,
    table: Any,
    *,
    before_day: str | None = None,
    as_of_ns: int | None = None,
    affiliate_id: str | None = None,
) -> Totals:
    """The sum of `table`'s amounts (commission lines or payouts) by affiliate and currency:
    of days before `before_day`, of times up to `as_of_ns`, of one affiliate, as given."""
    c = table.c
    query = select(c.affiliate_id, c.currency, func.sum(c.amount)).group_by(
        c.affiliate_id, c.currency
    )
    if before_day is not None:
        query = query.where(c.day < before_day)
    if as_of_ns is not None:
        query = query.where(c.ts_ns <= as_of_ns)
    if affiliate_id is not None:
        query = query.where(c.affiliate_id == affiliate_id)
    return {(a, cur): int(v) for a, cur, v in await conn.execute(query)}


async def owed(
    conn: AsyncConnection,
    *,
    before_day: str | None = None,
    as_of_ns: int | None = None,
    affiliate_id: str | None = None,
) -> Totals:
    """What each affiliate is owed by currency: commission lines less payouts (lines up to
    `as_of_ns` if given; both before `before_day` if given)."""
    found = dict(
        await totals(
            conn,
            affiliate_lines,
            before_day=before_day,
            as_of_ns=as_of_ns,
            affiliate_id=affiliate_id,
        )
    )
    paid = await totals(conn, affiliate_payouts, before_day=before_day, affiliate_id=affiliate_id)
    for key, amount in paid.items():
        found[key] = found.get(key, 0) - amount
    return found


class Day(msgspec.Struct, frozen=True, kw_only=True):
    day: str
    opening: int
    earned: int
    clawed: int  # negative or zero
    paid: int
    closing: int
    lines: int


class Statement(msgspec.Struct, frozen=True, kw_only=True):
    affiliate_id: str
    currency: str
    start: str
    end: str
    opening: int
    earned: int
    clawed: int
    paid: int
    closing: int
    days: list[Day]


async def statement(
    conn: AsyncConnection,
    affiliate_id: str,
    currency: str,
    start: datetime.date,
    end: datetime.date,
) -> Statement:
    """An affiliate's statement from `start` to `end` (UTC days, both included): the balance
    owed at the start, each day's commissions earned, taken back and paid, the balance at the
    end."""
    first, last = start.isoformat(), end.isoformat()
    lines, paid = affiliate_lines.c, affiliate_payouts.c
    before = await owed(conn, before_day=first, affiliate_id=affiliate_id)
    by_day: dict[str, list[int]] = {}
    earned_q = (
        select(
            lines.day,
            func.coalesce(func.sum(lines.amount).filter(lines.amount > 0), 0),
            func.coalesce(func.sum(lines.amount).filter(lines.amount < 0), 0),
            func.count(),
        )
        .where(
            lines.affiliate_id == affiliate_id,
            lines.currency == currency,
            lines.day >= first,
            lines.day <= last,
        )
        .group_by(lines.day)
    )
    for day, earned, clawed, count in await conn.execute(earned_q):
        by_day[day] = [int(earned), int(clawed), 0, int(count)]
    paid_q = (
        select(paid.day, func.sum(paid.amount))
        .where(
            paid.affiliate_id == affiliate_id,
            paid.currency == currency,
            paid.day >= first,
            paid.day <= last,
        )
        .group_by(paid.day)
    )
    for day, amount in await conn.execute(paid_q):
        by_day.setdefault(day, [0, 0, 0, 0])[2] = int(amount)
    balance = before.get((affiliate_id, currency), 0)
    opening = balance
    days = []
    for day in sorted(by_day):
        earned, clawed, out, count = by_day[day]
        closing = balance + earned + clawed - out
        days.append(
            Day(
                day=day,
                opening=balance,
                earned=earned,
                clawed=clawed,
                paid=out,
                closing=closing,
                lines=count,
            )
        )
        balance = closing
    return Statement(
        affiliate_id=affiliate_id,
        currency=currency,
        start=first,
        end=last,
        opening=opening,
        earned=sum(d.earned for d in days),
        clawed=sum(d.clawed for d in days),
        paid=sum(d.paid for d in days),
        closing=balance,
        days=days,
    )


async def snapshot(conn: AsyncConnection) -> None:
    """Make the connection's next transaction read one snapshot (PostgreSQL's REPEATABLE READ;
    SQLite's transactions are serialised already). Before the connection's first statement."""
    if conn.engine.dialect.name == "postgresql":
        await conn.execution_options(isolation_level="REPEATABLE READ")


class Difference(msgspec.Struct, frozen=True, kw_only=True):
    affiliate_id: str
    currency: str
    accrued: int  # commission lines, net of clawbacks
    paid: int
    books: int  # the payable account's posted balance


class Reconciliation(msgspec.Struct, frozen=True, kw_only=True):
    """Accrued minus paid against the books' payable balance, per affiliate and currency."""

    ok: bool
    affiliates: int
    accrued: dict[str, int]  # by currency
    paid: dict[str, int]
    books: dict[str, int]
    differences: list[Difference]


async def reconcile(conn: AsyncConnection) -> Reconciliation:
    """Per affiliate and currency, and in total: commissions accrued minus paid equals what
    the books say is payable. Every difference is listed. Give it a connection with one
    snapshot (`snapshot`), or a batch committing between its queries shows as a difference."""
    accrued = await totals(conn, affiliate_lines)
    out = await totals(conn, affiliate_payouts)
    prefix = PAYABLE + ":"
    a = ledger_accounts.c
    held: dict[tuple[str, str], int] = {}
    for row in await conn.execute(
        select(a.id, a.currency, a.credits_posted, a.debits_posted).where(a.id.startswith(prefix))
    ):
        affiliate_id = row.id[len(prefix) :].removesuffix(":" + row.currency)
        if affiliate_id and row.id == payable(affiliate_id, row.currency):
            held[(affiliate_id, row.currency)] = int(row.credits_posted) - int(row.debits_posted)
    keys = sorted(set(accrued) | set(out) | set(held))
    differences = [
        Difference(
            affiliate_id=a,
            currency=c,
            accrued=accrued.get((a, c), 0),
            paid=out.get((a, c), 0),
            books=held.get((a, c), 0),
        )
        for a, c in keys
        if accrued.get((a, c), 0) - out.get((a, c), 0) != held.get((a, c), 0)
    ]
    return Reconciliation(
        ok=not differences,
        affiliates=len({a for a, _ in keys}),
        accrued=_by_currency(accrued.items()),
        paid=_by_currency(out.items()),
        books=_by_currency(held.items()),
        differences=differences,
    )


async def reconcile_one(conn: AsyncConnection, affiliate_id: str) -> dict[str, int]:
    """What the affiliate is owed by currency: commissions accrued less paid."""
    return {c: v for (_, c), v in (await owed(conn, affiliate_id=affiliate_id)).items()}


def _by_currency(items: Iterable[tuple[tuple[str, str], int]]) -> dict[str, int]:
    sums: dict[str, int] = {}
    for (_, currency), amount in items:
        sums[currency] = sums.get(currency, 0) + amount
    return sums
