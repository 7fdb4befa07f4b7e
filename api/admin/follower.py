"""The registry follower: keeps the account registry in step with what the shards decide, and
finishes what provisioning left undone.

- It reads the journal for `phase_failed` and `phase_passed`: a failed account becomes `failed`
  (with the rule); a passed one becomes `passed` and its next phase's account is created and
  opened on the platform (the funded account after the last evaluation phase).
- When the next phase is the funded stage (a phase without a profit target) and a KYC
  supervisor is given, it tells it (`funded`: the policy's funded tier is asked for) before it
  records the pass. The call is idempotent, so a row handled again asks again harmlessly; a
  KYC supervisor that fails or is slow is not waited for (the row is handled all the same):
  its own sweep finds every account in a funded stage whose trader was not asked.
- It retries opening accounts left `provisioning_failed` (backing off with each attempt, up to
  `max_attempts`) or `pending` for longer than `stale_pending_s` (the API process died while
  opening them).

Every step is idempotent (conditional updates, a next-phase account id derived from the passed
one), so two API processes may both run it. The journal is read in `seq` order and each batch
stops at the first row recorded less than `settle_s` ago. PostgreSQL hands out `seq` at insert,
so a row with a lower `seq` can become visible after a higher one: the follower relies on every
journal append committing within `settle_s` of its `recorded_ns` (an append is one COPY and
takes milliseconds); an append slower than that could be skipped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from actors.events import AnyDomainEvent, PhaseFailed, PhasePassed
from api.admin import plans as plan_store
from api.admin import registry
from api.admin.registry import Registered, Status
from api.services import Operator
from ledger import audit
from ledger.database import dialect_insert
from ledger.schema import accounts, followers, journal

log = logging.getLogger(__name__)

NAME = "registry"
KINDS = ("phase_failed", "phase_passed")
_events = msgspec.msgpack.Decoder(AnyDomainEvent)


class FollowerConfig(msgspec.Struct, frozen=True, kw_only=True):
    interval_s: float = 0.5
    settle_s: float = 2.0
    batch: int = 500
    retry_base_s: float = 5.0
    max_attempts: int = 8
    stale_pending_s: float = 60.0
    kyc_timeout_s: float = 10.0  # how long the KYC supervisor may take to hear of a funding


class Follower:
    def __init__(
        self,
        engine: AsyncEngine,
        operator: Operator,
        config: FollowerConfig | None = None,
        kyc: Any = None,
    ) -> None:
        self.engine = engine
        self.operator = operator
        self.config = config or FollowerConfig()
        self.kyc = kyc  # the KYC supervisor's handle, told when a trader is funded

    async def run_forever(self) -> None:
        while True:
            try:
                handled = await self.follow()
                await self.retry_due()
            except Exception:
                log.exception("registry follower step failed; trying again")
                handled = 0
            if handled < self.config.batch:
                await asyncio.sleep(self.config.interval_s)

    async def follow(self) -> int:
        """Handle the next settled phase outcomes, each in its own transaction with the
        cursor (so no transaction holds the audit chain's lock over several accounts);
        returns how many journal rows were handled."""
        settled_ns = time.time_ns() - int(self.config.settle_s * 1e9)
        async with self.engine.connect() as conn:
            cursor = await conn.scalar(select(followers.c.seq).where(followers.c.name == NAME))
            query = (
                select(journal.c.seq, journal.c.payload, journal.c.recorded_ns)
                .where(journal.c.seq > (cursor or 0), journal.c.kind.in_(KINDS))
                .order_by(journal.c.seq)
                .limit(self.config.batch)
            )
            rows = (await conn.execute(query)).all()
        handled = 0
        for row in rows:
            if row.recorded_ns >= settled_ns:
                break  # not settled: an earlier seq may still be committing
            event = _events.decode(row.payload)
            if isinstance(event, PhasePassed):
                await self._tell_kyc(event)
            async with self.engine.begin() as conn:
                to_open = await self._handle(conn, event, int(row.seq))
                await self._advance(conn, int(row.seq))
            for account in to_open:
                await registry.provision(self.engine, self.operator, account)
            handled += 1
        return handled

    async def _handle(
        self, conn: AsyncConnection, event: AnyDomainEvent, seq: int
    ) -> list[Registered]:
        account = await registry.find(conn, event.account_id)
        if account is None:
            return []  # not sold through the API (the demo's accounts)
        request_id = f"{registry.SYSTEM}:journal:{seq}"
        if isinstance(event, PhaseFailed):
            await registry.change(
                conn,
                account,
                registry.system_record("account.failed", account, request_id),
                expect=(Status.ACTIVE, Status.FROZEN),
                status=Status.FAILED,
                failed_rule=event.rule.value,
            )
            return []
        if isinstance(event, PhasePassed):
            return await self._passed(conn, account, request_id)
        return []

    async def _tell_kyc(self, event: PhasePassed) -> None:
        """Ask for the funded tier if the account passes into the funded stage. A KYC
        supervisor that fails or takes longer than `kyc_timeout_s` is left behind: its own
        sweep (`KycSupervisor.sweep_funded`) finds the funded account at its next tick."""
        if self.kyc is None:
            return
        async with self.engine.connect() as conn:
            account = await registry.find(conn, event.account_id)
            if account is None or account.status not in (Status.ACTIVE, Status.FROZEN):
                return  # not ours, or handled before: `_passed` does nothing either
            version = await plan_store.load(conn, account.plan_id, account.plan_version)
        phases = version.plan.phases
        names = [phase.name for phase in phases]
        index = names.index(account.phase) + 1 if account.phase in names else len(names)
        if index >= len(names) or phases[index].profit_target is not None:
            return  # not into the funded stage
        try:
            await asyncio.wait_for(
                self.kyc.funded.remote(account.trader_id), self.config.kyc_timeout_s
            )
        except Exception:
            log.exception("registry follower: the KYC supervisor was not told %s is funded "
                          "(its sweep will find it)", account.trader_id)  # fmt: skip

    async def _passed(
        self, conn: AsyncConnection, account: Registered, request_id: str
    ) -> list[Registered]:
        passed = await registry.change(
            conn,
            account,
            registry.system_record("account.passed", account, request_id),
            expect=(Status.ACTIVE, Status.FROZEN),
            status=Status.PASSED,
        )
        if passed is None:
            return []  # handled before
        version = await plan_store.load(conn, account.plan_id, account.plan_version)
        names = [phase.name for phase in version.plan.phases]
        index = names.index(account.phase) + 1 if account.phase in names else len(names)
        if index >= len(names):
            return []
        successor = next_phase_account(account, names[index], index)
        await conn.execute(accounts.insert().values(**successor.model_dump()))
        record = registry.system_record("account.create", successor, request_id)
        await audit.append(
            conn, [msgspec.structs.replace(record, after=successor.model_dump(mode="json"))]
        )
        return [successor]

    async def _advance(self, conn: AsyncConnection, seq: int) -> None:
        insert = dialect_insert(self.engine, followers).values(name=NAME, seq=seq)
        await conn.execute(insert.on_conflict_do_update(index_elements=["name"], set_={"seq": seq}))

    async def retry_due(self) -> int:
        """Open again the accounts whose provisioning failed or stalled; returns how many."""
        now = time.time_ns()
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(accounts).where(
                        accounts.c.status.in_([Status.PENDING, Status.PROVISIONING_FAILED]),
                        accounts.c.attempts < self.config.max_attempts,
                    )
                )
            ).all()
        due = [a for a in map(_registered, rows) if self._due(a, now)]
        for account in due:
            await registry.provision(self.engine, self.operator, account)
        return len(due)

    def _due(self, account: Registered, now_ns: int) -> bool:
        waited_s = (now_ns - account.updated_ns) / 1e9
        if account.status is Status.PENDING:
            return waited_s >= self.config.stale_pending_s
        return bool(waited_s >= self.config.retry_base_s * 2 ** max(0, account.attempts - 1))


def _registered(row: object) -> Registered:
    return Registered.model_validate(dict(row._mapping))  # type: ignore[attr-defined]


def next_phase_account(account: Registered, phase: str, index: int) -> Registered:
    """The account a passed phase leads to: same trader, purchase and plan version; its id
    is derived from the passed account's, so creating it twice is one account."""
    now = time.time_ns()
    return account.model_copy(
        update={
            "id": f"{account.id}-p{index + 1}",
            "phase": phase,
            "status": Status.PENDING,
            "connection": "",
            "platform_login": None,
            "failed_rule": None,
            "reason": None,
            "attempts": 0,
            "previous_id": account.id,
            "created_ns": now,
            "updated_ns": now,
        }
    )
