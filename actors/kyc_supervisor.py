"""KYC escalation supervisor: a case per trader, tiers asked for at the policy's triggers,
sanctions and PEP screening at signup and again on every list update, deadlines with reminders
and escalation, and the payout supervisor told whenever a trader's standing changes.

State lives in PostgreSQL (`ledger/kyc.py`: `kyc_tiers`, `kyc_hits`, `kyc_verifications`), so
a restarted supervisor picks up where it was, except for the screener (lists indexed in memory):
Ray rebuilds it from the lists the supervisor was started with, so a list update made since must
be sent again after a restart. Every step is an audit record with the trader id, so the
trader's timeline shows it.

Triggers (`actors/kyc_policy.py`, per jurisdiction): `signup` (identity fields recorded, the
signup tier asked for, the trader screened), `funded` (the funded tier asked for), a payout's
tier (asked by the payout supervisor itself), `lists_updated` (every trader re-screened).
`tick` sends the reminders due and escalates cases past their deadline (an audit record and a
warning in the log for operations; payouts stay held because the tier is still short).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

import msgspec
import ray
from sqlalchemy import select

from actors.kyc_policy import KycPolicy, shipped_policy
from actors.screening import Hit, ListEntry, Person, Screener
from actors.verification import Report, SimulatedVerifier, VerifierConfig
from ledger import audit, kyc
from ledger.audit import AuditRecord
from ledger.database import create_engine
from ledger.kyc import Finding, HitRecord, Tier
from ledger.schema import kyc_tiers, traders

log = logging.getLogger(__name__)

SYSTEM = ("kyc-supervisor", "system")


class KycConfig(msgspec.Struct, frozen=True, kw_only=True):
    policy: KycPolicy = msgspec.field(default_factory=shipped_policy)  # deploy/kyc/policy.toml
    tick_s: float = 60.0  # how often reminders and deadlines are looked at (0: never)
    verifier: VerifierConfig | None = None  # the simulated document-verification provider


class KycError(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail

    def __reduce__(self) -> tuple[type[KycError], tuple[str, str]]:
        return type(self), (self.code, self.detail)


class Rescreen(msgspec.Struct, frozen=True, kw_only=True):
    traders: int
    seconds: float
    new_hits: list[HitRecord]


class Tick(msgspec.Struct, frozen=True, kw_only=True):
    reminded: list[str]  # traders reminded
    escalated: list[str]  # traders whose deadline passed


class KycSupervisor:
    def __init__(
        self,
        database_url: str,
        lists: Sequence[ListEntry] = (),
        config: KycConfig | None = None,
        payouts: Any = None,
    ) -> None:
        self.config = config or KycConfig()
        self.policy_in_force = self.config.policy
        self.engine = create_engine(database_url)
        self.screener = Screener(lists)
        self.payouts = payouts  # the payout supervisor's handle, told of every change
        self.loop: asyncio.Task[None] | None = None
        verifier = self.config.verifier
        self.provider = SimulatedVerifier(verifier) if verifier is not None else None

    async def start(self) -> None:
        """Start the deadline tick (every call does, so a supervisor Ray restarted has one)."""
        if self.config.tick_s > 0 and (self.loop is None or self.loop.done()):
            self.loop = asyncio.create_task(self._tick_forever())

    async def close(self) -> None:
        if self.loop is not None:
            self.loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.loop
        if self.provider is not None:
            await self.provider.close()
        await self.engine.dispose()

    async def policy(self) -> KycPolicy:
        return self.policy_in_force

    # -- triggers ----------------------------------------------------------------------------

    async def signup(self, trader_id: str, dob: str | None) -> list[HitRecord]:
        """A trader signed up: record the identity fields, ask for the signup tier, screen.
        The hits found (each opened for compliance)."""
        await self.start()
        person = await self._person(trader_id, dob)
        rules = self.policy_in_force.rules(person.country)
        tier = rules.on_signup()
        async with self.engine.begin() as conn:
            await kyc.set_identity(conn, trader_id, dob, person.country or "")
            opened = await kyc.request(conn, trader_id, tier, rules.within_ns(tier))
            found = await kyc.record_hits(conn, trader_id, _findings(self.screener.screen(person)))
            records = [_audit(trader_id, "kyc.signup", {"tier": tier, "asked": opened})]
            records += [_audit(trader_id, "kyc.hit", _hit_summary(h)) for h in found]
            await audit.append(conn, records)
        if found:
            await self._tell_payouts([trader_id])
        return found

    async def funded(self, trader_id: str) -> Tier:
        """An account of the trader became funded: ask for the funded tier (enhanced in a
        high-risk jurisdiction). The tier asked for."""
        await self.start()
        async with self.engine.begin() as conn:
            country = await _country(conn, trader_id)
            rules = self.policy_in_force.rules(country)
            tier = rules.on_funded()
            opened = await kyc.request(conn, trader_id, tier, rules.within_ns(tier))
            await audit.append(
                conn, [_audit(trader_id, "kyc.funded", {"tier": tier, "asked": opened})]
            )
        return tier

    async def lists_updated(self, lists: Sequence[ListEntry]) -> Rescreen:
        """New sanctions and PEP lists: index them and re-screen every trader."""
        await self.start()
        started = time.perf_counter()
        self.screener = Screener(lists)
        async with self.engine.connect() as conn:
            people = await _everyone(conn)
        found = self.screener.screen_all(people)
        new: list[HitRecord] = []
        async with self.engine.begin() as conn:
            for trader_id, hits in sorted(found.items()):
                new += await kyc.record_hits(conn, trader_id, _findings(hits))
            records = [_audit(h.trader_id, "kyc.hit", _hit_summary(h)) for h in new]
            await audit.append(conn, records)
        await self._tell_payouts(sorted({h.trader_id for h in new}))
        return Rescreen(
            traders=len(people), seconds=round(time.perf_counter() - started, 3), new_hits=new
        )

    # -- decisions ---------------------------------------------------------------------------

    async def decide(self, hit_id: str, confirm: bool, who: str, reason: str) -> HitRecord:
        """Compliance confirms an open hit (payouts stay held) or clears it (released)."""
        await self.start()
        async with self.engine.begin() as conn:
            decided = await kyc.decide_hit(conn, hit_id, confirm, who, reason)
            if decided is None:
                found = await kyc.hit(conn, hit_id)
                if found is None:
                    raise KycError("not_found", f"no screening hit {hit_id!r}")
                raise KycError("conflict", f"hit {hit_id!r} is {found.status}, not open")
            action = "kyc.hit_confirmed" if confirm else "kyc.hit_cleared"
            record = _audit(
                decided.trader_id, action, _hit_summary(decided), actor=(who, "compliance")
            )
            await audit.append(conn, [record])
        await self._tell_payouts([decided.trader_id])
        return decided

    async def verified(self, trader_id: str, tier: Tier, who: str) -> kyc.Case:
        """A verification came back: the trader is verified to `tier`."""
        await self.start()
        async with self.engine.begin() as conn:
            case = await kyc.set_tier(conn, trader_id, tier)
            record = _audit(trader_id, "kyc.verified", {"tier": tier}, actor=(who, "compliance"))
            await audit.append(conn, [record])
        await self._tell_payouts([trader_id])
        return case

    # -- document verification ---------------------------------------------------------------

    async def verify(self, trader_id: str, tier: Tier) -> str:
        """Open a verification of the trader to `tier` at the provider; its reference."""
        await self.start()
        if self.provider is None:
            raise KycError("unavailable", "no verification provider is configured")
        reference = await self.provider.start(trader_id, tier)
        opened = kyc.Verification(
            provider_ref=reference,
            trader_id=trader_id,
            tier=tier,
            status="pending",
            occurred_ns=0,  # any report of the provider's, by its own clock, is newer
        )
        async with self.engine.begin() as conn:
            await kyc.started(conn, opened)
            summary = {"provider_ref": reference, "tier": tier}
            await audit.append(conn, [_audit(trader_id, "kyc.verification_started", summary)])
        return reference

    async def verification(self, report: Report) -> str:
        """The provider's webhook, signature already checked: `applied`, `stale` (older than
        what we have: a duplicate or a late one, harmless) or `unknown`."""
        await self.start()
        found = kyc.Verification(
            provider_ref=report.provider_ref,
            trader_id=report.trader_id,
            tier=report.tier,
            status=report.status,
            reason=report.reason,
            occurred_ns=report.occurred_ns,
        )
        async with self.engine.begin() as conn:
            outcome, tier = await kyc.report(conn, found)
            if outcome != "applied" or tier is None:
                return outcome
            summary = {"provider_ref": report.provider_ref, "status": report.status,
                       "tier": report.tier, "reason": report.reason}  # fmt: skip
            records = [_audit(report.trader_id, "kyc.verification", summary)]
            case = await kyc.case(conn, report.trader_id, lock=True)  # raise only, never lower
            raised = report.status == "approved" and (case is None or not case.tier.covers(tier))
            if raised:
                await kyc.set_tier(conn, report.trader_id, tier)
                records.append(_audit(report.trader_id, "kyc.verified", {"tier": tier}))
            await audit.append(conn, records)
        if raised:
            await self._tell_payouts([report.trader_id])
        return outcome

    async def delivered(self) -> list[Report]:
        """Every webhook the simulated provider sent, once all are out (tests, demo)."""
        if self.provider is None:
            return []
        await self.provider.idle()
        return list(self.provider.delivered)

    # -- deadlines ---------------------------------------------------------------------------

    async def tick(self, now_ns: int | None = None) -> Tick:
        """Send the reminders due and escalate the cases past their deadline."""
        now = time.time_ns() if now_ns is None else now_ns
        reminded, escalated = [], []
        async with self.engine.begin() as conn:
            records = []
            for trader_id, case in sorted((await kyc.pending(conn)).items()):
                if case.requested is None or case.requested_ns is None:
                    continue
                rules = self.policy_in_force.rules(case.country)
                due = [t for t in rules.reminders_ns(case.requested, case.requested_ns) if t <= now]
                asked = {"tier": case.requested, "deadline_ns": case.deadline_ns}
                of = case.requested_ns
                if len(due) > case.reminders_sent and await kyc.note_reminder(
                    conn, trader_id, of, len(due)
                ):
                    records.append(_audit(trader_id, "kyc.reminder", asked | {"sent": len(due)}))
                    reminded.append(trader_id)
                late = case.deadline_ns is not None and case.deadline_ns <= now
                if (
                    late
                    and case.escalated_ns is None
                    and await kyc.note_escalation(conn, trader_id, of, now)
                ):
                    records.append(_audit(trader_id, "kyc.escalated", asked))
                    escalated.append(trader_id)
                    log.warning(
                        "KYC: trader %s is not verified to %s by its deadline: payouts held, "
                        "escalated to operations",
                        trader_id,
                        case.requested.value,
                    )
            await audit.append(conn, records)
        return Tick(reminded=reminded, escalated=escalated)

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.tick_s)
            try:
                await self.tick()
            except Exception:
                log.exception("KYC deadlines: the tick failed")

    async def _tell_payouts(self, trader_ids: Sequence[str]) -> None:
        """The payout supervisor decides the traders' pending payouts again."""
        if self.payouts is None:
            return
        for trader_id in trader_ids:
            try:
                await self.payouts.kyc_changed.remote(trader_id)
            except Exception:  # held payouts: its periodic KYC re-check finds them
                log.exception("KYC: the payout supervisor was not told about %s", trader_id)

    async def _person(self, trader_id: str, dob: str | None) -> Person:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(traders.c.name, traders.c.country).where(traders.c.id == trader_id)
                )
            ).first()
        if row is None:
            raise KycError("not_found", f"no trader {trader_id!r}")
        return Person(trader_id=trader_id, name=row.name, dob=dob, country=row.country or None)


async def _country(conn: Any, trader_id: str) -> str | None:
    query = select(traders.c.country).where(traders.c.id == trader_id)
    country = await conn.scalar(query)
    if country is None:
        raise KycError("not_found", f"no trader {trader_id!r}")
    return str(country) or None


async def _everyone(conn: Any) -> list[Person]:
    """Every trader, with the date of birth recorded at signup where there is one."""
    cases = select(kyc_tiers.c.trader_id, kyc_tiers.c.dob).subquery()
    query = select(traders.c.id, traders.c.name, traders.c.country, cases.c.dob).outerjoin(
        cases, cases.c.trader_id == traders.c.id
    )
    return [
        Person(trader_id=r.id, name=r.name, dob=r.dob, country=r.country or None)
        for r in await conn.execute(query)
    ]


def _findings(hits: Sequence[Hit]) -> list[Finding]:
    return [
        Finding(
            uid=h.uid, list_name=h.list, listed_name=h.listed_name, score=h.score, reasons=h.reasons
        )
        for h in hits
    ]


def _hit_summary(hit: HitRecord) -> dict[str, Any]:
    return {"hit": hit.id, "list": hit.list_name, "listed_name": hit.listed_name,
            "score": hit.score, "status": hit.status}  # fmt: skip


def _audit(trader_id: str, action: str, after: Any, actor: tuple[str, str] = SYSTEM) -> AuditRecord:
    return AuditRecord(
        actor=actor[0],
        role=actor[1],
        action=action,
        target_type="kyc",
        target_id=trader_id,
        trader_id=trader_id,
        after=msgspec.to_builtins(after),
        request_id=f"kyc:{trader_id}",
    )


RemoteKycSupervisor: Any = ray.remote(KycSupervisor)


def start_kyc(
    database_url: str,
    lists: Sequence[ListEntry] = (),
    config: KycConfig | None = None,
    payouts: Any = None,
) -> Any:
    """The KYC supervisor as a Ray actor, restarted by Ray if it dies (its state is in the
    database; its screener is rebuilt from `lists`)."""
    handle = RemoteKycSupervisor.options(
        max_restarts=-1, max_task_retries=-1, max_concurrency=1_000
    ).remote(database_url, lists, config, payouts)
    handle.start.remote()
    return handle
