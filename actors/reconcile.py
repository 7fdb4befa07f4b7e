"""Reconciliation: the platform's balance and equity of every account against ours.

A `Reconciler` actor makes a pass every `interval_s` (start to start): it lists every hosted
account from the shards and asks the platform for each account's state through the bridge
worker, whose lowest lane puts these queries behind every freeze and balance operation and inside
the connection's rate limit. Each platform answer is compared with our side read just before the
question and just after the answer, and counts as a difference only if it differs from both (a
deal made between the two reads is on one side or the other). A difference may still be in
flight (a deal the platform made that the bridge has not delivered yet), so the account is asked
about again `recheck_after_s` later; a difference that is still there is a mismatch: journaled
as a `ReconciliationMismatch` event on the account (once, while it stays the same), counted in
the metrics, and reported in the health view (the reconciler answers its supervisor's ping with
the number of accounts that differ) until a later pass finds the account agreeing again. An
account the platform cannot be asked about in `query_timeout_s`, or that it refuses for a reason
other than not having it (credentials), is counted in `errors` and asked again next pass.

Balances must agree to `balance_tolerance_cents` (0: to the cent). Equity is marked at each
side's last prices, which differ by the ticks in flight, so it is compared within
`equity_tolerance_pct` of the balance.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Sequence
from typing import Any

import msgspec
import ray
from ray.util.metrics import Counter, Gauge
from sqlalchemy.ext.asyncio import AsyncEngine

from actors.endofday import DayReport, DayVerdict, judge, limits_of, opening, replay
from actors.events import ReconciliationMismatch, VerdictUnconfirmed
from actors.hub import encode_published
from actors.plans import Plan
from actors.shard import AccountView, Money
from actors.shard_actor import journal_record
from bridge.codec import decode_messages
from bridge.events import AnyPlatformEvent, BalanceOperated, DealExecuted
from bridge.liveness import Pulse, pulse
from bridge.platform import AccountState, NotFound, Refused
from bridge.simulator import Limits
from bridge.worker import Placement
from ledger.database import create_engine
from ledger.journal import Journal

log = logging.getLogger(__name__)
_EOD_ATTEMPTS = 3  # reads of an account whose money keeps moving, per check


class ReconcileConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    interval_s: float = 300.0  # from the start of one pass to the start of the next (at least)
    query_timeout_s: float = 60.0  # a platform answer not in by then: an error, asked next pass
    balance_tolerance_cents: int = 0
    equity_tolerance_pct: float = 0.25  # of the balance
    recheck_after_s: float = 2.0  # a difference is read again after this before it counts
    in_flight: int = 100  # accounts asked about at once (the bridge's limit paces them)
    end_of_day: bool = True  # replay the deals once a day (`actors/endofday.py`)
    end_of_day_grace_s: float = 600.0  # after the day boundary: late records have arrived
    end_of_day_lookback_days: float = 7.0  # how far back each day's check replays

    def __post_init__(self) -> None:
        if self.interval_s <= 0 or self.query_timeout_s <= 0:
            raise ValueError("need interval_s > 0 and query_timeout_s > 0")
        if self.recheck_after_s < 0 or self.in_flight < 1:
            raise ValueError("need recheck_after_s >= 0 and in_flight >= 1")
        if self.balance_tolerance_cents < 0 or self.equity_tolerance_pct < 0:
            raise ValueError("tolerances cannot be negative")
        if not 0 <= self.end_of_day_grace_s < 86_400 or self.end_of_day_lookback_days < 1:
            raise ValueError(
                "need 0 <= end_of_day_grace_s < 86400 and end_of_day_lookback_days >= 1"
            )


class Difference(msgspec.Struct, frozen=True, kw_only=True):
    """One account whose two sides disagree (cents; the platform's None: no such account)."""

    account_id: str
    balance: int
    equity: int
    platform_balance: int | None
    platform_equity: int | None
    detail: str


class PassReport(msgspec.Struct, kw_only=True):
    started_ns: int
    seconds: float
    accounts: int
    rechecked: int  # differed at the first read
    mismatches: list[Difference]
    errors: int  # accounts the platform could not be asked about (the next pass asks again)


class ReconcileReport(msgspec.Struct, kw_only=True):
    passes: int
    last: PassReport | None
    differing: list[Difference]  # as of the last pass that read each account


def compare(
    account_id: str, ours: Money, theirs: AccountState | None, config: ReconcileConfig
) -> Difference | None:
    """The difference between our side and the platform's, None if within tolerance."""
    if theirs is None:
        return Difference(
            account_id=account_id,
            balance=ours.balance,
            equity=ours.equity,
            platform_balance=None,
            platform_equity=None,
            detail="the platform has no such account",
        )
    problems = []
    balance_off = theirs.balance_cents - ours.balance
    if abs(balance_off) > config.balance_tolerance_cents:
        problems.append(f"balance differs by {balance_off / 100:+.2f}")
    equity_off = theirs.equity_cents - ours.equity
    allowed = max(abs(ours.balance), abs(theirs.balance_cents)) * config.equity_tolerance_pct / 100
    if abs(equity_off) > allowed:
        problems.append(
            f"equity differs by {equity_off / 100:+.2f} (tolerance {allowed / 100:.2f})"
        )
    if not problems:
        return None
    return Difference(
        account_id=account_id,
        balance=ours.balance,
        equity=ours.equity,
        platform_balance=theirs.balance_cents,
        platform_equity=theirs.equity_cents,
        detail="; ".join(problems),
    )


class Reconciler:
    """Compares the platform's accounts with the shards' on a timer (one per connection)."""

    def __init__(
        self,
        config: ReconcileConfig,
        shards: Sequence[Any],
        placement: Placement,
        worker: Any,
        database_url: str,
        plans: Sequence[Plan] = (),
        *,
        hub_name: str | None = None,
    ) -> None:
        self.config = config
        self.hub_name = hub_name  # the risk hub, told of every mismatch recorded
        self.plans = {plan.id: plan for plan in plans}
        self.day: DayReport | None = None  # the last end-of-day check
        self.reported: set[str] = set()  # its findings' journal ids
        self.shards = list(shards)
        self.placement = placement
        self.worker = worker
        self.database_url = database_url
        self.engine: AsyncEngine | None = None
        self.passes = 0
        self.last: PassReport | None = None
        self.differing: dict[str, Difference] = {}
        self.task: asyncio.Task[None] | None = None
        self.daily: asyncio.Task[None] | None = None
        self.running = asyncio.Lock()
        self.found = Counter(
            "propvisor_reconcile_mismatches_total",
            description="Accounts found differing from the platform, per pass.",
        )
        self.differ = Gauge(
            "propvisor_reconcile_differing_accounts",
            description="Accounts differing from the platform as of the last pass.",
        )

    async def remember(self, plans: Sequence[Plan]) -> None:
        """Know more plans (sold after start) for the end-of-day check; a restarted reconciler
        knows only the plans it was created with, and leaves the others' accounts unchecked."""
        for plan in plans:
            self.plans.setdefault(plan.id, plan)

    async def start(self) -> None:
        """Pass every `interval_s`, the first one `interval_s` from now; with `end_of_day`,
        check the day once a day, `end_of_day_grace_s` after the first plan's day boundary."""
        if self.task is None:
            self.task = asyncio.create_task(self._run_forever())
        if self.config.end_of_day and self.plans and self.daily is None:
            self.daily = asyncio.create_task(self._end_of_day_forever())

    async def _end_of_day_forever(self) -> None:
        clock = next(iter(self.plans.values())).day_rollover
        while True:
            boundary = clock.boundary_after(time.time_ns())
            wait_s = (boundary - time.time_ns()) / 1e9 + self.config.end_of_day_grace_s
            await asyncio.sleep(max(0.0, wait_s))
            try:
                await self.end_of_day(boundary)
            except Exception:
                log.exception("end-of-day check failed; it runs again tomorrow")

    async def _run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + self.config.interval_s
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            due = loop.time() + self.config.interval_s
            try:
                await self.run_pass()
            except Exception:
                log.exception("reconciliation pass failed; the next one runs on time")

    async def run_pass(self) -> PassReport:
        """Read every account on both sides now; record and report what differs."""
        async with self.running:  # a pass asked for while the timer's runs waits for it
            return await self._pass()

    async def _pass(self) -> PassReport:
        started_ns, started = time.time_ns(), time.monotonic()
        account_ids = sorted(await self._hosted())
        errors: set[str] = set()
        suspects = await self._differences(account_ids, errors)
        mismatches: list[Difference] = []
        if suspects:
            await asyncio.sleep(self.config.recheck_after_s)
            mismatches = await self._differences([d.account_id for d in suspects], errors)
        new = [d for d in mismatches if self.differing.get(d.account_id) != d]
        for account_id in set(account_ids) - errors:
            self.differing.pop(account_id, None)
        await self._record(new, started_ns)  # a difference that stays the same is journaled once
        self.differing.update((d.account_id, d) for d in mismatches)
        report = PassReport(
            started_ns=started_ns,
            seconds=round(time.monotonic() - started, 3),
            accounts=len(account_ids),
            rechecked=len(suspects),
            mismatches=mismatches,
            errors=len(errors),
        )
        self.passes += 1
        self.last = report
        self.differ.set(len(self.differing))
        if new:
            self.found.inc(len(new))
        if mismatches:
            log.warning("%d accounts differ from the platform", len(mismatches))
        return report

    async def _hosted(self) -> list[str]:
        lists: list[list[str]] = await asyncio.gather(*(s.hosted.remote() for s in self.shards))
        return [a for hosted in lists for a in hosted]

    async def _ours(self, account_ids: Sequence[str]) -> dict[str, Money]:
        """Our side of these accounts, each read from its shard."""
        per_shard: dict[int, list[str]] = {}
        for account_id in account_ids:
            per_shard.setdefault(self.placement.shard_of(account_id), []).append(account_id)
        found: dict[str, Money] = {}
        answers: list[dict[str, Money]] = await asyncio.gather(
            *(self.shards[i].money.remote(ids) for i, ids in per_shard.items())
        )
        for money in answers:
            found.update(money)
        return found

    async def _differences(self, account_ids: Sequence[str], errors: set[str]) -> list[Difference]:
        """Compare the accounts, `in_flight` at a time: our side before the question and after
        the answer; a difference only if the platform's answer differs from both."""
        found: list[Difference] = []
        step = self.config.in_flight
        for start in range(0, len(account_ids), step):
            chunk = account_ids[start : start + step]
            before = await self._ours(chunk)
            answers = await self._theirs(chunk, errors)
            after = await self._ours(chunk)
            for account_id, theirs in zip(chunk, answers, strict=True):
                if account_id in errors or account_id not in before or account_id not in after:
                    continue  # not asked, or no longer hosted here
                first = compare(account_id, before[account_id], theirs, self.config)
                last = compare(account_id, after[account_id], theirs, self.config)
                if first is not None and last is not None:
                    found.append(last)
        return found

    async def _theirs(
        self, account_ids: Sequence[str], errors: set[str]
    ) -> list[AccountState | None]:
        """The platform's state of each account, asked together (a platform with a batch call
        answers them in a few requests); None if it has no such account. An account it could
        not be asked about is added to `errors`."""
        errors.difference_update(account_ids)
        try:
            async with asyncio.timeout(self.config.query_timeout_s):
                answers: list[AccountState | Refused] = await self.worker.account_states.remote(
                    list(account_ids)
                )
        except Exception as exc:  # a time-out, the worker restarting
            log.warning("could not read %d accounts from the platform: %r", len(account_ids), exc)
            errors.update(account_ids)
            return [None] * len(account_ids)
        found: list[AccountState | None] = []
        for account_id, answer in zip(account_ids, answers, strict=True):
            if isinstance(answer, AccountState):
                found.append(answer)
                continue
            if not isinstance(answer, NotFound):  # a refusal: credentials, most likely
                log.warning("could not read %s from the platform: %r", account_id, answer)
                errors.add(account_id)
            found.append(None)
        return found

    async def _record(self, mismatches: list[Difference], at_ns: int) -> None:
        if not mismatches:
            return
        events = [
            ReconciliationMismatch(
                event_id=f"reconcile:{d.account_id}:{at_ns}",
                ts_ns=at_ns,
                account_id=d.account_id,
                caused_by=f"reconcile:{at_ns}",
                balance=d.balance,
                equity=d.equity,
                platform_balance=d.platform_balance,
                platform_equity=d.platform_equity,
                detail=d.detail,
            )
            for d in mismatches
        ]
        await self._journal().append([journal_record(event) for event in events])
        if self.hub_name is not None:
            try:
                hub = ray.get_actor(self.hub_name)
                await hub.events.remote(encode_published([], events, time.time_ns()))
            except Exception:  # the alert waits for the next mismatch; the journal has it
                log.warning("could not tell the risk hub of %d mismatches", len(events))

    async def end_of_day(self, until_ns: int | None = None) -> DayReport:
        """Replay every hosted account's deals and balance operations the platform recorded in
        the last `end_of_day_lookback_days` before `until_ns` (default: now less the grace) and
        judge each verdict; journal what disagrees (`VerdictUnconfirmed`, once) and report the
        new findings in the health view."""
        if until_ns is None:
            until_ns = time.time_ns() - round(self.config.end_of_day_grace_s * 1e9)
        async with self.running:
            pending = hosted = sorted(await self._hosted())
            verdicts: list[DayVerdict] = []
            moving: list[str] = []
            for _ in range(_EOD_ATTEMPTS):  # an account whose money moved meanwhile: again
                moving = []
                step = self.config.in_flight
                for start in range(0, len(pending), step):
                    found, moved = await self._verdicts(pending[start : start + step], until_ns)
                    verdicts += found
                    moving += moved
                if not moving:
                    break
                pending = moving
        findings = [v for v in verdicts if v.verdict in ("missed", "late") or v.missing]
        new = await self._record_findings(findings, until_ns)
        counts: dict[str, int] = {}
        for verdict in verdicts:
            counts[verdict.verdict] = counts.get(verdict.verdict, 0) + 1
        self.day = DayReport(
            until_ns=until_ns,
            accounts=len(hosted),
            verdicts=counts,
            findings=findings,
            new_findings=new,
            unchecked=sum(not v.checked for v in verdicts),
            moving=len(moving),
            errors=len(hosted) - len(verdicts) - len(moving),
        )
        if new:
            log.warning("end of day: %d new verdicts not confirmed", new)
        return self.day

    async def _verdicts(
        self, account_ids: Sequence[str], until_ns: int
    ) -> tuple[list[DayVerdict], list[str]]:
        """Each account's verdict, and the accounts whose money moved while they were read
        (the platform's balance is read before and after the histories). An account the
        platform or its shard could not answer about is in neither (an error)."""
        errors: set[str] = set()
        before = await self._theirs(account_ids, errors)
        read = await asyncio.gather(*(self._day_of(a, until_ns) for a in account_ids))
        after = await self._theirs(account_ids, errors)
        known, moving = [], []
        for account_id, r, first, last in zip(account_ids, read, before, after, strict=True):
            if r is None or first is None or last is None:
                continue
            if (first.balance_cents, first.credit_cents) != (last.balance_cents, last.credit_cents):
                moving.append(account_id)
            else:
                known.append((r, first))
        recorded = [e.event_id for (_, events, _), _ in known for e in events if e.ts_ns < until_ns]
        applied = await self._journal().has(recorded)
        verdicts = []
        for (view, events, plan), state in known:
            missing = [
                e.event_id for e in events if e.ts_ns < until_ns and e.event_id not in applied
            ]
            limits = _checkable(view, plan)
            proof = None
            if limits is not None and plan is not None:
                opened = opening(state.balance_cents, state.credit_cents, events)
                proof = replay(plan, limits, events, until_ns, opened)
            verdicts.append(
                judge(view.account_id, proof, view.breaches, missing, checked=limits is not None)
            )
        return verdicts, moving

    async def _day_of(
        self, account_id: str, until_ns: int
    ) -> tuple[AccountView, list[AnyPlatformEvent], Plan | None] | None:
        """Our view of the account, its deals and balance operations as the platform recorded
        them from the window's start (oldest first), and its plan; None if either side could
        not be read."""
        shard = self.shards[self.placement.shard_of(account_id)]
        try:
            async with asyncio.timeout(self.config.query_timeout_s):
                view: AccountView | None = await shard.account.remote(account_id)
                if view is None:
                    return None  # no longer hosted here
                plan = self.plans.get(view.plan)
                since_ns = self._window_start(plan, until_ns)
                raw: list[bytes] = await self.worker.history.remote(account_id, since_ns)
        except Exception as exc:  # no such account: the reconciliation pass reports it
            log.warning("end of day: could not read %s: %r", account_id, exc)
            return None
        events, rejected = decode_messages(raw)
        if rejected:
            log.warning("end of day: %s: unreadable history: %s", account_id, rejected[0].error)
            return None
        history = [
            e
            for e in events
            if isinstance(e, DealExecuted | BalanceOperated) and e.account_id == account_id
        ]
        history.sort(key=lambda e: e.ts_ns)  # stable: the platform's order within an instant
        return view, list(history), plan

    def _window_start(self, plan: Plan | None, until_ns: int) -> int:
        """A day boundary `end_of_day_lookback_days` before `until_ns` (each day's check
        covers the days before it again, so a day missed in an outage is still checked)."""
        back = until_ns - round(self.config.end_of_day_lookback_days * 86_400 * 1e9)
        return plan.day_rollover.boundary_after(back) if plan is not None else back

    async def _record_findings(self, findings: list[DayVerdict], until_ns: int) -> int:
        """Journal each finding once (a finding found again on a later day is the same row);
        returns how many were new."""
        if not findings:
            self.reported = set()
            return 0
        records = []
        for finding in findings:
            proof = finding.proof
            cause = proof.event_id if proof is not None else "missing"
            digest = hashlib.sha256("\n".join(finding.missing).encode()).hexdigest()[:16]
            records.append(
                journal_record(
                    VerdictUnconfirmed(
                        event_id=f"verdict:{finding.account_id}:{finding.verdict}:{cause}:{digest}",
                        ts_ns=until_ns,
                        account_id=finding.account_id,
                        caused_by=proof.event_id if proof is not None else f"end-of-day:{until_ns}",
                        verdict=finding.verdict,
                        rule=proof.rule if proof is not None else None,
                        equity=proof.equity if proof is not None else None,
                        floor=proof.floor if proof is not None else None,
                        missing=finding.missing,
                        detail=describe(finding),
                    )
                )
            )
        ids = {r.event_id for r in records}
        journal = self._journal()
        known = await journal.has(list(ids))
        await journal.append(records)
        new = ids - known - self.reported
        self.reported = ids
        return len(new)

    def _journal(self) -> Journal:
        """The journal, on an engine made at first use (in the actor's own process)."""
        if self.engine is None:
            self.engine = create_engine(self.database_url)
        return Journal(self.engine)

    async def close(self) -> None:
        for task in (self.task, self.daily):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self.engine is not None:
            await self.engine.dispose()

    async def report(self) -> ReconcileReport:
        return ReconcileReport(
            passes=self.passes,
            last=self.last,
            differing=sorted(self.differing.values(), key=lambda d: d.account_id),
        )

    async def day_report(self) -> DayReport | None:
        """The last end-of-day check (None before the first)."""
        return self.day

    async def ping(self) -> Pulse:
        """Liveness, and what is wrong: accounts that differ from the platform, verdicts the
        last end-of-day replay did not confirm (degraded while any do)."""
        trouble = []
        count = len(self.differing)
        if count:
            trouble.append(
                f"{count} account{' differs' if count == 1 else 's differ'} from the platform"
            )
        unconfirmed = self.day.new_findings if self.day is not None else 0
        if unconfirmed:  # until the next check: each is journaled, and stays in `day_report`
            trouble.append(f"{unconfirmed} verdict(s) not confirmed by the end-of-day replay")
        return pulse("; ".join(trouble))


def _checkable(view: AccountView, plan: Plan | None) -> Limits | None:
    """The loss limits the replay can check for this account, None if it cannot: its plan is
    unknown or of another shape, it passed, or it is past the plan's first phase."""
    if plan is None or view.status == "passed" or view.phase != plan.phases[0].name:
        return None
    try:
        return limits_of(plan)
    except ValueError:
        return None


def describe(finding: DayVerdict) -> str:
    """What an end-of-day finding says, in words."""
    parts = []
    proof = finding.proof
    if proof is not None and finding.verdict in ("missed", "late"):
        parts.append(
            f"{proof.rule} crossed with no position open after {proof.event_id}: equity "
            f"{proof.equity:.2f} <= floor {proof.floor:.2f}"
        )
        ours = finding.ours
        parts.append("never failed here" if ours is None else f"failed here later ({ours.rule})")
    if finding.missing:
        parts.append(f"{len(finding.missing)} platform event(s) never applied")
    return "; ".join(parts)


RemoteReconciler: Any = ray.remote(Reconciler)
