"""Document verification providers (identity document and proof of address, source of funds):
the interface the KYC supervisor uses, and a simulated provider that behaves like the real
ones: it answers later, through signed webhooks, sometimes twice, sometimes out of order.

We never hold a document: the trader uploads to the provider, and we keep its reference and
its outcomes (`ledger/kyc.py`, `kyc_verifications`).

Webhooks are `POST /webhooks/v1/kyc` with a JSON `Report` body, signed as platform pushes are
(`ledger/signing.py`: `X-Propvisor-Timestamp` in Unix seconds, `X-Propvisor-Signature:
sha256=<hex of HMAC-SHA256(secret, timestamp + "." + body)>`).
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from typing import Literal, Protocol

import aiohttp
import msgspec

from ledger.kyc import Tier
from ledger.signing import sign

TIMESTAMP_HEADER = "X-Propvisor-Timestamp"
SIGNATURE_HEADER = "X-Propvisor-Signature"
Outcome = Literal["pending", "approved", "rejected", "resubmission_requested"]


class Report(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A provider's webhook: where verification `provider_ref` stands, at `occurred_ns` by the
    provider's clock (a later report supersedes an earlier one whatever order they arrive in)."""

    event_id: str
    provider_ref: str
    trader_id: str
    tier: Tier
    status: Outcome
    reason: str | None = None
    occurred_ns: int


class VerificationProvider(Protocol):
    async def start(self, trader_id: str, tier: Tier) -> str:
        """Open a verification of `trader_id` to `tier`; the provider's reference."""
        ...

    async def close(self) -> None: ...


class VerifierConfig(msgspec.Struct, frozen=True, kw_only=True):
    webhook_url: str
    secret: bytes
    seed: int = 1
    min_latency_s: float = 0.05
    max_latency_s: float = 0.3
    rejected_rate: float = 0.1
    resubmission_rate: float = 0.1
    duplicate_rate: float = 0.2  # the final report sent twice
    stale_rate: float = 0.2  # an earlier `pending` report delivered after the final one
    outcomes: dict[str, Outcome] = {}  # trader id -> a fixed outcome (tests)


class SimulatedVerifier:
    """A verification provider: accepts, then reports by webhook after a random latency."""

    def __init__(self, config: VerifierConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.tasks: set[asyncio.Task[None]] = set()
        self.session: aiohttp.ClientSession | None = None
        self.delivered: list[Report] = []  # every webhook sent, in order

    async def start(self, trader_id: str, tier: Tier) -> str:
        reference = f"ver_{secrets.token_hex(6)}"
        task = asyncio.create_task(self._report(reference, trader_id, tier, time.time_ns()))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return reference

    async def _report(self, reference: str, trader_id: str, tier: Tier, opened_ns: int) -> None:
        c = self.config
        await asyncio.sleep(self.rng.uniform(c.min_latency_s, c.max_latency_s))
        outcome = c.outcomes.get(trader_id) or self._outcome()
        reason = {"rejected": "document expired", "resubmission_requested": "photo blurred"}
        final = Report(
            event_id=f"{reference}:final",
            provider_ref=reference,
            trader_id=trader_id,
            tier=tier,
            status=outcome,
            reason=reason.get(outcome),
            occurred_ns=time.time_ns(),
        )
        early = Report(
            event_id=f"{reference}:received",
            provider_ref=reference,
            trader_id=trader_id,
            tier=tier,
            status="pending",
            occurred_ns=opened_ns + 1,
        )
        sends = [final]
        if self.rng.random() < c.duplicate_rate:
            sends.append(final)
        if self.rng.random() < c.stale_rate:
            sends.append(early)  # late: the final one must stand
        for report in sends:
            await self._post(report)

    def _outcome(self) -> Outcome:
        draw = self.rng.random()
        if draw < self.config.rejected_rate:
            return "rejected"
        if draw < self.config.rejected_rate + self.config.resubmission_rate:
            return "resubmission_requested"
        return "approved"

    async def _post(self, report: Report) -> None:
        if self.session is None:
            self.session = aiohttp.ClientSession()
        body = msgspec.json.encode(report)
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(self.config.secret, timestamp, body),
        }
        for attempt in range(5):  # a provider retries until it gets a 2xx
            try:
                async with self.session.post(
                    self.config.webhook_url, data=body, headers=headers
                ) as answer:
                    if answer.status < 500:
                        self.delivered.append(report)
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1 * 2**attempt)

    async def idle(self) -> None:
        """Until every report scheduled has been sent (tests)."""
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)

    async def close(self) -> None:
        await self.idle()
        if self.session is not None:
            await self.session.close()
