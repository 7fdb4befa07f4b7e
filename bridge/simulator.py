"""A platform simulator: the trading server the demo and the tests trade against.

It behaves like a MetaTrader-style server seen from the bridge: random-walk prices, traders opening
and closing positions (deals numbered in increasing order, position id = opening deal id, profit
rounded to cents, commission per lot), JSON messages pulled in batches, and commands that take
effect: a disabled account can no longer trade, and attempts are rejected as the real server would.
Accounts are opened in a group with a leverage and funded by a deposit; balance operations are
deals too (a `BalanceOperated` event, numbered like trades), and a resent operation is recognised by
its command id. It answers the queries a manager API does: an account's history (the very messages
its stream carried), its open positions, its balance and equity. Scheduled news jumps gap a price at
a given simulated time.

It is also the ground truth. It keeps its own brute-force equity for every account (a separate
implementation from the account entity) and records the first event at which each account reached
a loss limit, so a run can report missed and false breaches, not just speed.
"""

from __future__ import annotations

import bisect
import datetime as dt
import random
import time
import zoneinfo
from array import array
from collections import deque
from collections.abc import Sequence

import msgspec

from bridge.commands import (
    AnyPlatformCommand,
    CloseAllPositions,
    DisableTrading,
    EnableTrading,
    OperateBalance,
    ProvisionAccount,
)
from bridge.events import (
    AnyPlatformEvent,
    BalanceKind,
    BalanceOperated,
    DealEntry,
    DealExecuted,
    PriceTicked,
    Side,
    TradingDisabled,
)
from bridge.instruments import DEFAULT_INSTRUMENTS, Instrument

# A Monday morning: the demo never crosses a trading-day boundary unless it runs for hours.
SIM_EPOCH_NS = 1_772_442_000 * 1_000_000_000  # 2026-03-02T09:00:00Z
COMMISSION_PER_LOT = 3.5
# MetaTrader 5 result codes (Manager API MT_RET_*; the trade ones equal TRADE_RETCODE_*).
MT_RET_OK = 0  # done: bridge.platform.DONE
TRADE_INVALID = 10013  # MT_RET_REQUEST_INVALID: here, no such account
TRADE_DISABLED = 10017  # MT_RET_REQUEST_TRADE_DISABLED
NO_MONEY = 10019  # MT_RET_REQUEST_NO_MONEY: a withdrawal beyond the balance
DEFAULT_GROUP = "demo\\standard"  # the group and leverage `provision` opens accounts in
DEFAULT_LEVERAGE = 100


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """The loss limits the oracle checks (the plan the firm sold): fractions of initial balance."""

    initial_balance: float = 100_000.0
    daily_loss_pct: float = 5.0
    max_loss_pct: float = 10.0
    day_timezone: str = "Europe/Prague"


class NewsJump(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True):
    """A scheduled news release: `at_s` seconds into the simulation, `symbol`'s price gaps by
    `move` (relative: -0.02 is 2 % down) in one tick. Written as `[at_s, symbol, move]`."""

    at_s: float
    symbol: str
    move: float

    def __post_init__(self) -> None:  # checked when built in code too, not only when decoded
        if not 0 <= self.at_s < float("inf"):
            raise ValueError(f"`at_s` must be a time from 0 on, got {self.at_s}")
        if not -1 < self.move < float("inf"):
            raise ValueError(f"`move` must be above -1 (a price stays positive), got {self.move}")


class SimulatorConfig(msgspec.Struct, frozen=True, kw_only=True):
    seed: int = 1
    server: str = "sim-1"
    ticks_per_second: float = 10.0  # per symbol
    trades_per_trader_per_minute: float = 6.0
    reckless_fraction: float = 0.05
    careful_risk_per_tick: float = 10.0  # USD moved per typical tick by one position
    reckless_risk_per_tick: float = 450.0
    limits: Limits = Limits()
    instruments: tuple[Instrument, ...] = DEFAULT_INSTRUMENTS
    news: tuple[NewsJump, ...] = ()

    def __post_init__(self) -> None:
        symbols = {i.symbol for i in self.instruments}
        for jump in self.news:
            if jump.symbol not in symbols:
                raise ValueError(f"`news`: {jump.symbol!r} is not one of the instruments")


class SimPosition(msgspec.Struct, kw_only=True):
    symbol: str
    side: Side
    volume: float
    open_price: float
    contract_size: float


class SimAccount(msgspec.Struct, kw_only=True):
    """Money in cents, as the server keeps it: every deal's amounts are rounded to the cent.
    `initial`: the first deposit, the base of the oracle's loss limits (0 until funded).
    `history`: (time, message) of each of its deals and balance operations, oldest first."""

    account_id: str
    balance: int
    day_start_balance: int
    reckless: bool
    initial: int = 0
    group: str = DEFAULT_GROUP
    leverage: int = DEFAULT_LEVERAGE
    currency: str = "USD"
    credit: int = 0
    positions: dict[int, SimPosition] = msgspec.field(default_factory=dict)
    enabled: bool = True
    disabled_by: str | None = None
    history: list[tuple[int, bytes]] = msgspec.field(default_factory=list)


class UnknownAccount(KeyError):
    """A query for an account the server does not have."""


class Crossing(msgspec.Struct, frozen=True, kw_only=True):
    """The first event at which an account's equity reached a loss limit."""

    account_id: str
    event_id: str
    rule: str
    equity: float
    floor: float


class _Identified(msgspec.Struct):
    """All the simulator reads of an injected message: its event id (to time its freeze)."""

    event_id: str


_decode_identity = msgspec.json.Decoder(_Identified)


class SimulatorReport(msgspec.Struct, kw_only=True):
    accounts: int
    events: int
    deals: int
    crossed: dict[str, Crossing]
    disabled: list[str]
    rejected_after_disable: int
    breach_to_freeze_ns: list[int]
    freezes_executed: dict[str, int] = {}  # account -> disable-trading commands carried out
    rate_limited: int = 0  # requests its server front answered 429 (too many requests)


class PlatformSimulator:
    """The simulated server. Deterministic for a seed and a sequence of `advance` intervals."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.mid = {i.symbol: i.start_price for i in config.instruments}
        self.instruments = {i.symbol: i for i in config.instruments}
        self.accounts: dict[str, SimAccount] = {}
        self.holders: dict[str, set[str]] = {i.symbol: set() for i in config.instruments}
        self.outbox: deque[tuple[int, bytes]] = deque()
        self.handed_over_ns = array("q")  # wall time each event left the server, by sequence
        self.injected_ns: dict[str, int] = {}  # wall time each injected event left, by event id
        self.seq = 0
        self.deal_seq = 0
        self.sim_ns = SIM_EPOCH_NS
        self.next_rollover_ns = _next_midnight_ns(SIM_EPOCH_NS, config.limits.day_timezone)
        self.news = deque(
            sorted(((SIM_EPOCH_NS + round(j.at_s * 1e9), j) for j in config.news), key=_first)
        )
        self.operations: set[str] = set()  # command ids of balance operations carried out
        self.crossed: dict[str, Crossing] = {}
        self.rejected_after_disable = 0
        self.latencies: list[int] = []
        self.freezes_executed: dict[str, int] = {}

    # -- accounts -------------------------------------------------------------------------------

    def provision(self, account_ids: Sequence[str]) -> int:
        """Open accounts already funded at the configured initial balance; returns how many were
        new. No deposit event: the runtime opens its account entities funded, and would count an
        announced deposit twice (a `ProvisionAccount` command announces its deposit, as MT5 does).
        """
        initial = round(self.config.limits.initial_balance * 100)
        created = 0
        for account_id in account_ids:
            if account_id in self.accounts:
                continue
            command = ProvisionAccount(
                command_id=f"provision:{account_id}",
                account_id=account_id,
                group=DEFAULT_GROUP,
                leverage=DEFAULT_LEVERAGE,
                deposit_cents=initial,
            )
            self._provision(command, announce=False)
            created += 1
        return created

    def _provision(self, command: ProvisionAccount, *, announce: bool) -> int:
        """Open the account; a fixed share of accounts trade recklessly."""
        if command.account_id in self.accounts:
            return MT_RET_OK  # opened before: a resend, never a second account
        account = SimAccount(
            account_id=command.account_id,
            balance=0,
            day_start_balance=0,
            reckless=self.rng.random() < self.config.reckless_fraction,
            group=command.group,
            leverage=command.leverage,
            currency=command.currency,
        )
        self.accounts[command.account_id] = account
        if command.deposit_cents:
            self._move_money(account, BalanceKind.DEPOSIT, command.deposit_cents, announce=announce)
        return MT_RET_OK

    def _operate(self, account: SimAccount, command: OperateBalance) -> int:
        if command.command_id in self.operations:
            return MT_RET_OK  # carried out before: a resend is done, and not applied again
        if command.kind is BalanceKind.WITHDRAWAL and command.amount_cents > account.balance:
            return NO_MONEY
        self.operations.add(command.command_id)
        self._move_money(account, command.kind, command.amount_cents, announce=True)
        return MT_RET_OK

    def _move_money(
        self, account: SimAccount, kind: BalanceKind, amount_cents: int, *, announce: bool
    ) -> None:
        """A balance operation: a withdrawal takes the amount out; credit counts in equity only."""
        signed = -amount_cents if kind is BalanceKind.WITHDRAWAL else amount_cents
        if kind is BalanceKind.CREDIT:
            account.credit += signed
        else:
            account.balance += signed
            account.day_start_balance += signed  # money moved in or out is not the day's trading
        if not account.initial and kind is BalanceKind.DEPOSIT:
            account.initial = amount_cents  # the first deposit funds the account
        if not announce:
            return
        event = BalanceOperated(
            event_id=self._next_id(),
            ts_ns=self.sim_ns,
            account_id=account.account_id,
            deal_id=self._next_deal(),
            kind=kind,
            amount=signed / 100,
        )
        self._record(account, event)
        self._oracle(account, event.event_id)

    # -- the world moves ------------------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        """Generate what happens in the next `seconds` of simulated time."""
        symbols = list(self.instruments)
        n_ticks = _poisson(self.rng, self.config.ticks_per_second * len(symbols) * seconds)
        trade_rate = self.config.trades_per_trader_per_minute / 60.0
        n_trades = _poisson(self.rng, trade_rate * len(self.accounts) * seconds)
        steps = ["tick"] * n_ticks + ["trade"] * n_trades
        self.rng.shuffle(steps)
        step_ns = int(seconds * 1e9 / max(1, len(steps)))
        start, account_ids = self.sim_ns, list(self.accounts)
        for i, step in enumerate(steps, 1):
            self._move_to(start + i * step_ns)
            if step == "tick":
                self._tick(self.rng.choice(symbols))
            elif account_ids:
                self._trade(self.accounts[self.rng.choice(account_ids)])
        self._move_to(start + int(seconds * 1e9))

    def _move_to(self, ts_ns: int) -> None:
        """Move the clock to `ts_ns`, releasing the news due by then at their own times."""
        while self.news and self.news[0][0] <= ts_ns:
            at_ns, jump = self.news.popleft()
            self._set_clock(max(self.sim_ns, at_ns))
            self.mid[jump.symbol] = max(self.mid[jump.symbol] * (1.0 + jump.move), 1e-6)
            self._publish(jump.symbol)
        self._set_clock(ts_ns)

    def _set_clock(self, ts_ns: int) -> None:
        self.sim_ns = ts_ns
        if self.sim_ns >= self.next_rollover_ns:
            self._roll_day()

    def _roll_day(self) -> None:
        for account in self.accounts.values():
            account.day_start_balance = account.balance
        self.next_rollover_ns = _next_midnight_ns(self.sim_ns, self.config.limits.day_timezone)

    def _tick(self, symbol: str) -> None:
        instrument = self.instruments[symbol]
        mid = max(self.mid[symbol] + self.rng.gauss(0.0, instrument.tick_volatility), 1e-6)
        self.mid[symbol] = mid
        self._publish(symbol)

    def _publish(self, symbol: str) -> None:
        """Send the symbol's quote at its current mid; its holders' equity moved."""
        bid, ask = self.quote(symbol)
        event = PriceTicked(
            event_id=self._next_id(), ts_ns=self.sim_ns, symbol=symbol, bid=bid, ask=ask
        )
        self._emit(event)
        for account_id in self.holders[symbol]:
            self._oracle(self.accounts[account_id], event.event_id)

    def quote(self, symbol: str) -> tuple[float, float]:
        instrument = self.instruments[symbol]
        half_spread = 10**-instrument.digits
        mid = self.mid[symbol]
        return (
            round(mid - half_spread, instrument.digits),
            round(mid + half_spread, instrument.digits),
        )

    def _trade(self, account: SimAccount) -> None:
        if not account.enabled:
            self.rejected_after_disable += 1  # the server answers TRADE_DISABLED
            return
        if account.positions and self.rng.random() < 0.5:
            position_id = self.rng.choice(list(account.positions))
            self._close(account, position_id)
        else:
            self._open(account, self.rng.choice(list(self.instruments.values())))

    def _open(self, account: SimAccount, instrument: Instrument) -> None:
        side = Side.BUY if self.rng.random() < 0.5 else Side.SELL
        risk = (
            self.config.reckless_risk_per_tick
            if account.reckless
            else self.config.careful_risk_per_tick
        )
        volume = max(0.01, round(risk / (instrument.tick_volatility * instrument.contract_size), 2))
        bid, ask = self.quote(instrument.symbol)
        price = ask if side is Side.BUY else bid
        deal_id = self._next_deal()
        account.positions[deal_id] = SimPosition(
            symbol=instrument.symbol,
            side=side,
            volume=volume,
            open_price=price,
            contract_size=instrument.contract_size,
        )
        self.holders[instrument.symbol].add(account.account_id)
        self._deal(
            account, DealEntry.IN, deal_id, deal_id, instrument.symbol, side, volume, price, 0.0
        )

    def _close(self, account: SimAccount, position_id: int) -> None:
        position = account.positions.pop(position_id)
        bid, ask = self.quote(position.symbol)
        price = bid if position.side is Side.BUY else ask
        direction = 1.0 if position.side is Side.BUY else -1.0
        profit = round(
            direction * (price - position.open_price) * position.volume * position.contract_size, 2
        )
        if not any(p.symbol == position.symbol for p in account.positions.values()):
            self.holders[position.symbol].discard(account.account_id)
        closing = Side.SELL if position.side is Side.BUY else Side.BUY
        self._deal(
            account,
            DealEntry.OUT,
            self._next_deal(),
            position_id,
            position.symbol,
            closing,
            position.volume,
            price,
            profit,
        )

    def _deal(
        self,
        account: SimAccount,
        entry: DealEntry,
        deal_id: int,
        position_id: int,
        symbol: str,
        side: Side,
        volume: float,
        price: float,
        profit: float,
    ) -> None:
        commission = -round(COMMISSION_PER_LOT * volume, 2)
        account.balance += round(profit * 100) + round(commission * 100)
        event = DealExecuted(
            event_id=self._next_id(),
            ts_ns=self.sim_ns,
            account_id=account.account_id,
            deal_id=deal_id,
            position_id=position_id,
            symbol=symbol,
            entry=entry,
            side=side,
            volume=volume,
            price=price,
            profit=profit,
            commission=commission,
        )
        self._record(account, event)
        self._oracle(account, event.event_id)

    # -- ground truth ---------------------------------------------------------------------------

    def equity(self, account: SimAccount) -> float:
        """Balance, credit and floating P&L, longs at the bid and shorts at the ask, in units."""
        return self.equity_cents(account) / 100

    def equity_cents(self, account: SimAccount) -> int:
        return (
            account.balance
            + account.credit
            + sum(map(self.profit_cents, account.positions.values()))
        )

    def profit_cents(self, position: SimPosition) -> int:
        """Floating profit, longs at the bid and shorts at the ask, rounded to cents (as MT5)."""
        bid, ask = self.quote(position.symbol)
        move = bid - position.open_price if position.side is Side.BUY else position.open_price - ask
        return round(move * position.volume * position.contract_size * 100)

    def floors(self, account: SimAccount) -> tuple[int, int]:
        """The (daily, static) loss floors in cents, from the account's first deposit."""
        limits = self.config.limits
        daily = account.day_start_balance - round(account.initial * limits.daily_loss_pct / 100)
        static = account.initial - round(account.initial * limits.max_loss_pct / 100)
        return daily, static

    def _oracle(self, account: SimAccount, event_id: str) -> None:
        """Record the first event at which equity reached a loss floor."""
        if account.account_id in self.crossed or not account.initial:
            return  # crossed before, or not funded yet: no limits
        daily, static = self.floors(account)
        equity = self.equity_cents(account)
        # The higher floor binds: a continuous fall reaches it first (max loss on a tie).
        rule, floor = ("max_loss", static) if static >= daily else ("daily_loss", daily)
        if equity > floor:
            return
        self.crossed[account.account_id] = Crossing(
            account_id=account.account_id,
            event_id=event_id,
            rule=rule,
            equity=equity / 100,
            floor=floor / 100,
        )

    def _next_id(self) -> str:
        self.seq += 1
        return f"{self.config.server}:{self.seq}"

    def _next_deal(self) -> int:
        self.deal_seq += 1
        return self.deal_seq

    def _emit(self, event: AnyPlatformEvent) -> bytes:
        message = msgspec.json.encode(event)
        self.outbox.append((self.seq, message))
        return message

    def _record(self, account: SimAccount, event: DealExecuted | BalanceOperated) -> None:
        """Send an account's deal or balance operation and keep it in its history."""
        account.history.append((event.ts_ns, self._emit(event)))

    def take(self, max_events: int) -> list[bytes]:
        """Hand up to `max_events` JSON messages to the bridge, oldest first."""
        now = time.time_ns()
        taken: list[bytes] = []
        while self.outbox and len(taken) < max_events:
            seq, message = self.outbox.popleft()
            taken.append(message)
            if seq == 0:  # injected from outside the simulation: timed by its event id
                self._hand_over_injected(message, now)
                continue
            if seq > len(self.handed_over_ns):
                self.handed_over_ns.extend([0] * (seq - len(self.handed_over_ns)))
            self.handed_over_ns[seq - 1] = now
        return taken

    def _hand_over_injected(self, message: bytes, now: int) -> None:
        try:
            event_id = _decode_identity.decode(message).event_id
        except msgspec.DecodeError:  # a malformed message (fault injection) has nothing to time
            return
        self.injected_ns.setdefault(event_id, now)

    # -- commands -------------------------------------------------------------------------------

    def execute(self, commands: Sequence[AnyPlatformCommand]) -> list[int]:
        """Carry out commands in order; returns a retcode per command (`MT_RET_OK` done)."""
        return [self._execute(c) for c in commands]

    def _execute(self, command: AnyPlatformCommand) -> int:
        if isinstance(command, ProvisionAccount):
            return self._provision(command, announce=True)
        account = self.accounts.get(command.account_id)
        if account is None:
            return TRADE_INVALID
        if isinstance(command, OperateBalance):
            return self._operate(account, command)
        if isinstance(command, CloseAllPositions):
            for position_id in list(account.positions):
                self._close(account, position_id)
            return MT_RET_OK
        if isinstance(command, EnableTrading):
            account.enabled, account.disabled_by = True, None
            return MT_RET_OK
        return self._disable(account, command)

    def _disable(self, account: SimAccount, command: DisableTrading) -> int:
        self.freezes_executed[account.account_id] = (
            self.freezes_executed.get(account.account_id, 0) + 1
        )
        if account.enabled:
            account.enabled = False
            account.disabled_by = command.command_id
            self._record_latency(command.caused_by)
        # Confirm every time, so a retried command whose confirmation was lost is confirmed again.
        self._emit(
            TradingDisabled(
                event_id=self._next_id(),
                ts_ns=self.sim_ns,
                account_id=account.account_id,
                command_id=command.command_id,
            )
        )
        return MT_RET_OK

    def _record_latency(self, caused_by: str) -> None:
        handed_over = self.injected_ns.get(caused_by) or self._handed_over_by_seq(caused_by)
        if handed_over:
            self.latencies.append(time.time_ns() - handed_over)

    def _handed_over_by_seq(self, event_id: str) -> int:
        """When a generated event left the server (0 if not ours or not handed over yet)."""
        server, _, seq = event_id.rpartition(":")
        if server == self.config.server and seq.isdigit():
            index = int(seq) - 1
            if 0 <= index < len(self.handed_over_ns):
                return self.handed_over_ns[index]
        return 0

    # -- queries --------------------------------------------------------------------------------

    def account(self, account_id: str) -> SimAccount:
        """The account, or `UnknownAccount`."""
        try:
            return self.accounts[account_id]
        except KeyError:
            raise UnknownAccount(account_id) from None

    def history(self, account_id: str, since_ns: int) -> list[bytes]:
        """The account's deals and balance operations at or after `since_ns`, oldest first: the
        very messages its stream carried."""
        entries = self.account(account_id).history
        start = bisect.bisect_left(entries, since_ns, key=_first)
        return [message for _, message in entries[start:]]

    def positions(self, account_id: str) -> dict[int, SimPosition]:
        """The account's open positions by position id (the opening deal's id)."""
        return dict(self.account(account_id).positions)

    def report(self) -> SimulatorReport:
        return SimulatorReport(
            accounts=len(self.accounts),
            events=self.seq,
            deals=self.deal_seq,
            crossed=dict(self.crossed),
            disabled=sorted(a.account_id for a in self.accounts.values() if not a.enabled),
            rejected_after_disable=self.rejected_after_disable,
            breach_to_freeze_ns=list(self.latencies),
            freezes_executed=dict(self.freezes_executed),
        )


def _first(pair: tuple[int, object]) -> int:
    return pair[0]


def _next_midnight_ns(ts_ns: int, timezone: str) -> int:
    zone = zoneinfo.ZoneInfo(timezone)
    local = dt.datetime.fromtimestamp(ts_ns // 1_000_000_000, tz=zone)
    midnight = dt.datetime.combine(local.date() + dt.timedelta(days=1), dt.time(), zone)
    return int(midnight.timestamp()) * 1_000_000_000


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (Knuth for small means, normal approximation for large)."""
    if mean <= 0:
        return 0
    if mean > 50:
        return max(0, round(rng.gauss(mean, mean**0.5)))
    limit, k, p = pow(2.718281828459045, -mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1
