"""How payouts leave the firm: the payout policy (the KYC tier an amount needs, the rails table,
retries), the rail chosen for a trader's country and amount, and the payment provider.

`SimulatedProvider` stands in for a real one (a bank, a card network's push-to-card, an
e-wallet, a stablecoin processor) and behaves like one: it takes a payment order keyed by our
reference (sending the same reference twice is one payment), refuses amounts above the rail's
limit at once, answers later through a webhook, after a random latency, that the payment
settled or failed, and sometimes delivers that webhook twice. Its outcomes are a function of
the seed and the reference, so a run can be repeated.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Literal, Protocol

import msgspec

from actors.kyc_policy import KycPolicy, shipped_policy
from ledger.books import RAILS

Minor = Annotated[int, msgspec.Meta(ge=0)]
Rail = Literal["bank_wire", "card", "e_wallet", "stablecoin"]
assert set(Rail.__args__) == set(RAILS)  # type: ignore[attr-defined]


class RailRule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A row of the rails table: payouts to a trader in one of `countries` (ISO 3166 alpha-2,
    or "*" for any) for `min_amount` up to `max_amount` (minor units, inclusive) go by `rail`,
    at a fee of `fee_fixed` plus `fee_bp` basis points of the amount."""

    countries: tuple[str, ...] = ("*",)
    min_amount: Minor = 0
    max_amount: Minor
    rail: Rail
    fee_fixed: Minor = 0
    fee_bp: Annotated[int, msgspec.Meta(ge=0, le=10_000)] = 0

    def matches(self, country: str, amount: int) -> bool:
        in_country = "*" in self.countries or country in self.countries
        return in_country and self.min_amount <= amount <= self.max_amount

    def fee(self, amount: int) -> int:
        """The rail's fee in minor units, the percentage part rounded up (a fee is never
        understated)."""
        return self.fee_fixed + -(-amount * self.fee_bp // 10_000)


_CARD_AND_WIRE: tuple[str, ...] = tuple(
    [
        "AT",
        "AU",
        "BE",
        "CA",
        "CH",
        "CZ",
        "DE",
        "ES",
        "FR",
        "GB",
        "IE",
        "IT",
        "NL",
        "PL",
        "PT",
        "SE",
        "US",
    ]
)

DEFAULT_RAILS = (
    RailRule(countries=_CARD_AND_WIRE, max_amount=250_000, rail="card", fee_bp=150),
    RailRule(
        countries=_CARD_AND_WIRE, min_amount=250_001, max_amount=50_000_000, rail="bank_wire",
        fee_fixed=2_500,
    ),
    RailRule(max_amount=1_000_000, rail="e_wallet", fee_fixed=50, fee_bp=100),
    RailRule(max_amount=10_000_000, rail="stablecoin", fee_fixed=500),
)  # fmt: skip
"""Card up to 2,500.00 and bank wire above it where both reach; elsewhere an e-wallet up to
10,000.00, then a stablecoin up to 100,000.00. Larger payouts match no rail: review."""


class PayoutPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What the firm requires of every payout, whatever the plan (amounts in minor units of
    the payout's currency): the KYC tier a payout needs, by the trader's jurisdiction (the KYC
    policy, `actors/kyc_policy.py`); the rails table (first match wins); and how often a failed
    payment is sent again before it goes back to review."""

    kyc: KycPolicy = msgspec.field(default_factory=shipped_policy)  # deploy/kyc/policy.toml
    rails: tuple[RailRule, ...] = DEFAULT_RAILS
    max_attempts: Annotated[int, msgspec.Meta(ge=1)] = 3
    retry_s: Annotated[float, msgspec.Meta(ge=0)] = 30.0

    def rail_for(self, country: str, amount: int) -> RailRule | None:
        for rule in self.rails:
            if rule.matches(country, amount):
                return rule
        return None


# -- the payment provider --------------------------------------------------------------------


class PaymentOrder(msgspec.Struct, frozen=True, kw_only=True):
    reference: str  # ours, unique per attempt: the provider's idempotency key
    rail: str
    amount: int
    currency: str
    destination: str


class PaymentUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """A provider's webhook: the payment under `reference` settled or failed (`reason`)."""

    reference: str
    provider_ref: str
    status: Literal["settled", "failed"]
    reason: str = ""
    ts_ns: int


class PaymentRefused(Exception):
    """The provider refused the order outright (no webhook will follow)."""

    def __reduce__(self) -> tuple[type[PaymentRefused], tuple[str]]:
        return type(self), (str(self),)


class PaymentProvider(Protocol):
    async def send(self, order: PaymentOrder) -> str:
        """Take the order (the same reference again is the same payment); its provider id."""
        ...

    async def close(self) -> None: ...


Deliver = Callable[[PaymentUpdate], Awaitable[None]]


class ProviderConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The simulated provider: webhook latency between `min_latency_s` and `max_latency_s`,
    the share of payments that fail and of webhooks delivered twice, the most one payment may
    carry per rail (minor units), and the seed the outcomes derive from."""

    min_latency_s: Annotated[float, msgspec.Meta(ge=0)] = 0.05
    max_latency_s: Annotated[float, msgspec.Meta(ge=0)] = 0.5
    failure_rate: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.02
    duplicate_rate: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.05
    rail_limits: dict[str, Minor] = msgspec.field(
        default_factory=lambda: {"card": 500_000, "e_wallet": 1_000_000}
    )
    seed: int = 7


class SimulatedProvider:
    def __init__(self, config: ProviderConfig, deliver: Deliver) -> None:
        self.config = config
        self.deliver = deliver
        self.orders: dict[str, PaymentOrder] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    def _random(self, reference: str) -> random.Random:
        digest = hashlib.sha256(f"{self.config.seed}:{reference}".encode()).digest()
        return random.Random(int.from_bytes(digest[:8], "big"))

    async def send(self, order: PaymentOrder) -> str:
        provider_ref = "sim_" + hashlib.sha256(order.reference.encode()).hexdigest()[:16]
        if order.reference in self.orders:
            return provider_ref
        limit = self.config.rail_limits.get(order.rail)
        if limit is not None and order.amount > limit:
            raise PaymentRefused(
                f"{order.rail} takes at most {limit} minor units per payment, got {order.amount}"
            )
        self.orders[order.reference] = order
        rng = self._random(order.reference)
        latency = rng.uniform(self.config.min_latency_s, self.config.max_latency_s)
        failed = rng.random() < self.config.failure_rate
        update = PaymentUpdate(
            reference=order.reference,
            provider_ref=provider_ref,
            status="failed" if failed else "settled",
            reason="the beneficiary's institution returned the payment" if failed else "",
            ts_ns=0,
        )
        self._later(latency, update)
        if rng.random() < self.config.duplicate_rate:
            self._later(latency + rng.uniform(0, self.config.max_latency_s), update)
        return provider_ref

    def _later(self, delay_s: float, update: PaymentUpdate) -> None:
        task = asyncio.create_task(self._deliver(delay_s, update))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _deliver(self, delay_s: float, update: PaymentUpdate) -> None:
        await asyncio.sleep(delay_s)
        await self.deliver(msgspec.structs.replace(update, ts_ns=time.time_ns()))

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
