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


async def request(conn: AsyncConnection, trader_id: str, tier: Tier) -> None:
    """Ask for `trader_id` to be verified to `tier` (kept if a higher tier is already asked)."""
    now = time.time_ns()
    insert = dialect_insert(conn.engine, kyc_tiers).values(
        trader_id=trader_id, tier=Tier.NONE.value, requested=tier.value, updated_ns=now
    )
    await conn.execute(insert.on_conflict_do_nothing(index_elements=["trader_id"]))
    row = (await conn.execute(select(kyc_tiers).where(kyc_tiers.c.trader_id == trader_id))).one()
    asked = Tier(row.requested) if row.requested else None
    if not Tier(row.tier).covers(tier) and (asked is None or not asked.covers(tier)):
        await conn.execute(
            update(kyc_tiers)
            .where(kyc_tiers.c.trader_id == trader_id)
            .values(requested=tier.value, updated_ns=now)
        )


async def set_tier(conn: AsyncConnection, trader_id: str, tier: Tier) -> None:
    """Record that `trader_id` is verified to `tier`; a request it meets is closed."""
    now = time.time_ns()
    insert = dialect_insert(conn.engine, kyc_tiers).values(
        trader_id=trader_id, tier=tier.value, requested=None, updated_ns=now
    )
    await conn.execute(insert.on_conflict_do_nothing(index_elements=["trader_id"]))
    row = (await conn.execute(select(kyc_tiers).where(kyc_tiers.c.trader_id == trader_id))).one()
    requested = row.requested
    if requested is not None and tier.covers(Tier(requested)):
        requested = None
    await conn.execute(
        update(kyc_tiers)
        .where(kyc_tiers.c.trader_id == trader_id)
        .values(tier=tier.value, requested=requested, updated_ns=now)
    )
