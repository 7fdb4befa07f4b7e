"""Each trader's KYC case (the `kyc_tiers` table) and screening hits (`kyc_hits`).

Tiers rise `none` < `light` < `full` < `enhanced`. A tier is asked for (`request`: by the KYC
supervisor's triggers, or by the payout supervisor for a payout) with a deadline; whoever
verifies the trader records the result (`set_tier`), which clears the request once it is met.
A sanctions or PEP hit that compliance has not cleared (open, or confirmed) makes the trader's
effective tier `none` (`tiers`): payouts are held while it stands.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from enum import StrEnum
from typing import Any

import msgspec
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.database import dialect_insert
from ledger.schema import kyc_hits, kyc_tiers, kyc_verifications


class Tier(StrEnum):
    NONE = "none"
    LIGHT = "light"
    FULL = "full"
    ENHANCED = "enhanced"

    @property
    def rank(self) -> int:
        return _ORDER.index(self)

    def covers(self, needed: Tier) -> bool:
        return self.rank >= needed.rank


_ORDER = list(Tier)


async def tiers(conn: AsyncConnection, trader_ids: Iterable[str]) -> dict[str, Tier]:
    """The effective tier of each trader asked about: the verified one, `none` for a trader
    never verified or with a screening hit not cleared."""
    wanted = sorted(set(trader_ids))
    found = {trader: Tier.NONE for trader in wanted}
    if wanted:
        query = select(kyc_tiers.c.trader_id, kyc_tiers.c.tier)
        for row in await conn.execute(query.where(kyc_tiers.c.trader_id.in_(wanted))):
            found[row.trader_id] = Tier(row.tier)
        for trader in await blocked(conn, wanted):
            found[trader] = Tier.NONE
    return found


async def blocked(conn: AsyncConnection, trader_ids: Iterable[str]) -> set[str]:
    """The traders among `trader_ids` with a screening hit open or confirmed."""
    wanted = sorted(set(trader_ids))
    if not wanted:
        return set()
    query = select(kyc_hits.c.trader_id).where(
        kyc_hits.c.trader_id.in_(wanted), kyc_hits.c.status.in_(BLOCKING)
    )
    return {row.trader_id for row in await conn.execute(query)}


class Case(msgspec.Struct, frozen=True, kw_only=True):
    """A trader's verified tier and the tier asked for, if an escalation is open, with its
    deadline, the reminders sent and when it escalated."""

    tier: Tier
    requested: Tier | None
    requested_ns: int | None = None
    deadline_ns: int | None = None
    reminders_sent: int = 0
    escalated_ns: int | None = None
    dob: str | None = None
    country: str | None = None

    def lacks(self, tier: Tier) -> bool:
        """Whether `tier` is neither verified nor covered by the tier asked for."""
        asked = self.requested
        return not (self.tier.covers(tier) or (asked is not None and asked.covers(tier)))


def case_of(row: Any) -> Case:
    """A case as stored (a row of `kyc_tiers`)."""
    return Case(
        tier=Tier(row.tier),
        requested=Tier(row.requested) if row.requested else None,
        requested_ns=row.requested_ns,
        deadline_ns=row.deadline_ns,
        reminders_sent=row.reminders_sent or 0,
        escalated_ns=row.escalated_ns,
        dob=row.dob,
        country=row.country,
    )


async def case(conn: AsyncConnection, trader_id: str, *, lock: bool = False) -> Case | None:
    """The trader's case; None if never verified nor asked for. `lock`: held until the
    transaction ends (PostgreSQL), for a read-then-write."""
    query = select(kyc_tiers).where(kyc_tiers.c.trader_id == trader_id)
    if lock:
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    return None if row is None else case_of(row)


async def pending(conn: AsyncConnection) -> dict[str, Case]:
    """Every case with a tier asked for and not yet verified, by trader."""
    query = select(kyc_tiers).where(kyc_tiers.c.requested.is_not(None))
    return {row.trader_id: case_of(row) for row in await conn.execute(query)}


async def open_cases(
    conn: AsyncConnection, overdue_at_ns: int | None = None, limit: int = 100
) -> list[tuple[str, Case]]:
    """Compliance's queue: the cases with a tier asked for, the nearest deadline first (only
    those past their deadline at `overdue_at_ns`, if given), at most `limit`."""
    c = kyc_tiers.c
    query = select(kyc_tiers).where(c.requested.is_not(None))
    if overdue_at_ns is not None:
        query = query.where(c.deadline_ns <= overdue_at_ns)
    query = query.order_by(c.deadline_ns.asc().nulls_last(), c.trader_id).limit(limit)
    return [(row.trader_id, case_of(row)) for row in await conn.execute(query)]


async def set_identity(
    conn: AsyncConnection, trader_id: str, dob: str | None, country: str
) -> None:
    """Record the identity fields screened with the light tier."""
    now = time.time_ns()
    await _opened(conn, trader_id, Case(tier=Tier.NONE, requested=None), now)
    await conn.execute(
        update(kyc_tiers)
        .where(kyc_tiers.c.trader_id == trader_id)
        .values(dob=dob, country=country, updated_ns=now)
    )


async def note_reminder(conn: AsyncConnection, trader_id: str, of_ns: int, sent: int) -> bool:
    """Count the reminders sent for the request opened at `of_ns` (not for a newer one)."""
    return await _note(conn, trader_id, of_ns, reminders_sent=sent)


async def note_escalation(conn: AsyncConnection, trader_id: str, of_ns: int, at_ns: int) -> bool:
    """Mark the request opened at `of_ns` escalated (not a newer one)."""
    return await _note(conn, trader_id, of_ns, escalated_ns=at_ns)


async def _note(conn: AsyncConnection, trader_id: str, of_ns: int, **values: int) -> bool:
    done = await conn.execute(
        update(kyc_tiers)
        .where(kyc_tiers.c.trader_id == trader_id, kyc_tiers.c.requested_ns == of_ns)
        .values(**values)
    )
    return bool(done.rowcount)


async def _opened(conn: AsyncConnection, trader_id: str, first: Case, now: int) -> Case:
    """The trader's case, created as `first` if there was none."""
    insert = dialect_insert(conn.engine, kyc_tiers).values(
        trader_id=trader_id,
        tier=first.tier.value,
        requested=first.requested.value if first.requested else None,
        updated_ns=now,
    )
    await conn.execute(insert.on_conflict_do_nothing(index_elements=["trader_id"]))
    found = await case(conn, trader_id)
    assert found is not None
    return found


async def request(
    conn: AsyncConnection, trader_id: str, tier: Tier, within_ns: int | None = None
) -> bool:
    """Ask for `trader_id` to be verified to `tier`, within `within_ns` of now if given (kept if
    the trader is verified to it or a higher tier is already asked). Whether a new request was
    opened."""
    now = time.time_ns()
    found = await _opened(conn, trader_id, Case(tier=Tier.NONE, requested=None), now)
    if not found.lacks(tier):
        return False
    await conn.execute(
        update(kyc_tiers)
        .where(kyc_tiers.c.trader_id == trader_id)
        .values(
            requested=tier.value,
            updated_ns=now,
            requested_ns=now,
            deadline_ns=None if within_ns is None else now + within_ns,
            reminders_sent=0,
            escalated_ns=None,
        )
    )
    return True


async def set_tier(conn: AsyncConnection, trader_id: str, tier: Tier) -> Case:
    """Record that `trader_id` is verified to `tier`; a request it meets is closed. The case
    as it now stands."""
    now = time.time_ns()
    found = await _opened(conn, trader_id, Case(tier=tier, requested=None), now)
    requested = found.requested
    if requested is not None and tier.covers(requested):
        requested = None
    closed = {} if requested else {"requested_ns": None, "deadline_ns": None, "escalated_ns": None}
    await conn.execute(
        update(kyc_tiers)
        .where(kyc_tiers.c.trader_id == trader_id)
        .values(
            tier=tier.value,
            requested=requested.value if requested else None,
            updated_ns=now,
            **closed,
        )
    )
    now_stands = await case(conn, trader_id)
    assert now_stands is not None
    return now_stands


# Screening hits --------------------------------------------------------------------------------

BLOCKING = ("open", "confirmed")


class Finding(msgspec.Struct, frozen=True, kw_only=True):
    """A screening hit as found (`actors/screening.py`), to record."""

    uid: str
    list_name: str
    listed_name: str
    score: float
    reasons: tuple[str, ...]


class HitRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    trader_id: str
    uid: str
    list_name: str
    listed_name: str
    score: float
    reasons: list[str]
    status: str  # open, cleared, confirmed
    created_ns: int
    decided_ns: int | None
    decided_by: str | None
    reason: str | None


_reasons = msgspec.json.Decoder(list[str])


def _hit_of(row: Any) -> HitRecord:
    values = dict(row._mapping)
    values["reasons"] = _reasons.decode(values["reasons"])
    return HitRecord(**values)


async def record_hits(
    conn: AsyncConnection, trader_id: str, findings: Iterable[Finding]
) -> list[HitRecord]:
    """Record the hits not seen before for this trader (a hit compliance already decided stays
    decided when the same entry is found again). The new ones."""
    now = time.time_ns()
    added = []
    for finding in findings:
        hit_id = f"{trader_id}:{finding.uid}"
        insert = dialect_insert(conn.engine, kyc_hits).values(
            id=hit_id,
            trader_id=trader_id,
            uid=finding.uid,
            list_name=finding.list_name,
            listed_name=finding.listed_name,
            score=finding.score,
            reasons=msgspec.json.encode(list(finding.reasons)).decode(),
            status="open",
            created_ns=now,
        )
        done = await conn.execute(insert.on_conflict_do_nothing(index_elements=["id"]))
        if done.rowcount:
            found = await hit(conn, hit_id)
            assert found is not None
            added.append(found)
    return added


async def hit(conn: AsyncConnection, hit_id: str) -> HitRecord | None:
    row = (await conn.execute(select(kyc_hits).where(kyc_hits.c.id == hit_id))).first()
    return None if row is None else _hit_of(row)


async def hits(
    conn: AsyncConnection, status: str | None = None, trader_id: str | None = None
) -> list[HitRecord]:
    """Hits, oldest first; `status=open` is compliance's queue."""
    query = select(kyc_hits).order_by(kyc_hits.c.created_ns, kyc_hits.c.id)
    if status is not None:
        query = query.where(kyc_hits.c.status == status)
    if trader_id is not None:
        query = query.where(kyc_hits.c.trader_id == trader_id)
    return [_hit_of(row) for row in await conn.execute(query)]


async def decide_hit(
    conn: AsyncConnection, hit_id: str, confirm: bool, who: str, reason: str
) -> HitRecord | None:
    """Compliance's decision on an open hit: confirmed (a true match) or cleared. None if the
    hit is unknown or not open."""
    now = time.time_ns()
    done = await conn.execute(
        update(kyc_hits)
        .where(kyc_hits.c.id == hit_id, kyc_hits.c.status == "open")
        .values(
            status="confirmed" if confirm else "cleared",
            decided_ns=now,
            decided_by=who,
            reason=reason,
        )
    )
    return await hit(conn, hit_id) if done.rowcount else None


# Document verifications ------------------------------------------------------------------------


class Verification(msgspec.Struct, frozen=True, kw_only=True):
    """A verification's outcome as the provider reported it (its webhook), at its time."""

    provider_ref: str
    trader_id: str
    tier: Tier
    status: str  # pending, approved, rejected, resubmission_requested
    reason: str | None = None
    occurred_ns: int


async def started(conn: AsyncConnection, verification: Verification) -> None:
    """Record a verification the provider accepted (`pending`)."""
    await conn.execute(
        dialect_insert(conn.engine, kyc_verifications)
        .values(**msgspec.structs.asdict(verification), updated_ns=time.time_ns())
        .on_conflict_do_nothing(index_elements=["provider_ref"])
    )


async def report(conn: AsyncConnection, verification: Verification) -> tuple[str, Tier | None]:
    """Apply the provider's report if it is the latest by its own clock: `applied`, `stale` (an
    older report arriving late: the newer one stands) or `unknown` (no such verification), and
    the tier the verification was opened for (ours, not the report's)."""
    values = msgspec.structs.asdict(verification)
    values["tier"] = verification.tier.value
    done = await conn.execute(
        update(kyc_verifications)
        .where(
            kyc_verifications.c.provider_ref == verification.provider_ref,
            kyc_verifications.c.trader_id == verification.trader_id,
            kyc_verifications.c.occurred_ns < verification.occurred_ns,
        )
        .values(
            status=verification.status,
            reason=verification.reason,
            occurred_ns=verification.occurred_ns,
            updated_ns=time.time_ns(),
        )
    )
    query = select(kyc_verifications.c.trader_id, kyc_verifications.c.tier).where(
        kyc_verifications.c.provider_ref == verification.provider_ref
    )
    known = (await conn.execute(query)).first()
    if known is None or known.trader_id != verification.trader_id:
        return "unknown", None
    return ("applied" if done.rowcount else "stale"), Tier(known.tier)


async def verifications(conn: AsyncConnection, trader_id: str) -> list[Verification]:
    query = (
        select(kyc_verifications)
        .where(kyc_verifications.c.trader_id == trader_id)
        .order_by(kyc_verifications.c.updated_ns)
    )
    return [
        Verification(
            provider_ref=r.provider_ref,
            trader_id=r.trader_id,
            tier=Tier(r.tier),
            status=r.status,
            reason=r.reason,
            occurred_ns=r.occurred_ns,
        )
        for r in await conn.execute(query)
    ]
