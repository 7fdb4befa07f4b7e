"""When each KYC tier is asked for, per jurisdiction: one policy file (`deploy/kyc/policy.toml`,
readable through `GET /api/v1/kyc/policy`).

`[default]` holds every rule; `[jurisdictions.XX]` (ISO 3166 alpha-2 of the trader's country)
overrides any of them. The triggers:

- **signup** asks `signup` (normally `light`: identity fields, country, date of birth and the
  sanctions and PEP screen);
- an account passing into its **funded** stage asks `funded` (normally `full`: identity document
  and proof of address); `enhanced` in a `high_risk` jurisdiction (enhanced earlier);
- a **payout** needs `payout` (normally `full`), and `enhanced` when it is above
  `enhanced_payout_above`, when the trader's payouts (every account, in that currency) with it
  come above `enhanced_total_above`, or in a `high_risk` jurisdiction. Amounts are in minor
  units of the payout's currency;
- a **list update** re-screens every trader (no tier: a new hit goes to compliance's queue and
  holds the trader's payouts).

Each tier asked for has a deadline (`deadline_hours`) and reminders (`reminder_hours` after the
request, before the deadline); past the deadline the case escalates (operations alerted; the
trader's payouts stay held until the tier is verified).
"""

from __future__ import annotations

import functools
import tomllib
from pathlib import Path
from typing import Annotated, Any

import msgspec

from ledger.kyc import Tier

Minor = Annotated[int, msgspec.Meta(ge=0)]
Hours = Annotated[float, msgspec.Meta(gt=0)]
Country = Annotated[str, msgspec.Meta(pattern="^[A-Z]{2}$")]
_HOUR_NS = 3_600 * 10**9


class Rules(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Every rule of one jurisdiction."""

    signup: Tier = Tier.LIGHT
    funded: Tier = Tier.FULL
    payout: Tier = Tier.FULL
    enhanced_payout_above: Minor = 1_000_000
    enhanced_total_above: Minor = 5_000_000
    high_risk: bool = False
    deadline_hours: dict[Tier, Hours] = msgspec.field(
        default_factory=lambda: {Tier.LIGHT: 24.0, Tier.FULL: 72.0, Tier.ENHANCED: 168.0}
    )
    reminder_hours: tuple[Hours, ...] = (24.0, 48.0)

    def on_signup(self) -> Tier:
        return Tier.FULL if self.high_risk and self.signup.rank < Tier.FULL.rank else self.signup

    def on_funded(self) -> Tier:
        return Tier.ENHANCED if self.high_risk else self.funded

    def for_payout(self, amount: int, paid_before: int) -> Tier:
        """The tier a payout of `amount` needs after `paid_before` paid out already."""
        if (
            self.high_risk
            or amount > self.enhanced_payout_above
            or paid_before + amount > self.enhanced_total_above
        ):
            return Tier.ENHANCED
        return self.payout

    def within_ns(self, tier: Tier) -> int:
        """How long a request for `tier` may stay open."""
        hours = self.deadline_hours.get(tier, max(self.deadline_hours.values(), default=72.0))
        return int(hours * _HOUR_NS)

    def deadline_ns(self, tier: Tier, requested_ns: int) -> int:
        return requested_ns + self.within_ns(tier)

    def reminders_ns(self, tier: Tier, requested_ns: int) -> list[int]:
        """When reminders are due: each `reminder_hours` after the request, before the deadline."""
        deadline = self.deadline_ns(tier, requested_ns)
        due = (requested_ns + int(h * _HOUR_NS) for h in sorted(self.reminder_hours))
        return [at for at in due if at < deadline]


class Clearance(msgspec.Struct, frozen=True, kw_only=True):
    """Whether a trader is cleared for a payout: the answer the payout checklist's `kyc` check
    uses, and `GET /api/v1/traders/{id}/kyc/clearance` gives."""

    cleared: bool
    tier: Tier  # verified, `none` while a screening hit stands
    needed: Tier  # what a payout of this amount needs, after what was paid before
    screening_hit: bool  # a hit open or confirmed: held whatever the tier
    detail: str


class KycPolicy(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    default: Rules = Rules()
    jurisdictions: dict[Country, dict[str, Any]] = {}  # overrides of `default`, by country

    def __post_init__(self) -> None:
        for country in self.jurisdictions:
            self.rules(country)  # an unknown field or a bad value fails at load, named

    def rules(self, country: str | None) -> Rules:
        """The default's rules with the country's overrides."""
        overrides = self.jurisdictions.get(country or "", {})
        if not overrides:
            return self.default
        merged = msgspec.to_builtins(self.default) | overrides
        try:
            return msgspec.convert(merged, Rules, strict=False)
        except msgspec.ValidationError as exc:
            raise msgspec.ValidationError(f"jurisdictions.{country}: {exc}") from None

    def clearance(
        self, country: str | None, tier: Tier, amount: int, paid_before: int, screening_hit: bool
    ) -> Clearance:
        """Is a trader verified to `tier` (effective), in `country`, cleared for a payout of
        `amount` after `paid_before` was paid out (minor units of one currency)?"""
        needed = self.rules(country).for_payout(amount, paid_before)
        detail = (
            "a screening hit is waiting for compliance"
            if screening_hit
            else f"verified to {tier.value}; this payout needs {needed.value}"
        )
        return Clearance(
            cleared=tier.covers(needed) and not screening_hit,
            tier=tier,
            needed=needed,
            screening_hit=screening_hit,
            detail=detail,
        )

    def high_risk(self) -> list[str]:
        return sorted(c for c in self.jurisdictions if self.rules(c).high_risk)


POLICY_FILE = Path(__file__).resolve().parent.parent / "deploy" / "kyc" / "policy.toml"


def load_policy(path: Path = POLICY_FILE) -> KycPolicy:
    """The policy in a TOML file; `msgspec.ValidationError` names the offending field."""
    with path.open("rb") as handle:
        data = tomllib.load(handle)
    return msgspec.convert(data, KycPolicy, strict=False)


@functools.cache
def shipped_policy() -> KycPolicy:
    """`deploy/kyc/policy.toml`, read once: the default of every config that holds a policy."""
    return load_policy()
