"""Domain events emitted by account entities: facts, in the past tense.

Ids are derived from what caused the event, so replaying the same platform event yields the same
domain event id and the journal stores it once.
"""

from __future__ import annotations

import enum

import msgspec


class RuleName(enum.StrEnum):
    DAILY_LOSS = "daily_loss"
    MAX_LOSS = "max_loss"
    PROFIT_TARGET = "profit_target"
    MIN_TRADING_DAYS = "min_trading_days"
    MAX_DAYS = "max_days"
    CONSISTENCY = "consistency"
    NEWS_TRADING = "news_trading"
    WEEKEND_HOLDING = "weekend_holding"
    MAX_LOTS = "max_lots"
    MIN_HOLD_TIME = "min_hold_time"
    INACTIVITY = "inactivity"


class AccountStatus(enum.StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"  # no trading until the next day boundary
    FAILED = "failed"
    PASSED = "passed"


class BreachAction(enum.StrEnum):
    """What a breach did to the account."""

    FAIL = "fail"
    PAUSE = "pause"
    STRIKE = "strike"
    EXCLUDE_PROFIT = "exclude_profit"
    CLOSE_POSITIONS = "close_positions"


class DomainEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of every domain event. `caused_by` is the platform event that revealed it."""

    event_id: str
    ts_ns: int
    account_id: str
    caused_by: str


class RuleBreached(DomainEvent, frozen=True, kw_only=True, tag="rule_breached"):
    """A rule was broken. `value` is what was measured and `limit` what it may not reach; the
    units are the rule's (account currency for losses, days, lots, minutes from a release...).
    `ts_ns` is when it happened: the event's time, or the day boundary for day-based rules."""

    rule: RuleName
    action: BreachAction
    value: float
    limit: float
    phase: str


class RuleProgressed(DomainEvent, frozen=True, kw_only=True, tag="rule_progressed"):
    """A loss limit's use crossed a warning level (percent of the allowed loss) today."""

    rule: RuleName
    level: float
    used_pct: float
    equity: float
    limit: float


class PhasePassed(DomainEvent, frozen=True, kw_only=True, tag="phase_passed"):
    phase: str
    profit: float
    trading_days: int


class PhaseFailed(DomainEvent, frozen=True, kw_only=True, tag="phase_failed"):
    phase: str
    rule: RuleName


class AccountPaused(DomainEvent, frozen=True, kw_only=True, tag="account_paused"):
    """No trading until `until_ns` (the next day boundary)."""

    rule: RuleName
    until_ns: int


class AccountResumed(DomainEvent, frozen=True, kw_only=True, tag="account_resumed"):
    pass


class AccountFrozen(DomainEvent, frozen=True, kw_only=True, tag="account_frozen"):
    """The platform confirmed the account can no longer trade."""

    command_id: str
    reason: str


class ReconciliationMismatch(DomainEvent, frozen=True, kw_only=True, tag="reconciliation_mismatch"):
    """The platform's balance or equity for the account differs from ours beyond tolerance, in
    two reads `recheck_after_s` apart (`actors/reconcile.py`). Money in cents; the platform's
    side is None when it has no such account (`detail` says so)."""

    balance: int
    equity: int
    platform_balance: int | None
    platform_equity: int | None
    detail: str


class VerdictUnconfirmed(DomainEvent, frozen=True, kw_only=True, tag="verdict_unconfirmed"):
    """The end-of-day replay of the platform's deals disagrees with our verdict on the account
    (`actors/endofday.py`): `verdict` is `missed` (a proven loss-limit crossing we never failed
    the account for) or `late` (proven earlier than our breach); or events the platform
    recorded were never applied (`missing`, their ids). `caused_by`: the event of the proof."""

    verdict: str
    rule: str | None
    equity: float | None
    floor: float | None
    missing: list[str]
    detail: str


AnyDomainEvent = (
    RuleBreached
    | RuleProgressed
    | PhasePassed
    | PhaseFailed
    | AccountPaused
    | AccountResumed
    | AccountFrozen
)


def breach_id(account_id: str, rule: RuleName, caused_by: str) -> str:
    return f"breach:{account_id}:{rule.value}:{caused_by}"


def freeze_command_id(account_id: str, caused_by: str) -> str:
    return f"freeze:{account_id}:{caused_by}"
