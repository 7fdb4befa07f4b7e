"""Risk alerts: configurable rules, and the engine that raises an alert when one starts to hold.

Rules are data (persisted in `alert_rules`, edited through the admin API). Each condition is
watched per subject (an account and limit, an account and symbol, a book and currency, a news
release, an event); an alert is raised when the condition starts to hold and not again while it
keeps holding. A threshold condition stops holding only once the value falls back below the
threshold by a margin (`HYSTERESIS`), so an equity hovering at the line raises one alert, not one
per tick. Events (a breach, a reconciliation mismatch, a release) raise one alert each, however
often they are delivered.

Pure: no I/O, no clock; time comes in as arguments.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

import msgspec
from cachetools import LRUCache

from actors.events import BreachAction, ReconciliationMismatch, RuleBreached
from actors.market import Impact
from actors.risk import RiskRow

Severity = Literal["info", "warning", "critical"]
SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}
Book = Literal["evaluation", "funded", "all"]
Cents = Annotated[int, msgspec.Meta(gt=0, le=10**17)]

HYSTERESIS = 0.05  # a threshold condition clears at 95% of its threshold (2 points for a %)


class LossLimit(
    msgspec.Struct, frozen=True, kw_only=True, tag="loss_limit", forbid_unknown_fields=True
):
    """An account has used at least `pct` percent of a loss limit's allowed loss."""

    pct: Annotated[float, msgspec.Meta(gt=0, le=100)]
    limit: Literal["daily_loss", "max_loss", "any"] = "any"
    book: Book = "all"


class PositionNotional(
    msgspec.Struct, frozen=True, kw_only=True, tag="position_notional", forbid_unknown_fields=True
):
    """One account's net position in a symbol is worth at least `threshold` (firm-currency
    cents, either direction)."""

    threshold: Cents
    book: Book = "all"


class CurrencyExposure(
    msgspec.Struct, frozen=True, kw_only=True, tag="currency_exposure", forbid_unknown_fields=True
):
    """The firm's net exposure to a currency (`currency`, or any) in a book is worth at least
    `threshold` (firm-currency cents, either direction)."""

    threshold: Cents
    currency: Annotated[str, msgspec.Meta(pattern="^[A-Z0-9]{2,12}$")] | None = None
    book: Book = "all"


class NewsExposure(
    msgspec.Struct, frozen=True, kw_only=True, tag="news_exposure", forbid_unknown_fields=True
):
    """A release of at least `impact` is due within `minutes` for a currency in which the
    funded book's open net exposure is worth at least `threshold` (firm-currency cents)."""

    minutes: Annotated[float, msgspec.Meta(gt=0, le=1440)]
    threshold: Cents
    impact: Literal["low", "medium", "high"] = "high"


class Reconciliation(
    msgspec.Struct, frozen=True, kw_only=True, tag="reconciliation", forbid_unknown_fields=True
):
    """The platform's balance or equity for an account differs from ours."""


class Breach(msgspec.Struct, frozen=True, kw_only=True, tag="breach", forbid_unknown_fields=True):
    """A rule was breached (only those that failed the account, if `failing_only`)."""

    failing_only: bool = False


class KycOverdue(
    msgspec.Struct, frozen=True, kw_only=True, tag="kyc_overdue", forbid_unknown_fields=True
):
    """A trader was not verified to the KYC tier asked for by its deadline (the KYC supervisor
    escalates the case; the trader's payouts stay held)."""


class AffiliateReconciliation(
    msgspec.Struct,
    frozen=True,
    kw_only=True,
    tag="affiliate_reconciliation",
    forbid_unknown_fields=True,
):
    """An affiliate's commissions accrued less paid differ from the books' payable balance."""


Condition = (
    LossLimit
    | PositionNotional
    | CurrencyExposure
    | NewsExposure
    | Reconciliation
    | Breach
    | KycOverdue
    | AffiliateReconciliation
)


class AlertRule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    id: str
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    severity: Severity = "warning"
    enabled: bool = True
    condition: Condition


class Alert(msgspec.Struct, frozen=True, kw_only=True):
    """A raised alert. `value` and `threshold` are in the condition's units (percent, or
    firm-currency cents); `subject` names what it is about (a limit, symbol, currency, release)."""

    id: str
    rule_id: str
    rule_name: str
    kind: str
    severity: Severity
    key: str
    account_id: str | None = None
    trader_id: str | None = None
    subject: str
    message: str
    value: float
    threshold: float
    raised_ns: int
    acknowledged_ns: int | None = None
    acknowledged_by: str | None = None
    note: str | None = None


def alert_of(row: Any) -> Alert:
    """An alert as stored (a row of `alerts`)."""
    return msgspec.convert({str(k): v for k, v in row._mapping.items()}, type=Alert)


class CalendarEntry(msgspec.Struct, frozen=True, kw_only=True):
    """A scheduled release, as loaded through the API (`calendar_events`)."""

    id: str
    currency: str
    impact: str
    title: str
    ts_ns: int


def _in_book(book: Book, row_book: str) -> bool:
    return book == "all" or book == row_book


def _money(cents: float, currency: str) -> str:
    return f"{cents / 100:,.0f} {currency}"


class AlertEngine:
    """Decides which alerts to raise; remembers which conditions hold (`active`)."""

    def __init__(self, rules: Iterable[AlertRule] = (), firm_currency: str = "USD") -> None:
        self.firm_currency = firm_currency
        self.rules: list[AlertRule] = []
        self.active: set[str] = set()  # keys of threshold conditions that hold now
        # "rule:account" or "rule:book" -> the symbols or currencies whose condition holds
        # (so one whose position or exposure went away altogether clears too)
        self.holding: dict[str, set[str]] = {}
        self.seen: LRUCache[str, bool] = LRUCache(maxsize=200_000)  # keys of one-off alerts
        self.set_rules(rules)

    def set_rules(self, rules: Iterable[AlertRule]) -> None:
        self.rules = [rule for rule in rules if rule.enabled]
        kept = {rule.id for rule in self.rules}
        self.active = {key for key in self.active if key.split(":", 1)[0] in kept}
        self.holding = {g: h for g, h in self.holding.items() if g.split(":", 1)[0] in kept}

    def _of(self, kind: type[Condition]) -> list[AlertRule]:
        return [rule for rule in self.rules if isinstance(rule.condition, kind)]

    def remember(self, keys: Iterable[str]) -> None:
        """Treat these conditions as already alerted (open alerts found at start)."""
        for key in keys:
            self.active.add(key)
            self.seen[key] = True
            group, _, subject = key.rpartition(":")
            self.holding.setdefault(group, set()).add(subject)

    def _level(
        self, group: str, subject: str, value: float, threshold: float, margin: float
    ) -> bool:
        """Whether the condition on `subject` (key `group:subject`) starts to hold now; remember
        whether it holds."""
        key = f"{group}:{subject}"
        if value >= threshold:
            if key in self.active:
                return False
            self.active.add(key)
            self.holding.setdefault(group, set()).add(subject)
            return True
        if value < threshold - margin and key in self.active:
            self.active.discard(key)
            held = self.holding.get(group)
            if held is not None:
                held.discard(subject)
                if not held:
                    del self.holding[group]
        return False

    def _once(self, key: str) -> bool:
        if key in self.seen:
            return False
        self.seen[key] = True
        return True

    def on_row(self, row: RiskRow, trader_id: str | None, now_ns: int) -> list[Alert]:
        """Loss-limit use and position size of an account whose row changed."""
        raised: list[Alert] = []
        for rule in self._of(LossLimit):
            condition = rule.condition
            assert isinstance(condition, LossLimit)
            if not _in_book(condition.book, row.book):
                continue
            for limit, used in (("daily_loss", row.daily_used_pct), ("max_loss", row.max_used_pct)):
                if condition.limit not in ("any", limit):
                    continue
                group = f"{rule.id}:{row.account_id}"
                key = f"{group}:{limit}"
                value = -1.0 if used is None or row.status != "active" else used
                if self._level(group, limit, value, condition.pct, 2.0):
                    raised.append(
                        self._alert(
                            rule,
                            key,
                            now_ns,
                            limit,
                            value,
                            condition.pct,
                            f"{row.account_id} has used {value:.1f}% of its "
                            f"{limit.replace('_', ' ')} limit (alert at {condition.pct:g}%)",
                            row.account_id,
                            trader_id,
                        )
                    )
        for rule in self._of(PositionNotional):
            condition = rule.condition
            assert isinstance(condition, PositionNotional)
            if not _in_book(condition.book, row.book):
                continue
            held = {leg.symbol: abs(leg.notional or 0) for leg in row.legs}
            group = f"{rule.id}:{row.account_id}"
            for symbol in {*held, *self.holding.get(group, ())}:
                key = f"{group}:{symbol}"
                value = held.get(symbol, 0)
                threshold = condition.threshold
                if self._level(group, symbol, value, threshold, threshold * HYSTERESIS):
                    raised.append(
                        self._alert(
                            rule,
                            key,
                            now_ns,
                            symbol,
                            value,
                            threshold,
                            f"{row.account_id} holds {_money(value, self.firm_currency)} of "
                            f"{symbol} (alert at {_money(threshold, self.firm_currency)})",
                            row.account_id,
                            trader_id,
                        )
                    )
        return raised

    def on_exposure(self, book: str, currencies: Mapping[str, int], now_ns: int) -> list[Alert]:
        """The firm's net exposure per currency in `book` (firm-currency cents, signed)."""
        raised: list[Alert] = []
        for rule in self._of(CurrencyExposure):
            condition = rule.condition
            assert isinstance(condition, CurrencyExposure)
            if not _in_book(condition.book, book):
                continue
            group = f"{rule.id}:{book}"
            wanted = (
                {condition.currency}
                if condition.currency
                else {*currencies, *self.holding.get(group, ())}
            )
            for currency in sorted(wanted):
                if currency == self.firm_currency:
                    continue
                key = f"{group}:{currency}"
                value = abs(currencies.get(currency, 0))
                threshold = condition.threshold
                if self._level(group, currency, value, threshold, threshold * HYSTERESIS):
                    raised.append(
                        self._alert(
                            rule,
                            key,
                            now_ns,
                            f"{book}:{currency}",
                            value,
                            threshold,
                            f"{book} book net {currency} exposure is "
                            f"{_money(value, self.firm_currency)} (alert at "
                            f"{_money(threshold, self.firm_currency)})",
                        )
                    )
        return raised

    def on_clock(
        self,
        now_ns: int,
        calendar: Iterable[CalendarEntry],
        funded: Mapping[str, int],
    ) -> list[Alert]:
        """Releases due soon for currencies the funded book holds (`funded`: net exposure per
        currency, firm-currency cents, signed). One alert per rule and release."""
        raised: list[Alert] = []
        rules = self._of(NewsExposure)
        if not rules:
            return raised
        for entry in calendar:
            if entry.ts_ns < now_ns:
                continue
            held = abs(funded.get(entry.currency, 0))
            for rule in rules:
                condition = rule.condition
                assert isinstance(condition, NewsExposure)
                due_in = (entry.ts_ns - now_ns) / 60e9
                if (
                    due_in > condition.minutes
                    or Impact.named(entry.impact) < Impact.named(condition.impact)
                    or held < condition.threshold
                ):
                    continue
                key = f"{rule.id}:{entry.id}"
                if self._once(key):
                    raised.append(
                        self._alert(
                            rule,
                            key,
                            now_ns,
                            f"{entry.currency}: {entry.title}",
                            held,
                            condition.threshold,
                            f"{entry.impact} impact {entry.currency} release "
                            f"'{entry.title}' in {due_in:.0f} min; funded net {entry.currency} "
                            f"exposure {_money(held, self.firm_currency)}",
                        )
                    )
        return raised

    def on_event(self, event: object, trader_id: str | None, now_ns: int) -> list[Alert]:
        """A breach or a reconciliation mismatch."""
        raised: list[Alert] = []
        if isinstance(event, RuleBreached):
            for rule in self._of(Breach):
                condition = rule.condition
                assert isinstance(condition, Breach)
                if condition.failing_only and event.action is not BreachAction.FAIL:
                    continue
                key = f"{rule.id}:{event.event_id}"
                if self._once(key):
                    raised.append(
                        self._alert(
                            rule,
                            key,
                            now_ns,
                            event.rule.value,
                            event.value,
                            event.limit,
                            f"{event.account_id} breached {event.rule.value} "
                            f"({event.action.value}): {event.value:g} against {event.limit:g}",
                            event.account_id,
                            trader_id,
                        )
                    )
        elif isinstance(event, ReconciliationMismatch):
            for rule in self._of(Reconciliation):
                key = f"{rule.id}:{event.event_id}"
                if self._once(key):
                    raised.append(
                        self._alert(
                            rule,
                            key,
                            now_ns,
                            "reconciliation",
                            float(event.equity),
                            float(event.platform_equity or 0),
                            f"{event.account_id}: platform differs from ours: {event.detail}",
                            event.account_id,
                            trader_id,
                        )
                    )
        return raised

    def on_kyc_overdue(
        self, trader_id: str, tier: str, requested_ns: int, deadline_ns: int, now_ns: int
    ) -> list[Alert]:
        """A KYC case escalated: one alert per rule and request, however often it is told."""
        late_h = (now_ns - deadline_ns) / 3.6e12
        message = (
            f"trader {trader_id} is not verified to {tier} by its deadline "
            f"({late_h:.1f} h late): payouts held"
        )
        return self._once_per_rule(
            KycOverdue,
            f"{trader_id}:{requested_ns}",
            now_ns,
            f"kyc:{tier}",
            late_h,
            0.0,
            message,
            trader_id,
        )

    def on_affiliate_mismatch(
        self, affiliate_id: str, currency: str, expected: int, books: int, now_ns: int
    ) -> list[Alert]:
        """An affiliate's balance differs from the books: one alert per rule and difference
        (the same difference found again raises nothing new)."""
        message = (
            f"affiliate {affiliate_id}: accrued less paid is {expected} minor units "
            f"of {currency}, the books say {books}"
        )
        return self._once_per_rule(
            AffiliateReconciliation,
            f"{affiliate_id}:{currency}:{expected}:{books}",
            now_ns,
            f"affiliate:{affiliate_id}",
            float(books),
            float(expected),
            message,
        )

    def _once_per_rule(
        self,
        kind: type[Condition],
        subject_key: str,
        now_ns: int,
        subject: str,
        value: float,
        threshold: float,
        message: str,
        trader_id: str | None = None,
    ) -> list[Alert]:
        """A one-off event from outside the shards: an alert per rule of `kind`, once per
        `subject_key`."""
        raised: list[Alert] = []
        for rule in self._of(kind):
            key = f"{rule.id}:{subject_key}"
            if self._once(key):
                raised.append(
                    self._alert(
                        rule, key, now_ns, subject, value, threshold, message, None, trader_id
                    )
                )
        return raised

    def _alert(
        self,
        rule: AlertRule,
        key: str,
        now_ns: int,
        subject: str,
        value: float,
        threshold: float,
        message: str,
        account_id: str | None = None,
        trader_id: str | None = None,
    ) -> Alert:
        return Alert(
            id="al_" + secrets.token_hex(8),
            rule_id=rule.id,
            rule_name=rule.name,
            kind=str(type(rule.condition).__struct_config__.tag),
            severity=rule.severity,
            key=key,
            account_id=account_id,
            trader_id=trader_id,
            subject=subject,
            message=message,
            value=float(value),
            threshold=float(threshold),
            raised_ns=now_ns,
        )


DEFAULT_RULES: tuple[AlertRule, ...] = (
    AlertRule(
        id="ar_loss_90",
        name="Account at 90% of a loss limit",
        severity="warning",
        condition=LossLimit(pct=90.0),
    ),
    AlertRule(
        id="ar_position_1m",
        name="Single position above 1,000,000",
        severity="warning",
        condition=PositionNotional(threshold=100_000_000),
    ),
    AlertRule(
        id="ar_currency_5m",
        name="Funded book net currency exposure above 5,000,000",
        severity="critical",
        condition=CurrencyExposure(threshold=500_000_000, book="funded"),
    ),
    AlertRule(
        id="ar_news_30m",
        name="High-impact release within 30 min on funded exposure above 250,000",
        severity="critical",
        condition=NewsExposure(minutes=30.0, threshold=25_000_000),
    ),
    AlertRule(
        id="ar_reconciliation",
        name="Platform and ledger disagree",
        severity="critical",
        condition=Reconciliation(),
    ),
    AlertRule(
        id="ar_breach",
        name="Rule breached",
        severity="warning",
        condition=Breach(),
    ),
)
"""The risk rules a new installation starts with (migration 0005 seeds them; 0009 adds
`ar_kyc_overdue`, a `KycOverdue` rule, and 0010 `ar_affiliate_reconciliation`); edit them in
the API."""
