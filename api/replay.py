"""`propvisor replay`: run the account entity over a recorded event stream and print verdicts.

Pure: no Ray, no database, no clock. Each JSONL line is decoded once into a typed Struct, checked,
turned into the platform event the shards would see and applied to the entity, exactly as a shard
does (the price book is updated before a tick reaches the accounts). Bad input is never guessed
at: it raises `ReplayError` naming the file, the line and the field. The format is documented in
`docs/rules.md` (section "Replay").

Event ids given to the entity are `L<line number>` (1-based, in the events file), so a breach's
`event_id` names the input line that crossed it; a breach at a day boundary names the first line
timed after the boundary.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from actors.account import Account, Effect, UnknownSymbol
from actors.events import (
    AccountPaused,
    AccountResumed,
    PhaseFailed,
    PhasePassed,
    RuleBreached,
    RuleName,
)
from actors.market import Impact, Market, NewsScheduled
from actors.plans import Plan, PlanError, load_plan
from bridge.events import (
    AnyPlatformEvent,
    BalanceKind,
    BalanceOperated,
    DealEntry,
    DealExecuted,
    PriceTicked,
    Side,
)
from bridge.instruments import Currency, SymbolsError, load_symbols

NonEmpty = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Positive = Annotated[float, msgspec.Meta(gt=0)]
Id = Annotated[int, msgspec.Meta(gt=0)]

_NS = 1_000_000_000
_MINUTE_NS = 60 * _NS
_VOLUME_EPSILON = 1e-9  # lots are decimal fractions: compare floats with room for rounding
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# ISO-8601 date and time with seconds, up to nine fractional digits and a mandatory offset.
_TIMESTAMP = re.compile(
    r"^(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2})(?:[.,](\d{1,9}))?(Z|z|[+-]\d{2}:?\d{2})?$"
)
_FIELD_AT = re.compile(r" - at `\$\.(\w+)`")
_FIELD_NAMED = re.compile(r"field `(\w+)`")
_MONEY_RULES = (RuleName.DAILY_LOSS, RuleName.MAX_LOSS)
# Effects that change an account's status; kept in order as the account's `history`.
Milestone = PhasePassed | PhaseFailed | AccountPaused | AccountResumed
_MILESTONES = (PhasePassed, PhaseFailed, AccountPaused, AccountResumed)


class ReplayError(ValueError):
    """Input replay cannot use; the message names the file, the line and the field."""


class LineError(ValueError):
    """A problem with one field of the current line (the reader adds file and line)."""

    def __init__(self, field_name: str, detail: str) -> None:
        super().__init__(f"`{field_name}`: {detail}")


# Input lines ---------------------------------------------------------------------------------


class _Line(
    msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, tag_field="type"
):
    """Base of every input line: `ts` is ISO-8601 with a UTC offset."""

    ts: str


class BalanceLine(_Line, frozen=True, kw_only=True, tag="balance"):
    """A deposit (amount > 0), withdrawal (amount < 0) or credit (either sign)."""

    account: NonEmpty
    op_id: Id
    amount: float
    kind: Literal["deposit", "withdrawal", "credit"]


class TickLine(_Line, frozen=True, kw_only=True, tag="tick"):
    """A best bid and ask; it reaches every account."""

    symbol: NonEmpty
    bid: Positive
    ask: Positive


class DealLine(_Line, frozen=True, kw_only=True, tag="deal"):
    """A deal in MetaTrader's model; profit, commission and swap in account currency."""

    account: NonEmpty
    deal_id: Id
    position_id: Id
    symbol: NonEmpty
    side: Side
    entry: DealEntry
    volume: Positive
    price: Positive
    profit: float
    commission: float
    swap: float


class NewsLine(_Line, frozen=True, kw_only=True, tag="news"):
    """A calendar entry; `ts` is the scheduled release time."""

    currency: Currency
    impact: Literal["low", "medium", "high"]
    title: NonEmpty


AnyLine = BalanceLine | TickLine | DealLine | NewsLine
_DECODER: msgspec.json.Decoder[AnyLine] = msgspec.json.Decoder(AnyLine)


def decode_line(raw: bytes | str) -> AnyLine:
    """One JSON line as its typed Struct; a problem is a `LineError` naming the field."""
    try:
        return _DECODER.decode(raw)
    except msgspec.ValidationError as exc:
        message = str(exc)
        found = _FIELD_AT.search(message) or _FIELD_NAMED.search(message)
        name = found.group(1) if found else "(line)"
        raise LineError(name, _FIELD_AT.sub("", message)) from exc
    except msgspec.DecodeError as exc:
        raise LineError("(line)", f"not a valid JSON object: {exc}") from exc


def parse_ts(text: str) -> int:
    """UTC nanoseconds of an ISO-8601 timestamp that carries an offset (`Z` or `+hh:mm`)."""
    match = _TIMESTAMP.match(text)
    if match is None:
        raise LineError("ts", f"not an ISO-8601 date and time with seconds: {text!r}")
    whole, fraction, offset = match.groups()
    if offset is None:
        raise LineError("ts", f"{text!r} has no UTC offset (add `Z` or `+hh:mm`)")
    try:
        moment = dt.datetime.fromisoformat(whole + ("+00:00" if offset.upper() == "Z" else offset))
    except ValueError as exc:
        raise LineError("ts", f"{text!r}: {exc}") from exc
    seconds = (moment - _EPOCH) // dt.timedelta(seconds=1)  # exact, unlike float timestamp()
    return seconds * _NS + int((fraction or "0").ljust(9, "0"))


def format_ts(ts_ns: int) -> str:
    """ISO-8601 UTC with `Z`; fractional seconds only when there are any."""
    seconds, nanos = divmod(ts_ns, _NS)
    text = dt.datetime.fromtimestamp(seconds, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    if nanos:
        text += "." + f"{nanos:09d}".rstrip("0")
    return text + "Z"


# The replay ----------------------------------------------------------------------------------


@dataclass
class _Tracked:
    """An account and the ids its lines used, to map them to one increasing deal sequence."""

    account: Account
    op_ids: set[int] = field(default_factory=set)
    deal_ids: set[int] = field(default_factory=set)
    sequence: int = 0
    history: list[Milestone] = field(default_factory=list)

    def apply(self, event: AnyPlatformEvent, market: Market) -> None:
        effects: list[Effect] = self.account.apply(event, market)
        self.history.extend(e for e in effects if isinstance(e, _MILESTONES))

    def check_unused(self, ids: set[int], given: int, name: str) -> None:
        if given in ids:
            owner = self.account.account_id
            raise LineError(name, f"{given} was already used by account {owner!r}")

    def take(self, ids: set[int], given: int) -> None:
        """Record `given` once its event was applied; the entity saw `sequence + 1`."""
        ids.add(given)
        self.sequence += 1


class Replay:
    """Feeds lines to account entities as a shard would; `accounts` in order of appearance."""

    def __init__(self, plan: Plan, market: Market, phase: str | None = None) -> None:
        self.plan = plan
        self.market = market
        self.phase = phase
        self.accounts: dict[str, _Tracked] = {}
        self.clock_ns = 0  # time of the latest line other than news
        rule = plan.phases[0 if phase is None else plan.phase_index(phase)].news_trading
        self._news_lead_ns = 0 if rule is None else round(rule.minutes_before * _MINUTE_NS)

    def feed(self, number: int, line: AnyLine) -> None:
        """Apply line `number` (1-based); raises `LineError` before changing any account."""
        ts_ns = parse_ts(line.ts)
        if isinstance(line, NewsLine):
            self._news(line, ts_ns)
            return
        if ts_ns < self.clock_ns:
            raise LineError(
                "ts", f"{line.ts} is before the previous line ({format_ts(self.clock_ns)})"
            )
        event_id = f"L{number}"
        if isinstance(line, TickLine):
            self._tick(line, event_id, ts_ns)
        elif isinstance(line, BalanceLine):
            self._balance(line, event_id, ts_ns)
        else:
            self._deal(line, event_id, ts_ns)
        self.clock_ns = ts_ns

    def _news(self, line: NewsLine, ts_ns: int) -> None:
        opens_ns = ts_ns - self._news_lead_ns
        if self.clock_ns >= opens_ns:
            raise LineError(
                "ts",
                f"the window of this release opened at {format_ts(opens_ns)}, not after the "
                f"previous line ({format_ts(self.clock_ns)}): list news before its window opens",
            )
        entry = NewsScheduled(
            currency=line.currency, impact=Impact.named(line.impact), title=line.title, ts_ns=ts_ns
        )
        self.market.calendar.add(entry)

    def _tick(self, line: TickLine, event_id: str, ts_ns: int) -> None:
        self._known(line.symbol)
        if line.ask < line.bid:
            raise LineError("ask", f"{line.ask} is below `bid` ({line.bid})")
        tick = PriceTicked(
            event_id=event_id, ts_ns=ts_ns, symbol=line.symbol, bid=line.bid, ask=line.ask
        )
        self.market.book[line.symbol] = (line.bid, line.ask)
        for tracked in self.accounts.values():
            tracked.apply(tick, self.market)

    def _balance(self, line: BalanceLine, event_id: str, ts_ns: int) -> None:
        _check_sign(line)
        tracked = self._tracked(line.account, funds=line.kind == "deposit")
        tracked.check_unused(tracked.op_ids, line.op_id, "op_id")
        operation = BalanceOperated(
            event_id=event_id,
            ts_ns=ts_ns,
            account_id=line.account,
            deal_id=tracked.sequence + 1,
            kind=BalanceKind(line.kind),
            amount=line.amount,
        )
        tracked.apply(operation, self.market)
        tracked.take(tracked.op_ids, line.op_id)

    def _deal(self, line: DealLine, event_id: str, ts_ns: int) -> None:
        self._known(line.symbol)
        tracked = self._tracked(line.account, funds=False)
        tracked.check_unused(tracked.deal_ids, line.deal_id, "deal_id")
        _check_position(tracked.account, line)
        deal = _deal_event(line, event_id, ts_ns, tracked.sequence + 1)
        try:
            tracked.apply(deal, self.market)
        except UnknownSymbol as exc:  # raised before the entity changed anything
            raise LineError("symbol", str(exc).removeprefix("`symbol`: ")) from exc
        tracked.take(tracked.deal_ids, line.deal_id)

    def _known(self, symbol: str) -> None:
        if symbol not in self.market.symbols:
            raise LineError("symbol", f"{symbol!r} is not in the symbol table")

    def _tracked(self, account_id: str, *, funds: bool) -> _Tracked:
        """The account, opened at its first line: a deposit funds it, else the plan's size does."""
        tracked = self.accounts.get(account_id)
        if tracked is not None:
            return tracked
        if not funds and self.plan.initial_balance is None:
            raise LineError(
                "account",
                f"{account_id!r} has no balance yet: its first line must be a deposit "
                "(the plan sets no `initial_balance`)",
            )
        account = Account.open(account_id, self.plan, phase=self.phase, funded=not funds)
        tracked = self.accounts[account_id] = _Tracked(account)
        return tracked


def _check_sign(line: BalanceLine) -> None:
    if line.kind == "deposit" and line.amount <= 0:
        raise LineError("amount", f"a deposit must be positive, got {line.amount:g}")
    if line.kind == "withdrawal" and line.amount >= 0:
        raise LineError("amount", f"a withdrawal must be negative, got {line.amount:g}")
    if line.amount == 0:
        raise LineError("amount", "a credit of zero moves nothing")


def _check_position(account: Account, line: DealLine) -> None:
    """A deal must fit the position it names: the entity would otherwise book it silently."""
    position = account.positions.get(line.position_id)
    if position is None:
        if line.entry is DealEntry.OUT:
            raise LineError("position_id", f"{line.position_id} is not an open position")
        return
    if position.symbol != line.symbol:
        raise LineError("symbol", f"position {line.position_id} is on {position.symbol}")
    same_side = position.buy == (line.side is Side.BUY)
    if same_side != (line.entry is DealEntry.IN):
        side = "buy" if position.buy else "sell"
        raise LineError("side", f"{line.side.value} {line.entry.value} on a {side} position")
    if line.entry is DealEntry.OUT and line.volume > position.volume + _VOLUME_EPSILON:
        raise LineError("volume", f"{line.volume:g} is more than the open {position.volume:g}")


def _deal_event(line: DealLine, event_id: str, ts_ns: int, deal_id: int) -> DealExecuted:
    return DealExecuted(
        event_id=event_id,
        ts_ns=ts_ns,
        account_id=line.account,
        deal_id=deal_id,
        position_id=line.position_id,
        symbol=line.symbol,
        entry=line.entry,
        side=line.side,
        volume=line.volume,
        price=line.price,
        profit=line.profit,
        commission=line.commission,
        swap=line.swap,
    )


def replay_lines(replay: Replay, lines: Iterable[bytes], source: str) -> Replay:
    """Feed every non-blank line; a bad one is a `ReplayError` at `source:line`."""
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            replay.feed(number, decode_line(raw))
        except LineError as exc:
            raise ReplayError(f"{source}:{number}: {exc}") from exc
    return replay


def run(
    plan_path: Path,
    events_path: Path,
    *,
    symbols_path: Path | None = None,
    phase: str | None = None,
) -> Replay:
    """Load the plan, symbols and events and replay them; bad input raises `ReplayError`."""
    plan = load_plan(plan_path)
    if phase is not None and phase not in [p.name for p in plan.phases]:
        names = ", ".join(p.name for p in plan.phases)
        raise ReplayError(f"{plan_path}: `--phase`: no phase {phase!r} (phases: {names})")
    market = Market(None if symbols_path is None else load_symbols(symbols_path))
    with events_path.open("rb") as stream:
        return replay_lines(Replay(plan, market, phase), stream, str(events_path))


# Output --------------------------------------------------------------------------------------


def verdicts(replay: Replay) -> dict[str, Any]:
    """The `--json` document: one entry per account, in order of first appearance."""
    return {
        "accounts": {
            account_id: _verdict(tracked) for account_id, tracked in replay.accounts.items()
        }
    }


def _verdict(tracked: _Tracked) -> dict[str, Any]:
    account = tracked.account
    return {
        "status": account.status.value,
        "phase": account.phase.name,
        "initial_balance": account.initial / 100,
        "balance": account.balance / 100,
        "equity": account.equity / 100,
        "trading_days": account.trading_days(),
        "breaches": [_breach(breach) for breach in account.breaches],
        "history": [_milestone(event) for event in tracked.history],
    }


def _milestone(event: Milestone) -> dict[str, Any]:
    return {
        "type": _tag(event),
        "ts": format_ts(event.ts_ns),
        "event_id": event.caused_by,
    }


def _tag(event: Milestone) -> str:
    tag = type(event).__struct_config__.tag
    assert isinstance(tag, str)  # every domain event is tagged with its snake_case name
    return tag


def _breach(breach: RuleBreached) -> dict[str, Any]:
    return {
        "rule": breach.rule.value,
        "action": breach.action.value,
        "ts": format_ts(breach.ts_ns),
        "event_id": breach.caused_by,
        "value": breach.value,
        "limit": breach.limit,
    }


def render_table(replay: Replay) -> str:
    """A readable verdict: one row per account, its breaches and milestones indented below."""
    plan = replay.plan
    rows = [("account", "status", "phase", "balance", "equity", "days")]
    notes: dict[int, list[str]] = {}
    for tracked in replay.accounts.values():
        rows.append(_row(tracked.account))
        notes[len(rows) - 1] = _notes(tracked)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = [f"plan {plan.id} ({plan.name}), money in {plan.currency}", ""]
    for index, row in enumerate(rows):
        out.append(_cells(row, widths))
        out.extend(f"    {text}" for text in notes.get(index, []))
    if len(rows) == 1:
        out.append("(no accounts in the stream)")
    return "\n".join(out)


def _cells(row: tuple[str, ...], widths: list[int]) -> str:
    """Text columns left-aligned, numbers (from the fourth column on) right-aligned."""
    cells = [
        text.rjust(width) if column >= 3 else text.ljust(width)
        for column, (text, width) in enumerate(zip(row, widths, strict=True))
    ]
    return "  ".join(cells).rstrip()


def _row(account: Account) -> tuple[str, str, str, str, str, str]:
    return (
        account.account_id,
        account.status.value.upper(),
        account.phase.name,
        f"{account.balance / 100:,.2f}",
        f"{account.equity / 100:,.2f}",
        str(account.trading_days()),
    )


def _notes(tracked: _Tracked) -> list[str]:
    """Breaches, resumptions and a pass, in time order (a fail or pause is its breach)."""
    timed = [(b.ts_ns, _breach_text(b)) for b in tracked.account.breaches]
    for event in tracked.history:
        if isinstance(event, AccountResumed | PhasePassed):
            words = "resumed" if isinstance(event, AccountResumed) else "passed"
            timed.append((event.ts_ns, f"{words} at {_at(event.ts_ns, event.caused_by)}"))
    timed.sort(key=lambda note: note[0])  # stable: same-time notes keep the entity's order
    return [text for _, text in timed]


def _at(ts_ns: int, event_id: str) -> str:
    return f"{format_ts(ts_ns)} (line {event_id.removeprefix('L')})"


def _breach_text(breach: RuleBreached) -> str:
    def number(x: float) -> str:
        return f"{x:,.2f}" if breach.rule in _MONEY_RULES else f"{x:.10g}"

    return (
        f"{breach.rule.value} ({breach.action.value}) at {_at(breach.ts_ns, breach.caused_by)}: "
        f"value {number(breach.value)}, limit {number(breach.limit)}"
    )


def main(
    plan_path: Path,
    events_path: Path,
    *,
    symbols_path: Path | None = None,
    as_json: bool = False,
    phase: str | None = None,
) -> int:
    """The command: 0 with the verdicts on stdout, 2 with the problem on stderr."""
    try:
        replay = run(plan_path, events_path, symbols_path=symbols_path, phase=phase)
    except (ReplayError, PlanError, SymbolsError, OSError) as exc:
        print(f"propvisor replay: error: {exc}", file=sys.stderr)
        return 2
    if as_json:
        print(json.dumps(verdicts(replay), indent=2))
    else:
        print(render_table(replay))
    return 0
