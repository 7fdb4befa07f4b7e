"""The KYC policy file: every trigger under the default and each shipped jurisdiction, deadlines
and reminders, and a bad file refused with the field named."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from actors.kyc_policy import KycPolicy, load_policy
from ledger.kyc import Tier

HOUR = 3_600 * 10**9


@pytest.fixture(scope="module")
def policy() -> KycPolicy:
    return load_policy()


@pytest.mark.parametrize(
    ("country", "signup", "funded"),
    [
        (None, Tier.LIGHT, Tier.FULL),  # no country known yet: the default
        ("DE", Tier.LIGHT, Tier.FULL),  # not listed: the default
        ("AE", Tier.LIGHT, Tier.FULL),
        ("NG", Tier.FULL, Tier.ENHANCED),  # high risk: more at each step
        ("PK", Tier.FULL, Tier.ENHANCED),
    ],
)
def test_signup_and_funded_triggers_by_jurisdiction(
    policy: KycPolicy, country: str | None, signup: Tier, funded: Tier
) -> None:
    rules = policy.rules(country)

    assert rules.on_signup() is signup
    assert rules.on_funded() is funded


@pytest.mark.parametrize(
    ("country", "amount", "paid_before", "needed"),
    [
        ("DE", 10_000_00, 0, Tier.FULL),  # at the threshold: not above it
        ("DE", 10_000_01, 0, Tier.ENHANCED),  # one payout above 10,000.00
        ("DE", 9_000_00, 41_000_01, Tier.ENHANCED),  # together above 50,000.00
        ("DE", 9_000_00, 41_000_00, Tier.FULL),
        ("AE", 5_000_01, 0, Tier.ENHANCED),  # a stricter jurisdiction
        ("AE", 5_000_00, 0, Tier.FULL),
        ("AE", 1_000_00, 24_000_01, Tier.ENHANCED),
        ("GB", 1_000_00, 29_000_01, Tier.ENHANCED),  # only the cumulative threshold lower
        ("GB", 10_000_01, 0, Tier.ENHANCED),  # the single one inherited
        ("GB", 9_000_00, 0, Tier.FULL),
        ("NG", 1_00, 0, Tier.ENHANCED),  # high risk: every payout
    ],
)
def test_payout_trigger_by_amount_total_and_jurisdiction(
    policy: KycPolicy, country: str, amount: int, paid_before: int, needed: Tier
) -> None:
    assert policy.rules(country).for_payout(amount, paid_before) is needed


def test_deadlines_and_reminders_per_tier(policy: KycPolicy) -> None:
    rules = policy.rules("DE")

    assert rules.deadline_ns(Tier.FULL, 0) == 72 * HOUR
    assert rules.reminders_ns(Tier.FULL, 0) == [24 * HOUR, 48 * HOUR]
    assert rules.deadline_ns(Tier.LIGHT, 5) == 5 + 24 * HOUR
    assert rules.reminders_ns(Tier.LIGHT, 0) == []  # none falls before a 24 h deadline
    assert rules.deadline_ns(Tier.ENHANCED, 0) == 168 * HOUR


def test_high_risk_jurisdictions_listed(policy: KycPolicy) -> None:
    assert policy.high_risk() == ["NG", "PK"]


def test_a_bad_override_is_refused_naming_the_jurisdiction_and_field(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text("[jurisdictions.FR]\nenhanced_payout_above = -5\n", encoding="utf-8")
    with pytest.raises(msgspec.ValidationError, match=r"jurisdictions\.FR.*enhanced_payout_above"):
        load_policy(path)
    path.write_text('[jurisdictions.FR]\nfunded = "gold"\n', encoding="utf-8")
    with pytest.raises(msgspec.ValidationError, match=r"jurisdictions\.FR.*funded"):
        load_policy(path)
    path.write_text("[jurisdictions.FR]\nsurprise = 1\n", encoding="utf-8")
    with pytest.raises(msgspec.ValidationError, match=r"jurisdictions\.FR.*surprise"):
        load_policy(path)
    path.write_text("[jurisdictions.france]\nhigh_risk = true\n", encoding="utf-8")
    with pytest.raises(msgspec.ValidationError, match="jurisdictions"):
        load_policy(path)
