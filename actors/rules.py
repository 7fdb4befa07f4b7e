"""The evaluation rules: what each plan setting does to an account, in the order it is checked.

Functions over an `Account` (state lives there; this module is the policy). Order at each event:
1. day boundaries passed since the last event, one at a time: `weekend_holding`, then the new day's
   reference values, a daily pause ending, `max_days`, `inactivity`, then the equity rules (3.)
   against the new day's floors, at the boundary's time;
2. rules on the deal itself: `max_lots`, then `news_trading`;
3. equity rules: a new trailing-equity peak, then the loss floors (`max_loss`, `daily_loss`; when
   one event crosses both, the higher floor is named, as a continuous fall reaches it first),
   then warning levels;
4. the pass check: `profit_target`, `min_trading_days`, `consistency`, `min_hold_time`.
The first rule that fails the phase ends evaluation. All money is integer cents.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from actors.events import (
    AccountPaused,
    AccountStatus,
    BreachAction,
    PhasePassed,
    RuleName,
    RuleProgressed,
    freeze_command_id,
)
from actors.market import Impact, Market, to_cents
from bridge.commands import CloseAllPositions, DisableTrading
from bridge.events import DealEntry, DealExecuted

if TYPE_CHECKING:
    from actors.account import Account, Effect, Position

NO_LIMIT = -(2**62)
NO_TRIGGER = 2**62
_MINUTE_NS = 60_000_000_000
_MAX_LEVEL_BIT = 16  # warning bits: daily-loss levels from bit 0, max-loss levels from bit 16


def pct_of(amount: int, pct: float) -> int:
    """`pct` percent of a cents amount, in cents, rounded half to even."""
    return round(amount * pct / 100)


def weekday(day: int) -> int:
    """Monday 0 .. Sunday 6 of a proleptic date ordinal (ordinal 1 was a Monday)."""
    return (day - 1) % 7


def _active(account: Account) -> bool:
    return account.started and (
        account.status is AccountStatus.ACTIVE or account.status is AccountStatus.PAUSED
    )


# Limits --------------------------------------------------------------------------------------


def daily_reference(account: Account) -> int:
    rule = account.phase.daily_loss
    reference = "initial" if rule is None else rule.reference
    if reference == "day_start_balance":
        return account.day_start_balance
    if reference == "day_start_equity":
        return account.day_start_equity
    if reference == "day_start_max_balance_equity":
        return max(account.day_start_balance, account.day_start_equity)
    return account.initial


def daily_amount(account: Account) -> int:
    rule = account.phase.daily_loss
    if rule is None:
        return 0
    base = account.initial if rule.amount_base == "initial" else daily_reference(account)
    return pct_of(base, rule.pct)


def max_amount(account: Account) -> int:
    rule = account.phase.max_loss
    return 0 if rule is None else pct_of(account.initial, rule.pct)


def refresh_limits(account: Account) -> None:
    """Recompute both loss floors from the day's reference values and the trailing peak."""
    phase = account.phase
    if phase.daily_loss is None or not account.started:
        account.daily_floor = NO_LIMIT
    else:
        account.daily_floor = daily_reference(account) - daily_amount(account)
    rule = phase.max_loss
    if rule is None or not account.started:
        account.max_floor = NO_LIMIT
        return
    amount = max_amount(account)
    static = account.initial - amount
    if rule.mode == "static":
        account.max_floor = static
        return
    trailing = account.peak - amount
    if rule.lock_at == "initial":
        trailing = min(trailing, account.initial)
    elif not isinstance(rule.lock_at, str):
        trailing = min(trailing, round(rule.lock_at * 100))
    account.max_floor = max(static, trailing)


def _warning_thresholds(account: Account) -> list[tuple[RuleName, float, int, int, int, int]]:
    """Unfired warnings: (rule, level, equity threshold, bit, reference, allowed loss)."""
    found: list[tuple[RuleName, float, int, int, int, int]] = []
    levels = account.plan.warning_levels
    if account.phase.daily_loss is not None and account.status is AccountStatus.ACTIVE:
        amount = daily_amount(account)
        reference = account.daily_floor + amount
        for i, level in enumerate(levels):
            if not account.warned & (1 << i):
                threshold = reference - pct_of(amount, level)
                found.append((RuleName.DAILY_LOSS, level, threshold, i, reference, amount))
    if account.phase.max_loss is not None:
        amount = max_amount(account)
        reference = account.max_floor + amount
        for i, level in enumerate(levels):
            bit = _MAX_LEVEL_BIT + i
            if not account.warned & (1 << bit):
                threshold = reference - pct_of(amount, level)
                found.append((RuleName.MAX_LOSS, level, threshold, bit, reference, amount))
    return found


def refresh_triggers(account: Account) -> None:
    """Set `low`/`high`: equity strictly between them cannot breach, warn, peak or pass."""
    if not _active(account):
        account.low, account.high = NO_LIMIT, NO_TRIGGER
        return
    low = account.max_floor
    if account.status is AccountStatus.ACTIVE:
        low = max(low, account.daily_floor)
    for _, _, threshold, _, _, _ in _warning_thresholds(account):
        low = max(low, threshold)
    high = NO_TRIGGER
    rule = account.phase.max_loss
    if rule is not None and rule.mode == "trailing_equity":
        high = account.peak + 1
    target = account.phase.profit_target
    if (
        target is not None
        and target.basis == "equity"
        and account.status is AccountStatus.ACTIVE
        and _tick_can_pass(account)
    ):
        # closed_pnl + floating - excluded >= target, with floating = equity - balance - credit
        needed = pct_of(account.initial, target.pct) + account.excluded - account.closed_pnl
        high = min(high, needed + account.balance + account.credit)
    account.low, account.high = low, high


def _tick_can_pass(account: Account) -> bool:
    """Whether reaching the equity target on a tick could pass or fail the phase. The other
    passing conditions move only with deals and day boundaries, which evaluate in full anyway."""
    phase = account.phase
    if phase.min_trading_days is not None and trading_days(account) < phase.min_trading_days.days:
        return False
    if phase.consistency is not None and not _consistency_holds(account):
        return phase.consistency.action == "fail"
    if phase.min_hold_time is not None and not _hold_time_holds(account):
        return phase.min_hold_time.action == "fail"
    return True


# Day boundaries ------------------------------------------------------------------------------


def roll_day(account: Account, boundary_ns: int, cause: str, effects: list[Effect]) -> None:
    """Run one day boundary: weekend holding, the new day's references, pause end, day limits."""
    clock = account.plan.day_rollover
    new_day = clock.label(boundary_ns)
    _check_weekend(account, new_day, boundary_ns, cause, effects)
    rule = account.phase.max_loss
    if rule is not None and rule.mode == "trailing_eod_balance":
        account.peak = max(account.peak, account.balance)
    account.day_start_balance = account.balance
    account.day_start_equity = account.equity
    account.day = new_day
    account.warned = 0
    account.next_rollover_ns = clock.boundary_after(boundary_ns)
    if account.status is AccountStatus.PAUSED and account.pause_until_ns <= boundary_ns:
        effects.extend(account.resume(boundary_ns, cause))
    _check_day_limits(account, new_day, boundary_ns, cause, effects)
    refresh_limits(account)
    if _active(account):
        # The new day's floors apply from the boundary itself: equity already through them
        # (a floating loss carried over, a raised end-of-day peak) breaks them at that instant.
        check_equity(account, cause, boundary_ns, effects)


def _check_weekend(
    account: Account, new_day: int, boundary_ns: int, cause: str, effects: list[Effect]
) -> None:
    rule = account.phase.weekend_holding
    if rule is None or not account.positions or not _active(account):
        return
    if weekday(account.day) >= 5 or weekday(new_day) < 5:
        return  # not the boundary from the last weekday into the weekend
    held = float(len(account.positions))
    if rule.action == "fail":
        effects.extend(account.fail(RuleName.WEEKEND_HOLDING, cause, boundary_ns, held, 0.0))
        return
    effects.append(
        account.breached(
            RuleName.WEEKEND_HOLDING, BreachAction.CLOSE_POSITIONS, cause, boundary_ns, held, 0.0
        )
    )
    effects.append(
        CloseAllPositions(
            command_id=f"close:{account.account_id}:{boundary_ns}",
            account_id=account.account_id,
            reason=RuleName.WEEKEND_HOLDING.value,
        )
    )


def _check_day_limits(
    account: Account, new_day: int, boundary_ns: int, cause: str, effects: list[Effect]
) -> None:
    phase = account.phase
    if not _active(account):
        return
    max_days = phase.max_days
    if max_days is not None and max_days.days and account.first_trade_day:
        elapsed = new_day - account.first_trade_day
        if elapsed >= max_days.days:
            effects.extend(
                account.fail(RuleName.MAX_DAYS, cause, boundary_ns, elapsed, max_days.days)
            )
            return
    inactivity = phase.inactivity
    if inactivity is not None:
        idle = new_day - (account.last_trade_day or account.start_day) - 1
        if idle >= inactivity.days:
            effects.extend(
                account.fail(RuleName.INACTIVITY, cause, boundary_ns, idle, inactivity.days)
            )


# Rules on a deal -----------------------------------------------------------------------------


def check_deal(
    account: Account,
    deal: DealExecuted,
    market: Market,
    position: Position | None,
    effects: list[Effect],
) -> None:
    """`max_lots` on an opening deal, then `news_trading` on any deal."""
    phase = account.phase
    lots = phase.max_lots
    if lots is not None and deal.entry is DealEntry.IN and deal.volume > lots.per_order:
        effects.extend(
            account.fail(RuleName.MAX_LOTS, deal.event_id, deal.ts_ns, deal.volume, lots.per_order)
        )
        return
    if phase.news_trading is not None:
        _check_news(account, deal, market, position, effects)


def _check_news(
    account: Account,
    deal: DealExecuted,
    market: Market,
    position: Position | None,
    effects: list[Effect],
) -> None:
    rule = account.phase.news_trading
    spec = market.symbols.get(deal.symbol)
    if rule is None or spec is None:
        return
    release = market.calendar.nearest(
        (spec.base, spec.quote),
        deal.ts_ns,
        round(rule.minutes_before * _MINUTE_NS),
        round(rule.minutes_after * _MINUTE_NS),
        Impact.named(rule.impact),
    )
    if release is None:
        return
    minutes = (deal.ts_ns - release.ts_ns) / _MINUTE_NS
    window = rule.minutes_after if minutes >= 0 else -rule.minutes_before
    cause, ts = deal.event_id, deal.ts_ns
    if rule.action == "fail":
        effects.extend(account.fail(RuleName.NEWS_TRADING, cause, ts, minutes, window))
    elif rule.action == "strike":
        account.strikes += 1
        if account.strikes > rule.strikes:
            effects.extend(
                account.fail(RuleName.NEWS_TRADING, cause, ts, account.strikes, rule.strikes)
            )
        else:
            effects.append(
                account.breached(
                    RuleName.NEWS_TRADING, BreachAction.STRIKE, cause, ts, minutes, window
                )
            )
    else:
        effects.append(
            account.breached(
                RuleName.NEWS_TRADING, BreachAction.EXCLUDE_PROFIT, cause, ts, minutes, window
            )
        )
        if position is not None and deal.entry is DealEntry.IN:
            position.tainted = True
        elif position is not None and not position.tainted:
            # a close inside the window on an untainted position: its profit is excluded here
            # (a tainted position's closes are excluded when they are applied)
            account.excluded += max(to_cents(deal.profit), 0)


def after_deal(account: Account) -> None:
    rule = account.phase.max_loss
    if rule is not None and rule.mode == "trailing_closed_balance":
        account.peak = max(account.peak, account.balance)
    refresh_limits(account)


# Equity rules --------------------------------------------------------------------------------


def check_equity(account: Account, cause: str, ts_ns: int, effects: list[Effect]) -> None:
    """Trailing-equity peak, `max_loss`, `daily_loss`, then warning levels."""
    equity = account.equity
    rule = account.phase.max_loss
    if rule is not None and rule.mode == "trailing_equity" and equity > account.peak:
        account.peak = equity
        refresh_limits(account)
    daily_crossed = account.status is AccountStatus.ACTIVE and equity <= account.daily_floor
    if equity <= account.max_floor and not (
        daily_crossed and account.daily_floor > account.max_floor and _daily_fails(account)
    ):
        effects.extend(
            account.fail(RuleName.MAX_LOSS, cause, ts_ns, equity / 100, account.max_floor / 100)
        )
        return
    if daily_crossed:
        _daily_breach(account, cause, ts_ns, effects)
        if account.status is AccountStatus.FAILED:
            return
    _check_warnings(account, equity, cause, ts_ns, effects)


def _daily_fails(account: Account) -> bool:
    rule = account.phase.daily_loss
    return rule is not None and rule.action == "fail"


def _daily_breach(account: Account, cause: str, ts_ns: int, effects: list[Effect]) -> None:
    rule = account.phase.daily_loss
    assert rule is not None  # a floor exists only with the rule
    equity, floor = account.equity / 100, account.daily_floor / 100
    if rule.action == "fail":
        effects.extend(account.fail(RuleName.DAILY_LOSS, cause, ts_ns, equity, floor))
        return
    account.status = AccountStatus.PAUSED
    account.pause_until_ns = account.next_rollover_ns
    effects.append(
        account.breached(RuleName.DAILY_LOSS, BreachAction.PAUSE, cause, ts_ns, equity, floor)
    )
    effects.append(
        AccountPaused(
            event_id=f"paused:{account.account_id}:{cause}",
            ts_ns=ts_ns,
            account_id=account.account_id,
            caused_by=cause,
            rule=RuleName.DAILY_LOSS,
            until_ns=account.pause_until_ns,
        )
    )
    effects.append(
        CloseAllPositions(
            command_id=f"close:{account.account_id}:{cause}",
            account_id=account.account_id,
            reason="daily_loss pause",
        )
    )
    effects.append(
        DisableTrading(
            command_id=freeze_command_id(account.account_id, cause),
            account_id=account.account_id,
            reason="daily_loss pause",
            caused_by=cause,
        )
    )


def _check_warnings(
    account: Account, equity: int, cause: str, ts_ns: int, effects: list[Effect]
) -> None:
    for rule, level, threshold, bit, reference, amount in _warning_thresholds(account):
        if equity > threshold:
            continue
        account.warned |= 1 << bit
        effects.append(
            RuleProgressed(
                event_id=f"progress:{account.account_id}:{rule.value}:{level:g}:{cause}",
                ts_ns=ts_ns,
                account_id=account.account_id,
                caused_by=cause,
                rule=rule,
                level=level,
                used_pct=round((reference - equity) * 100 / amount, 2) if amount else 100.0,
                equity=equity / 100,
                limit=(reference - amount) / 100,
            )
        )


# Passing -------------------------------------------------------------------------------------


def trading_days(account: Account) -> int:
    """Days that count towards `min_trading_days`, as the phase defines a trading day."""
    rule = account.phase.min_trading_days
    if rule is None or rule.counts == "position_opened":
        return len(account.opened_days)
    if rule.counts == "opened_and_closed":
        return len(account.round_trip_days)
    threshold = pct_of(account.initial, rule.min_profit_pct or 0.0)
    return sum(1 for pnl in account.day_pnl.values() if pnl >= threshold)


def phase_profit(account: Account) -> int:
    """Profit towards the target, in cents, on the target's basis (excluded profit removed)."""
    target = account.phase.profit_target
    profit = account.closed_pnl - account.excluded
    if target is not None and target.basis == "equity":
        profit += account.floating
    return profit


def check_pass(account: Account, cause: str, ts_ns: int, effects: list[Effect]) -> None:
    """Pass the phase when the target is reached and every passing condition holds."""
    phase = account.phase
    target = phase.profit_target
    if target is None or (target.basis == "closed_balance" and account.positions):
        return
    profit = phase_profit(account)
    if profit < pct_of(account.initial, target.pct):
        return
    days = trading_days(account)
    if phase.min_trading_days is not None and days < phase.min_trading_days.days:
        return
    if not _consistent(account, cause, ts_ns, effects) or not _held(account, cause, ts_ns, effects):
        return
    account.status = AccountStatus.PASSED
    effects.append(
        PhasePassed(
            event_id=f"passed:{account.account_id}:{phase.name}",
            ts_ns=ts_ns,
            account_id=account.account_id,
            caused_by=cause,
            phase=phase.name,
            profit=profit / 100,
            trading_days=days,
        )
    )


def best_day_pct(account: Account) -> float | None:
    """The best day's closed profit as a percent of total closed profit; None without profit."""
    total = account.closed_pnl
    if total <= 0:
        return None
    return max(account.day_pnl.values()) * 100 / total


def _consistent(account: Account, cause: str, ts_ns: int, effects: list[Effect]) -> bool:
    rule = account.phase.consistency
    if rule is None:
        return True
    if _consistency_holds(account):
        return True
    if rule.action == "fail":
        best = best_day_pct(account)
        value = 100.0 if best is None else best
        effects.extend(
            account.fail(RuleName.CONSISTENCY, cause, ts_ns, value, rule.max_best_day_pct)
        )
    return False


def _consistency_holds(account: Account) -> bool:
    rule = account.phase.consistency
    total = account.closed_pnl
    return rule is None or (
        total > 0 and max(account.day_pnl.values()) * 100 <= rule.max_best_day_pct * total
    )


def _hold_time_holds(account: Account) -> bool:
    rule = account.phase.min_hold_time
    return rule is None or account.short_trades * 100 <= rule.max_share_pct * account.closed_trades


def _held(account: Account, cause: str, ts_ns: int, effects: list[Effect]) -> bool:
    rule = account.phase.min_hold_time
    if rule is None or _hold_time_holds(account):
        return True
    if rule.action == "fail":
        share = account.short_trades * 100 / account.closed_trades
        effects.extend(
            account.fail(RuleName.MIN_HOLD_TIME, cause, ts_ns, share, rule.max_share_pct)
        )
    return False
