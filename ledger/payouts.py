"""Payouts as stored: one row per request with its checklist and where it stands, and the
queries the payout supervisor batches (by request key, by account, by shared signal).

Amounts are integer minor units of the payout's currency. Every function takes a connection in
the caller's transaction, so a payout's row changes with its ledger transfers and audit records.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import StrEnum
from typing import Any

import msgspec
from sqlalchemy import bindparam, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.schema import payouts


class Status(StrEnum):
    """Where a payout stands: decided `rejected`, `held` (waiting for KYC), `review` (waiting
    for finance) or `approved`; then `sent` to its rail, `settled` or `failed` (sent again, or
    back to review after the last attempt)."""

    HELD = "held"
    REVIEW = "review"
    APPROVED = "approved"
    REJECTED = "rejected"
    SENT = "sent"
    SETTLED = "settled"
    FAILED = "failed"


FINAL = frozenset({Status.REJECTED, Status.SETTLED})
"""No step follows (a settled payout may still wait for its platform balance reset)."""


class Check(msgspec.Struct, frozen=True, kw_only=True):
    """One item of the written checklist (`docs/payouts.md`) and what it found."""

    name: str
    ok: bool
    detail: str


class Payout(msgspec.Struct, kw_only=True):
    id: str
    request_key: str
    trader_id: str
    account_id: str
    period: int
    currency: str
    amount: int
    gross: int
    split_pct: float
    status: Status
    reasons: list[str]
    checks: list[Check]
    destination: str
    device: str
    ip: str
    country: str
    rail: str | None
    fee: int
    attempts: int
    provider_ref: str | None
    reset: bool
    created_ns: int
    updated_ns: int

    @property
    def reference(self) -> str:
        """Our reference for the current attempt at the payment provider (its idempotency
        key there: a resend after a crash is the same payment)."""
        return f"{self.id}:{self.attempts}"


_checks = msgspec.json.Decoder(list[Check])
_reasons = msgspec.json.Decoder(list[str])
_json = msgspec.json.Encoder()


def row_of(payout: Payout) -> dict[str, Any]:
    values = msgspec.structs.asdict(payout)
    values["status"] = payout.status.value
    values["reasons"] = _json.encode(payout.reasons).decode()
    values["checks"] = _json.encode(payout.checks).decode()
    values["reset"] = int(payout.reset)
    return values


def payout_of(row: Any) -> Payout:
    values = dict(row)
    values["status"] = Status(values["status"])
    values["reasons"] = _reasons.decode(values["reasons"])
    values["checks"] = _checks.decode(values["checks"])
    values["reset"] = bool(values["reset"])
    return Payout(**values)


async def insert(conn: AsyncConnection, found: Sequence[Payout]) -> None:
    if found:
        await conn.execute(payouts.insert(), [row_of(p) for p in found])


_FIXED = ("id", "request_key", "created_ns")
_SAVE = (
    update(payouts)
    .where(payouts.c.id == bindparam("_id"))
    .values({c.name: bindparam(c.name) for c in payouts.columns if c.name not in _FIXED})
)


async def save(conn: AsyncConnection, changed: Sequence[Payout]) -> None:
    """Write the payouts' changed fields (everything but their identity), in order, as one
    statement executed for each."""
    if not changed:
        return
    rows = []
    for payout in changed:
        values = row_of(payout)
        values["_id"] = values.pop("id")
        for fixed in _FIXED[1:]:
            values.pop(fixed)
        rows.append(values)
    await conn.execute(_SAVE, rows)


async def by_keys(conn: AsyncConnection, keys: Iterable[str]) -> dict[str, Payout]:
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    rows = await conn.execute(select(payouts).where(payouts.c.request_key.in_(wanted)))
    return {row.request_key: payout_of(row._mapping) for row in rows}


async def load(conn: AsyncConnection, payout_id: str) -> Payout | None:
    row = (await conn.execute(select(payouts).where(payouts.c.id == payout_id))).first()
    return None if row is None else payout_of(row._mapping)


async def of_accounts(conn: AsyncConnection, account_ids: Iterable[str]) -> list[Payout]:
    """Every payout of these accounts that was not rejected, oldest first."""
    wanted = sorted(set(account_ids))
    if not wanted:
        return []
    query = (
        select(payouts)
        .where(payouts.c.account_id.in_(wanted), payouts.c.status != Status.REJECTED.value)
        .order_by(payouts.c.created_ns, payouts.c.id)
    )
    return [payout_of(row._mapping) for row in await conn.execute(query)]


async def paid_by_traders(
    conn: AsyncConnection, trader_ids: Iterable[str], exclude: Iterable[str] = ()
) -> dict[tuple[str, str], int]:
    """What each trader's payouts that were not rejected add up to, across all their accounts,
    by (trader, currency), leaving out the payouts in `exclude`."""
    wanted = sorted(set(trader_ids))
    if not wanted:
        return {}
    c = payouts.c
    query = (
        select(c.trader_id, c.currency, func.sum(c.amount))
        .where(
            c.trader_id.in_(wanted),
            c.status != Status.REJECTED.value,
            c.id.not_in(sorted(set(exclude))),
        )
        .group_by(c.trader_id, c.currency)
    )
    return {(row[0], row[1]): int(row[2]) for row in await conn.execute(query)}


class Signal(msgspec.Struct, frozen=True):
    trader_id: str
    destination: str
    device: str
    ip: str


async def sharing(
    conn: AsyncConnection, destinations: Iterable[str], devices: Iterable[str], ips: Iterable[str]
) -> list[Signal]:
    """Earlier payouts (any status) that used one of these destinations, devices or IPs."""
    c = payouts.c
    wanted = [
        (column, sorted(set(values) - {""}))
        for column, values in ((c.destination, destinations), (c.device, devices), (c.ip, ips))
    ]
    clauses = [column.in_(values) for column, values in wanted if values]
    if not clauses:
        return []
    query = select(c.trader_id, c.destination, c.device, c.ip).where(or_(*clauses)).distinct()
    return [Signal(r.trader_id, r.destination, r.device, r.ip) for r in await conn.execute(query)]


async def unfinished(conn: AsyncConnection) -> list[Payout]:
    """Payouts a step still waits for: undecided by finance or KYC, in flight, failed, or
    settled with the platform balance not reduced yet."""
    open_statuses = [s.value for s in Status if s not in FINAL]
    query = select(payouts).where(
        or_(
            payouts.c.status.in_(open_statuses),
            (payouts.c.status == Status.SETTLED.value) & (payouts.c.reset == 0),
        )
    )
    return [payout_of(row._mapping) for row in await conn.execute(query.order_by(payouts.c.id))]
