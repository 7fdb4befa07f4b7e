"""The payout checklist, check by check, and how failed checks decide the outcome; the rails
table; the split's scaling; the simulated payment provider."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from actors.events import BreachAction, RuleBreached, RuleName
from actors.kyc_policy import KycPolicy, Rules
from actors.payments import (
    PaymentOrder,
    PaymentRefused,
    PaymentUpdate,
    PayoutPolicy,
    ProviderConfig,
    RailRule,
    SimulatedProvider,
)
from actors.payout_checks import (
    DAY_NS,
    AccountFacts,
    Earlier,
    Registered,
    Request,
    cents_to_minor,
    decide,
)
from actors.plans import PayoutTerms, SplitStep
from ledger.kyc import Tier
from ledger.payouts import Status
from loadtests.funded import PLAN

NOW = 1_800_000_000 * 10**9
FUNDED = NOW - 20 * DAY_NS  # first payout opened 6 days ago (14 days after funding)
POLICY = PayoutPolicy()


def label(ts_ns: int) -> int:
    clock = PLAN.day_rollover
    return clock.label(clock.boundary_at_or_before(ts_ns))


def facts(**changes: object) -> AccountFacts:
    days = {label(FUNDED + d * DAY_NS): 300_00 for d in (1, 2, 3)}
    base = AccountFacts(
        account_id="a",
        plan=PLAN,
        phase="funded",
        status="active",
        frozen=False,
        initial=10_000_00,
        balance=10_900_00,
        equity=10_900_00,
        day_pnl=days,
        breaches=[],
    )
    return msgspec.structs.replace(base, **changes)


REGISTERED = Registered(
    account_id="a", trader_id="t", status="active", connection="c", created_ns=FUNDED, country="DE"
)


def request(amount: int = 500_00, **changes: object) -> Request:
    base = Request(
        key="k", account_id="a", amount=amount, currency="USD", destination="IBAN-1", device="d",
        ip="",
    )  # fmt: skip
    return msgspec.structs.replace(base, **changes)


def run(
    *,
    req: Request | None = None,
    account: AccountFacts | None = None,
    registered: Registered | None = REGISTERED,
    earlier: list[Earlier] | None = None,
    tier: Tier = Tier.FULL,
    shared: dict[str, list[str]] | None = None,
    policy: PayoutPolicy = POLICY,
    now: int = NOW,
    trader_paid: int | None = None,
    screening_hit: bool = False,
) -> tuple[Status, dict[str, str]]:
    decision = decide(
        req or request(),
        account or facts(),
        registered,
        earlier or [],
        tier,
        shared or {},
        policy,
        now,
        trader_paid=trader_paid,
        screening_hit=screening_hit,
    )
    return decision.outcome, {c.name: c.detail for c in decision.checks if not c.ok}


def test_a_compliant_request_passes_every_check_and_is_approved() -> None:
    decision = decide(request(), facts(), REGISTERED, [], Tier.FULL, {}, POLICY, NOW)
    assert decision.outcome is Status.APPROVED
    assert all(c.ok for c in decision.checks)
    assert len(decision.checks) == 9
    assert (decision.period, decision.split_pct, decision.gross) == (0, 80.0, 625_00)
    assert decision.rail is not None
    assert decision.rail.rail == "card"


@pytest.mark.parametrize(
    ("account", "registered", "expected"),
    [
        (facts(phase="challenge"), REGISTERED, "evaluation phase"),
        (facts(status="failed"), REGISTERED, "the account is failed"),
        (facts(frozen=True), REGISTERED, "trading is frozen"),
        (facts(), msgspec.structs.replace(REGISTERED, status="frozen"), "registry status"),
    ],
)
def test_an_account_that_is_not_funded_and_trading_is_rejected(
    account: AccountFacts, registered: Registered, expected: str
) -> None:
    outcome, failed = run(account=account, registered=registered)
    assert outcome is Status.REJECTED
    assert expected in failed["funded"]


def test_an_unknown_account_or_a_plan_without_payouts_is_rejected_by_name() -> None:
    outcome, failed = run(registered=None)
    assert (outcome, failed) == (Status.REJECTED, {"funded": "no account 'a' in the registry"})
    unpaid = msgspec.structs.replace(PLAN, payout=None)
    outcome, failed = run(account=facts(plan=unpaid))
    assert outcome is Status.REJECTED
    assert "pays no payouts" in failed["funded"]


def test_the_window_opens_after_the_first_delay_and_holds_one_payout_per_period() -> None:
    outcome, failed = run(now=FUNDED + 13 * DAY_NS)
    assert outcome is Status.REJECTED
    assert "first payout opens" in failed["window"]
    taken = Earlier(id="po_1", period=0, status=Status.SETTLED, amount=1, created_ns=NOW - DAY_NS)
    outcome, failed = run(earlier=[taken])
    assert outcome is Status.REJECTED
    assert failed["window"] == "payout po_1 already covers period 0"
    # The next period (14 days on) is open again.
    outcome, failed = run(earlier=[taken], now=NOW + 9 * DAY_NS, account=facts())
    assert "window" not in failed


def test_the_amount_is_at_most_the_split_of_the_withdrawable_profit() -> None:
    assert run(req=request(720_00))[0] is Status.APPROVED  # 80% of 900.00
    outcome, failed = run(req=request(720_01))
    assert outcome is Status.REJECTED
    assert "at most 720.00 USD (80% of 900.00 USD)" in failed["amount"]
    # Floating losses count: equity below the balance lowers what may be withdrawn.
    outcome, failed = run(account=facts(equity=10_500_00))
    assert outcome is Status.REJECTED
    assert "at most 400.00 USD" in failed["amount"]


def test_profit_an_earlier_payout_still_draws_on_is_not_withdrawable_again() -> None:
    # In review from the last period, not yet taken off the platform: its 625.00 gross counts.
    open_one = Earlier(
        id="po_0", period=-1, status=Status.REVIEW, amount=500_00, created_ns=FUNDED, gross=625_00
    )
    assert run(req=request(220_00), earlier=[open_one])[0] is Status.APPROVED
    outcome, failed = run(req=request(220_01), earlier=[open_one])
    assert outcome is Status.REJECTED
    assert "at most 220.00 USD (80% of 275.00 USD)" in failed["amount"]
    # Once reset on the platform, the balance no longer holds it: nothing is subtracted twice.
    done = msgspec.structs.replace(open_one, status=Status.SETTLED, reset=True)
    assert run(req=request(720_00), earlier=[done])[0] is Status.APPROVED


def test_below_the_plans_minimum_or_without_profit_is_rejected() -> None:
    outcome, failed = run(req=request(49_99))
    assert outcome is Status.REJECTED
    assert "minimum payout 50.00 USD" in failed["min_profit"]
    outcome, failed = run(account=facts(balance=10_000_00, equity=10_000_00))
    assert outcome is Status.REJECTED
    assert "withdrawable profit 0.00 USD" in failed["min_profit"]


def test_one_day_above_the_consistency_limit_sends_it_to_review() -> None:
    lopsided = {label(FUNDED + DAY_NS): 600_00, label(FUNDED + 2 * DAY_NS): 300_00}
    outcome, failed = run(account=facts(day_pnl=lopsided))
    assert outcome is Status.REVIEW
    assert failed == {"consistency": "best day 66.7% of the period's profit (at most 50%)"}
    # Days before the period (before the last payout) do not count.
    before = {label(FUNDED - 5 * DAY_NS): 5_000_00, **facts().day_pnl}
    assert run(account=facts(day_pnl=before))[0] is Status.APPROVED


def test_a_breach_in_the_period_rejects_and_one_before_it_does_not() -> None:
    def breach(ts_ns: int, action: BreachAction = BreachAction.STRIKE) -> RuleBreached:
        return RuleBreached(
            event_id="b", ts_ns=ts_ns, account_id="a", caused_by="d", rule=RuleName.NEWS_TRADING,
            action=action, value=1.0, limit=2.0, phase="funded",
        )  # fmt: skip

    outcome, failed = run(account=facts(breaches=[breach(FUNDED + DAY_NS)]))
    assert outcome is Status.REJECTED
    assert "news_trading (strike)" in failed["no_breach"]
    assert run(account=facts(breaches=[breach(FUNDED - DAY_NS)]))[0] is Status.APPROVED
    closed = breach(FUNDED + DAY_NS, BreachAction.CLOSE_POSITIONS)  # the firm acted, not a fault
    assert run(account=facts(breaches=[closed]))[0] is Status.APPROVED


def test_kyc_short_of_the_tier_holds_and_large_or_high_risk_payouts_need_enhanced() -> None:
    outcome, failed = run(tier=Tier.LIGHT)
    assert (outcome, failed) == (Status.HELD, {"kyc": "verified to light; this payout needs full"})
    big = PayoutPolicy(kyc=KycPolicy(default=Rules(enhanced_payout_above=400_00)))
    assert run(policy=big)[0] is Status.HELD
    assert run(policy=big, tier=Tier.ENHANCED)[0] is Status.APPROVED
    risky = PayoutPolicy(kyc=KycPolicy(jurisdictions={"DE": {"high_risk": True}}))
    assert run(policy=risky)[1] == {"kyc": "verified to full; this payout needs enhanced"}
    paid = Earlier(id="po_0", period=-1, status=Status.SETTLED, amount=49_800_00, created_ns=FUNDED)
    assert run(earlier=[paid])[1]["kyc"].endswith("needs enhanced")  # 50,000 in total


def test_the_cumulative_threshold_counts_the_traders_payouts_on_every_account() -> None:
    # this account paid nothing yet; the trader's other accounts paid 49,800.00
    assert run(trader_paid=49_800_00)[1]["kyc"].endswith("needs enhanced")
    assert run(trader_paid=49_000_00)[0] is Status.APPROVED  # 49,500.00 in total
    paid = Earlier(id="po_0", period=-1, status=Status.SETTLED, amount=49_800_00, created_ns=FUNDED)
    # given, the trader's total replaces the account's own history (not added to it)
    assert run(earlier=[paid], trader_paid=0)[0] is Status.APPROVED


def test_a_screening_hit_holds_the_payout_even_where_no_tier_is_asked_for() -> None:
    lax = PayoutPolicy(kyc=KycPolicy(default=Rules(payout=Tier.NONE)))
    assert run(policy=lax, tier=Tier.NONE)[0] is Status.APPROVED
    outcome, failed = run(policy=lax, tier=Tier.NONE, screening_hit=True)
    assert (outcome, failed) == (Status.HELD, {"kyc": "a screening hit is waiting for compliance"})
    assert run(tier=Tier.ENHANCED, screening_hit=True)[0] is Status.HELD


def test_shared_signals_send_it_to_review_naming_the_other_traders() -> None:
    outcome, failed = run(shared={"destination": ["t2"], "ip": ["t3", "t4"]})
    assert outcome is Status.REVIEW
    assert failed == {"duplicates": "destination also used by t2; ip also used by t3, t4"}


def test_a_rejecting_check_outranks_a_hold_and_a_hold_outranks_review() -> None:
    lopsided = facts(day_pnl={label(FUNDED + DAY_NS): 900_00})
    assert run(account=lopsided, tier=Tier.NONE)[0] is Status.HELD
    outcome, failed = run(account=lopsided, tier=Tier.NONE, req=request(800_00))
    assert outcome is Status.REJECTED
    assert set(failed) == {"consistency", "kyc", "amount"}


def test_no_rail_for_the_country_and_amount_sends_it_to_review() -> None:
    policy = PayoutPolicy(rails=(RailRule(countries=("US",), max_amount=10**9, rail="bank_wire"),))
    outcome, failed = run(policy=policy)
    assert (outcome, failed) == (Status.REVIEW, {"rail": "no rail pays 500.00 USD to DE"})


def test_rails_are_chosen_by_country_and_band_with_fees_rounded_up() -> None:
    policy = PayoutPolicy()
    card = policy.rail_for("DE", 2_500_00)
    wire = policy.rail_for("DE", 2_500_01)
    wallet = policy.rail_for("NG", 10_000_00)
    coin = policy.rail_for("NG", 10_000_01)
    assert [r.rail if r else None for r in (card, wire, wallet, coin)] == [
        "card", "bank_wire", "e_wallet", "stablecoin"
    ]  # fmt: skip
    assert policy.rail_for("NG", 100_000_01) is None
    assert card is not None
    assert card.fee(1_01) == 2
    assert wallet is not None
    assert wallet.fee(100_00) == 50 + 100


def test_the_split_scales_with_settled_payouts_and_steps_must_rise() -> None:
    terms = PayoutTerms(split_pct=80.0, split_steps=(SplitStep(after_payouts=2, pct=90.0),))
    assert [terms.split_after(n) for n in (0, 1, 2, 5)] == [80.0, 80.0, 90.0, 90.0]
    settled = [
        Earlier(id=f"po_{i}", period=-5 + i, status=Status.SETTLED, amount=1, created_ns=FUNDED)
        for i in range(2)
    ]
    scaled = msgspec.structs.replace(
        PLAN, payout=msgspec.structs.replace(PLAN.payout, split_steps=terms.split_steps)
    )
    decision = decide(
        request(810_00), facts(plan=scaled), REGISTERED, settled, Tier.FULL, {}, POLICY, NOW
    )
    assert (decision.outcome, decision.split_pct) == (Status.APPROVED, 90.0)
    with pytest.raises(ValueError, match="split_steps"):
        PayoutTerms(
            split_steps=(SplitStep(after_payouts=2, pct=90.0), SplitStep(after_payouts=1, pct=85.0))
        )


def test_account_cents_become_minor_units_rounding_down() -> None:
    assert [cents_to_minor(12_345, c) for c in ("USD", "JPY", "KWD")] == [12_345, 123, 123_450]


async def test_the_simulated_provider_pays_once_per_reference_and_answers_by_webhook() -> None:
    got: list[PaymentUpdate] = []

    async def deliver(update: PaymentUpdate) -> None:
        got.append(update)

    config = ProviderConfig(
        min_latency_s=0.0, max_latency_s=0.01, failure_rate=0.5, duplicate_rate=1.0
    )
    provider = SimulatedProvider(config, deliver)
    orders = [
        PaymentOrder(
            reference=f"po_{i}:1", rail="card", amount=100, currency="USD", destination="x"
        )
        for i in range(40)
    ]
    refs = [await provider.send(o) for o in orders]
    assert refs == [await provider.send(o) for o in orders]  # a resend is the same payment
    with pytest.raises(PaymentRefused, match="card takes at most 500000"):
        await provider.send(
            PaymentOrder(
                reference="big:1", rail="card", amount=500_001, currency="USD", destination="x"
            )
        )
    for _ in range(100):
        if len(got) == 80:
            break
        await asyncio.sleep(0.01)
    assert len(got) == 80  # every webhook delivered twice (duplicate_rate 1), resends none
    outcome = {u.reference: u.status for u in got}
    assert set(outcome.values()) == {"settled", "failed"}
    assert all(outcome[u.reference] == u.status for u in got)  # a duplicate says the same
    again = SimulatedProvider(config, deliver)  # the same seed decides the same way
    assert {r: again._random(r).uniform(0, 1) for r in outcome} == {
        r: provider._random(r).uniform(0, 1) for r in outcome
    }
    await provider.close()
