"""Each trader's verified KYC tier, and the escalations asked for (the `kyc_tiers` table).

Tiers rise `none` < `light` < `full` < `enhanced`. The payout supervisor reads the tier a payout
needs and, when it is missing, records the tier it asks for (`request`); whoever verifies the
trader (an operator today, the KYC supervisor of issue 10 later) records the result
(`set_tier`), which clears the request once it is met.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from enum import StrEnum

import msgspec
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from ledger.database import dialect_insert
from ledger.schema import kyc_tiers


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
    """The verified tier of each trader asked about (`none` for a trader never verified)."""
    wanted = sorted(set(trader_ids))
    found = {trader: Tier.NONE for trader in wanted}
    if wanted:
        query = select(kyc_tiers.c.trader_id, kyc_tiers.c.tier)
        for row in await conn.execute(query.where(kyc_tiers.c.trader_id.in_(wanted))):
            found[row.trader_id] = Tier(row.tier)
    return found


class Case(msgspec.Struct, frozen=True, kw_only=True):
    """A trader's verified tier and the tier asked for, if an escalation is open."""

    tier: Tier
    requested: Tier | None


async def case(conn: AsyncConnection, trader_id: str) -> Case | None:
    """The trader's case; None if never verified nor asked for."""
    query = select(kyc_tiers.c.tier, kyc_tiers.c.requested).where(
        kyc_tiers.c.trader_id == trader_id
    )
    row = (await conn.execute(query)).first()
    if row is None:
        return None
    return Case(tier=Tier(row.tier), requested=Tier(row.requested) if row.requested else None)


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


async def request(conn: AsyncConnection, trader_id: str, tier: Tier) -> None:
    """Ask for `trader_id` to be verified to `tier` (kept if a higher tier is already asked)."""
    now = time.time_ns()
    found = await _opened(conn, trader_id, Case(tier=Tier.NONE, requested=tier), now)
    asked = found.requested
    if not found.tier.covers(tier) and (asked is None or not asked.covers(tier)):
        await conn.execute(
            update(kyc_tiers)
            .where(kyc_tiers.c.trader_id == trader_id)
            .values(requested=tier.value, updated_ns=now)
        )


async def set_tier(conn: AsyncConnection, trader_id: str, tier: Tier) -> Case:
    """Record that `trader_id` is verified to `tier`; a request it meets is closed. The case
    as it now stands."""
    now = time.time_ns()
    found = await _opened(conn, trader_id, Case(tier=tier, requested=None), now)
    requested = found.requested
    if requested is not None and tier.covers(requested):
        requested = None
    await conn.execute(
        update(kyc_tiers)
        .where(kyc_tiers.c.trader_id == trader_id)
        .values(tier=tier.value, requested=requested.value if requested else None, updated_ns=now)
    )
    return Case(tier=tier, requested=requested)
