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


class DomainEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of every domain event."""

    event_id: str
    ts_ns: int
    account_id: str


class RuleBreached(DomainEvent, frozen=True, kw_only=True, tag="rule_breached"):
    """An account's equity reached a loss limit. `floor` is the equity level that was crossed."""

    rule: RuleName
    equity: float
    floor: float
    caused_by: str


class AccountFrozen(DomainEvent, frozen=True, kw_only=True, tag="account_frozen"):
    """The platform confirmed the account can no longer trade."""

    command_id: str
    reason: str


AnyDomainEvent = RuleBreached | AccountFrozen


def breach_id(account_id: str, rule: RuleName, caused_by: str) -> str:
    return f"breach:{account_id}:{rule.value}:{caused_by}"


def freeze_command_id(account_id: str, caused_by: str) -> str:
    return f"freeze:{account_id}:{caused_by}"
