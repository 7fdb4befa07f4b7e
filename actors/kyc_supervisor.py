"""KYC escalation supervisor: a case per trader, tiers asked for at the policy's triggers,
sanctions and PEP screening at signup and again on every list update, deadlines with reminders
and escalation, and the payout supervisor told whenever a trader's standing changes.

State lives in PostgreSQL (`ledger/kyc.py`: `kyc_tiers`, `kyc_hits`, `kyc_verifications`,
`kyc_lists`), so a restarted supervisor picks up where it was. Every list set loaded is stored
(`kyc_lists`); on its first call a supervisor screens against the newest stored set if the lists
it was started with were stored before (Ray restarted it: a list update made since stands), and
otherwise takes its start lists as a list update (new files deployed: stored, everyone
re-screened). Every step is an audit record with the trader id, so the trader's timeline shows
it.

Triggers (`actors/kyc_policy.py`, per jurisdiction): `signup` (identity fields recorded, the
signup tier asked for, the trader screened), `funded` (the funded tier asked for), a payout's
tier (asked by the payout supervisor itself), `lists_updated` (every trader re-screened).
`tick` sends the reminders due and escalates cases past their deadline: an audit record, a
`kyc_overdue` alert on the risk hub (the risk page and stream; told again at the next tick if
the hub did not answer) and a warning in the log. Payouts stay held because the tier is short.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Sequence
from typing import Any

import msgspec
import ray
from sqlalchemy import select

from actors.kyc_policy import KycPolicy, shipped_policy
from actors.plans import Plan
from actors.screening import Hit, ListEntry, Person, Screener
from actors.verification import Report, SimulatedVerifier, VerifierConfig
from ledger import audit, kyc
from ledger.audit import AuditRecord
from ledger.database import create_engine
from ledger.kyc import Finding, HitRecord, Tier
from ledger.schema import accounts, kyc_lists, kyc_tiers, plans, traders

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


class Overdue(msgspec.Struct, frozen=True, kw_only=True):
    """An escalated case, as the risk hub is told of it."""

    trader_id: str
    tier: str
    requested_ns: int
    deadline_ns: int


class Tick(msgspec.Struct, frozen=True, kw_only=True):
    funded: list[str]  # traders in a funded stage asked for the funded tier by the sweep
    reminded: list[str]  # traders reminded
    escalated: list[str]  # traders whose deadline passed
    alerted: int = 0  # alerts the risk hub raised


class KycSupervisor:
    def __init__(
        self,
        database_url: str,
        lists: Sequence[ListEntry] = (),
        config: KycConfig | None = None,
        payouts: Any = None,
        hub: Any = None,
    ) -> None:
        self.config = config or KycConfig()
        self.policy_in_force = self.config.policy
        self.engine = create_engine(database_url)
        self.start_lists = list(lists)
        self.screener = Screener(())
        self.lists_ready = False
        self.loading: asyncio.Lock | None = None
        self.screening: asyncio.Lock | None = None  # a re-screen and a signup, one at a time
        self.payouts = payouts  # the payout supervisor's handle, told of every change
        self.hub = hub  # the risk hub's handle, told of every escalation
        # escalations the hub has not taken yet, by (trader, request)
        self.unalerted: dict[tuple[str, int], Overdue] = {}
        self.loop: asyncio.Task[None] | None = None
        verifier = self.config.verifier
        self.provider = SimulatedVerifier(verifier) if verifier is not None else None

    async def start(self) -> None:
        """Load the lists in force and start the deadline tick (every call does, so a
        supervisor Ray restarted has both)."""
        self.screening = self.screening or asyncio.Lock()
        if not self.lists_ready:
            self.loading = self.loading or asyncio.Lock()
            async with self.loading:
                if not self.lists_ready:
                    await self._load_lists()
        if self.config.tick_s > 0 and (self.loop is None or self.loop.done()):
            self.loop = asyncio.create_task(self._tick_forever())

    async def _load_lists(self) -> None:
        digest = _digest(_encode_lists(self.start_lists))
        async with self.engine.connect() as conn:
            seen = await conn.scalar(
                select(kyc_lists.c.id).where(kyc_lists.c.digest == digest).limit(1)
            )
            newest = await conn.scalar(
                select(kyc_lists.c.payload).order_by(kyc_lists.c.id.desc()).limit(1)
            )
        if newest is not None and (seen is not None or not self.start_lists):
            self.screener = Screener(_decode_lists.decode(newest))
            log.info("KYC: screening against the newest stored lists")
        elif not self.start_lists:
            log.warning("KYC: no sanctions or PEP lists: nobody is screened until an update")
        else:
            done = await self._rescreen(self.start_lists)
            log.info("KYC: new start lists stored; %d traders re-screened", done.traders)
        self.lists_ready = True  # only now: every other call waits for the lists

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
        The trader's hits waiting for compliance (open), found now or before."""
        await self.start()
        person = await self._person(trader_id, dob)
        rules = self.policy_in_force.rules(person.country)
        tier = rules.on_signup()
        assert self.screening is not None
        async with self.screening, self.engine.begin() as conn:
            await kyc.set_identity(conn, trader_id, dob, person.country or "")
            opened = await kyc.request(conn, trader_id, tier, rules.within_ns(tier))
            found = await kyc.record_hits(conn, trader_id, _findings(self.screener.screen(person)))
            records = [_audit(trader_id, "kyc.signup", {"tier": tier, "asked": opened})]
            records += [_audit(trader_id, "kyc.hit", _hit_summary(h)) for h in found]
            await audit.append(conn, records)
            standing = await kyc.hits(conn, status="open", trader_id=trader_id)
        if found:
            await self._tell_payouts([trader_id])
        return standing

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
        """New sanctions and PEP lists: store them, index them and re-screen every trader."""
        await self.start()
        return await self._rescreen(lists)

    async def _rescreen(self, lists: Sequence[ListEntry]) -> Rescreen:
        """Store the lists, screen everyone against them: signups wait, so none is screened
        against the old lists and missed by the new ones."""
        assert self.screening is not None
        async with self.screening:
            return await self._rescreen_locked(lists)

    async def _rescreen_locked(self, lists: Sequence[ListEntry]) -> Rescreen:
        started = time.perf_counter()
        screener = Screener(lists)
        async with self.engine.connect() as conn:
            people = await _everyone(conn)
        found = screener.screen_all(people)
        payload = _encode_lists(list(lists))
        new: list[HitRecord] = []
        async with self.engine.begin() as conn:
            newest = await conn.scalar(
                select(kyc_lists.c.digest).order_by(kyc_lists.c.id.desc()).limit(1)
            )
            if newest != _digest(payload):  # the same lists again are not stored twice
                await conn.execute(
                    kyc_lists.insert().values(
                        loaded_ns=time.time_ns(),
                        entries=len(lists),
                        digest=_digest(payload),
                        payload=payload,
                    )
                )
            for trader_id, hits in sorted(found.items()):
                new += await kyc.record_hits(conn, trader_id, _findings(hits))
            records = [_audit(h.trader_id, "kyc.hit", _hit_summary(h)) for h in new]
            await audit.append(conn, records)
        self.screener = screener  # in force once stored
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

    async def approve_enhanced(
        self, trader_id: str, source_of_funds: str, evidence: str | None, who: str, reason: str
    ) -> kyc.Case:
        """Compliance approves enhanced due diligence after reviewing the trader's source of
        funds: its account and the evidence's reference are audited (documents stay in the
        firm's own store). Only on top of `full`, and never while a screening hit stands."""
        await self.start()
        async with self.engine.begin() as conn:
            case = await kyc.case(conn, trader_id, lock=True)
            if case is None or not case.tier.covers(Tier.FULL):
                verified = case.tier.value if case is not None else "nothing"
                raise KycError(
                    "conflict",
                    f"trader {trader_id} is verified to {verified}: enhanced due diligence "
                    "builds on full verification",
                )
            if case.tier is Tier.ENHANCED:
                raise KycError("conflict", f"trader {trader_id} is verified to enhanced already")
            if await kyc.blocked(conn, [trader_id]):
                raise KycError(
                    "conflict",
                    f"trader {trader_id} has a screening hit not cleared: compliance decides it "
                    "first",
                )
            approved = await kyc.set_tier(conn, trader_id, Tier.ENHANCED)
            summary = {"tier": Tier.ENHANCED, "source_of_funds": source_of_funds,
                       "evidence": evidence, "reason": reason}  # fmt: skip
            record = _audit(trader_id, "kyc.enhanced_approved", summary, actor=(who, "compliance"))
            await audit.append(conn, [record])
        await self._tell_payouts([trader_id])
        return approved

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
        """Ask for the funded tier where no one did, send the reminders due and escalate the
        cases past their deadline."""
        await self.start()
        now = time.time_ns() if now_ns is None else now_ns
        funded = await self.sweep_funded()
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
                    assert case.deadline_ns is not None
                    self.unalerted[(trader_id, of)] = Overdue(
                        trader_id=trader_id,
                        tier=case.requested.value,
                        requested_ns=of,
                        deadline_ns=case.deadline_ns,
                    )
                    log.warning(
                        "KYC: trader %s is not verified to %s by its deadline: payouts held, "
                        "escalated to operations",
                        trader_id,
                        case.requested.value,
                    )
            await audit.append(conn, records)
        alerted = await self._alert_hub()
        return Tick(funded=funded, reminded=reminded, escalated=escalated, alerted=alerted)

    async def sweep_funded(self) -> list[str]:
        """Ask for the funded tier for every trader with an account in a funded stage (pending,
        active or frozen) whose case neither has it nor asks for it: a funding the registry
        follower could not tell, or an account sold straight into its funded stage. The
        traders asked."""
        async with self.engine.connect() as conn:
            found = await _funded_traders(conn)
            cases = await _cases(conn, list(found))
        asked = []
        for trader_id, country in sorted(found.items()):
            tier = self.policy_in_force.rules(country).on_funded()
            case = cases.get(trader_id)
            if case is not None and not case.lacks(tier):
                continue
            await self.funded(trader_id)
            asked.append(trader_id)
        return asked

    async def _alert_hub(self) -> int:
        """Tell the risk hub of the escalations it has not taken yet; the alerts raised."""
        if self.hub is None:
            self.unalerted.clear()
            return 0
        raised = 0
        for key, overdue in list(self.unalerted.items()):
            try:
                raised += await self.hub.kyc_overdue.remote(
                    overdue.trader_id, overdue.tier, overdue.requested_ns, overdue.deadline_ns
                )
            except Exception:  # the next tick tells it again
                log.exception("KYC: the risk hub was not told %s is overdue", overdue.trader_id)
                continue
            self.unalerted.pop(key, None)
        return raised

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


_IN_FUNDED_STAGE = ("pending", "active", "frozen")  # api.admin.registry.Status values


async def _funded_traders(conn: Any) -> dict[str, str | None]:
    """The traders with an account in a funded stage (a phase without a profit target), and
    their country."""
    query = (
        select(
            accounts.c.trader_id,
            accounts.c.plan_id,
            accounts.c.plan_version,
            accounts.c.phase,
            traders.c.country,
        )
        .join(traders, traders.c.id == accounts.c.trader_id)
        .where(accounts.c.status.in_(_IN_FUNDED_STAGE))
    )
    rows = (await conn.execute(query)).all()
    funded_phases: dict[tuple[str, int], set[str]] = {}
    for plan_id, version in {(r.plan_id, r.plan_version) for r in rows}:
        body = await conn.scalar(
            select(plans.c.body).where(plans.c.plan_id == plan_id, plans.c.version == version)
        )
        plan = msgspec.json.decode(body, type=Plan) if body is not None else None
        funded_phases[(plan_id, version)] = (
            {p.name for p in plan.phases if p.profit_target is None} if plan else set()
        )
    return {
        r.trader_id: r.country or None
        for r in rows
        if r.phase in funded_phases[(r.plan_id, r.plan_version)]
    }


async def _cases(conn: Any, trader_ids: list[str]) -> dict[str, kyc.Case]:
    found = {}
    for start in range(0, len(trader_ids), 1_000):
        part = trader_ids[start : start + 1_000]
        rows = await conn.execute(select(kyc_tiers).where(kyc_tiers.c.trader_id.in_(part)))
        found.update({row.trader_id: kyc.case_of(row) for row in rows})
    return found


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


_decode_lists = msgspec.msgpack.Decoder(list[ListEntry])


def _encode_lists(lists: list[ListEntry]) -> bytes:
    return msgspec.msgpack.encode(lists)


def _digest(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


RemoteKycSupervisor: Any = ray.remote(KycSupervisor)


def start_kyc(
    database_url: str,
    lists: Sequence[ListEntry] = (),
    config: KycConfig | None = None,
    payouts: Any = None,
    hub: Any = None,
) -> Any:
    """The KYC supervisor as a Ray actor, restarted by Ray if it dies (its state is in the
    database, the lists in force included)."""
    handle = RemoteKycSupervisor.options(
        max_restarts=-1, max_task_retries=-1, max_concurrency=1_000
    ).remote(database_url, lists, config, payouts, hub)
    handle.start.remote()
    return handle
