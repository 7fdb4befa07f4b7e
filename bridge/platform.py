"""The one interface every platform connection offers the bridge worker."""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from http import HTTPStatus
from typing import Any, Protocol, TypeVar, runtime_checkable

import msgspec
import ray

from bridge.codec import decode_command_batch, encode_batch
from bridge.commands import AnyPlatformCommand
from bridge.events import Side
from bridge.liveness import Pulse, pulse
from bridge.ratelimit import TokenBucket
from bridge.simulator import PlatformSimulator, SimulatorConfig, SimulatorReport, UnknownAccount

DONE = 0
"""The result code of a command the platform carried out; any other code is the platform's own
(MetaTrader retcodes, cTrader error codes...) and means it did not."""


class _Numbered(msgspec.Struct):
    deal_id: Any = None


class PlatformError(Exception):
    """A request the platform did not carry out as a whole."""


class RateLimited(PlatformError):
    """The platform refused the request for its rate (HTTP 429, MT5 "too frequent requests").
    `retry_after_s`: when the platform said it may be retried, if it did."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Unavailable(PlatformError):
    """A transient failure: 5xx, a time-out, a dropped connection. Retried with backoff."""


class Refused(PlatformError):
    """The platform refused the request as a whole: bad or expired credentials, a request it
    cannot read. It will not pass until someone fixes the cause; the worker keeps the commands
    and retries with backoff, and its circuit reports the refusal."""


class NotFound(Refused):
    """The platform has no such account (or other object the request named): that request's
    answer, not a sign the connection fails."""


class AccountState(msgspec.Struct, frozen=True, kw_only=True):
    """An account as the platform reports it now (money in minor units of `currency`)."""

    account_id: str
    currency: str
    balance_cents: int
    credit_cents: int
    equity_cents: int
    enabled: bool


class OpenPosition(msgspec.Struct, frozen=True, kw_only=True):
    position_id: int
    symbol: str
    side: Side
    volume: float
    open_price: float
    profit_cents: int


class Platform(Protocol):
    """A connection to one trading server (one server and credential), as the bridge worker uses
    it. Every platform's differences end here: events come out as canonical JSON messages
    (`bridge.events`), commands go in as canonical commands (`bridge.commands`).

    A request that fails as a whole raises `RateLimited`, `Unavailable` or `Refused`; the worker
    retries each with backoff (a refusal opens its circuit for an operator to see).
    """

    async def fetch(self, max_events: int) -> list[bytes]:
        """Events the server has for us (its subscription or stream), oldest first, at most
        `max_events`, as canonical JSON messages."""
        ...

    async def execute(self, commands: Sequence[AnyPlatformCommand]) -> list[int]:
        """Carry out commands in order (provisioning, balance operations, enable/disable trading,
        close all); a result code per command, `DONE` when carried out. Repeating a command id
        the platform already carried out is harmless."""
        ...

    async def history(self, account_id: str, since_ns: int) -> list[bytes]:
        """The account's deals and balance operations at or after `since_ns`, oldest first, as
        canonical JSON messages (the same event ids its stream used)."""
        ...

    async def positions(self, account_id: str) -> list[OpenPosition]:
        """The account's open positions now."""
        ...

    async def account_state(self, account_id: str) -> AccountState:
        """The account's balance, credit, equity and whether it may trade, now."""
        ...


@runtime_checkable
class BatchStates(Protocol):
    """A platform with a batch call for account states (MT5's `/api/user/account/get_batch`):
    the worker sends the account-state queries waiting together as one request."""

    async def account_states(self, account_ids: Sequence[str]) -> list[AccountState]:
        """The states of those of `account_ids` the platform has (the others are left out)."""
        ...


@runtime_checkable
class Replayable(Protocol):
    """A platform whose events we read after a cursor we keep (the push inbox, `bridge/pushed.py`)
    rather than one that forgets what it handed over. The worker tells it which fetched batches
    every shard's checkpoint holds; it must hand over again, after a restart, anything after."""

    async def durable(self, batches: int) -> None:
        """The oldest `batches` non-empty batches fetched and not yet confirmed are durable."""
        ...


def platform_error(status: int, detail: str, retry_after_s: float | None = None) -> PlatformError:
    """The protocol's error for a request a server answered with an HTTP-style failure status."""
    if status == HTTPStatus.TOO_MANY_REQUESTS:
        return RateLimited(detail, retry_after_s)
    if status == HTTPStatus.NOT_FOUND:
        return NotFound(detail)
    if 400 <= status < 500:
        return Refused(detail)
    return Unavailable(detail)


# -- the simulated server -----------------------------------------------------------------------

CONNECTION_DROPPED = 0
"""`Failure.status` of a request carried out whose answer was lost with its connection."""


class Faults(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What goes wrong on the simulated server, drawn from its own generator seeded with `seed`
    (a run repeats for the same requests); the default injects nothing.

    `latency_ms`: extra latency per request, uniform in [low, high]. `unavailable`: a request is
    answered 503 and not carried out. `dropped`: the connection drops after the request was
    carried out (a retry must be harmless; fetched events come again). `duplicated`: an event is
    handed over again at the start of the next batch. `reordered`: two adjacent events of
    different accounts are handed over swapped (each account's own order is kept, as a
    platform's per-account sequence is, and ticks keep theirs). `lost`: an event is never
    handed over (a push the platform gave up on); only reconciliation can find what it changed.
    """

    seed: int = 0
    latency_ms: tuple[float, float] = (0.0, 0.0)
    unavailable: float = 0.0
    dropped: float = 0.0
    duplicated: float = 0.0
    reordered: float = 0.0
    lost: float = 0.0

    def __post_init__(self) -> None:  # checked when built in code too, not only when decoded
        low, high = self.latency_ms
        if not 0 <= low <= high:
            raise ValueError(
                f"`latency_ms` must be [low, high] with 0 <= low <= high, got {[low, high]}"
            )
        for name in ("unavailable", "dropped", "duplicated", "reordered", "lost"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"`{name}` must be a probability in [0, 1]")


class Failure(msgspec.Struct, frozen=True, kw_only=True):
    """The simulated server's answer instead of a result, as an HTTP status: 429 too many
    requests, 503 unavailable (not carried out), 404 no such account, or `CONNECTION_DROPPED`.
    An answer, not an exception, so that it crosses a Ray actor boundary as it is."""

    status: int
    detail: str
    retry_after_s: float | None = None


class _Route(msgspec.Struct):
    """What decides whether two events may swap: whose they are."""

    account_id: str | None = None


_decode_route = msgspec.json.Decoder(_Route)
T = TypeVar("T")


class ServerConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The simulated server's front (`SimulatorServer`): its request limit (none by default),
    its injected faults, and its clock. With `manual_clock` the market moves only when told to
    (`SimulatorServer.run_for`), so two runs see the very same market whatever their timing.
    Its fields are `SimulatorServer`'s keyword arguments."""

    requests_per_second: float | None = None
    burst: int | None = None
    faults: Faults = Faults()
    manual_clock: bool = False


class SimulatorServer:
    """The simulated trading server as its own process, advancing in real time, behind the rate
    limit and the faults of a real server (`requests_per_second`, `burst` (default: a second's
    worth), `faults`; by default none). Commands and queries count against the rate limit, the
    event stream does not. Each request answers its result or a `Failure`. With `manual_clock`
    the market stands still until `run_for` moves it."""

    def __init__(
        self,
        config: SimulatorConfig,
        *,
        requests_per_second: float | None = None,
        burst: int | None = None,
        faults: Faults | None = None,
        manual_clock: bool = False,
    ) -> None:
        self.sim = PlatformSimulator(config)
        self.last = time.monotonic()
        self.halted = manual_clock
        self.limiter = (
            None
            if requests_per_second is None
            else TokenBucket(requests_per_second, burst or max(1, int(requests_per_second)))
        )
        self.faults = faults or Faults()
        self.chaos = random.Random(self.faults.seed)
        self.again: deque[bytes] = deque()  # events to hand over a second time
        self.rate_limited = 0

    async def fetch(self, max_events: int) -> list[bytes] | Failure:
        failure = await self._arrive(limited=False)
        if failure is not None:
            return failure
        self._catch_up()
        batch = self._hand_over(max_events)
        if self._chance(self.faults.dropped):
            self.again.extendleft(reversed(batch))  # sent again after the reconnection
            return self._dropped()
        return batch

    async def execute(self, payload: bytes) -> list[int] | Failure:
        """Carry out a msgpack batch of commands (`bridge.codec.encode_batch`)."""
        return await self.carry_out(decode_command_batch(payload))

    async def carry_out(self, commands: Sequence[AnyPlatformCommand]) -> list[int] | Failure:
        return await self._request(lambda: self.sim.execute(commands))

    async def history(self, account_id: str, since_ns: int) -> list[bytes] | Failure:
        return await self._request(lambda: self.sim.history(account_id, since_ns))

    async def positions(self, account_id: str) -> list[OpenPosition] | Failure:
        return await self._request(lambda: self._positions(account_id))

    async def account_state(self, account_id: str) -> AccountState | Failure:
        return await self._request(lambda: self._account_state(account_id))

    async def account_states(self, account_ids: Sequence[str]) -> list[AccountState] | Failure:
        """Several accounts in one request (one against the rate limit); unknown ones left out."""
        return await self._request(lambda: self._account_states(account_ids))

    async def provision(self, account_ids: Sequence[str]) -> int:
        """Open accounts already funded (`PlatformSimulator.provision`); how many were new. A
        setup step, like `halt` and `inject`: outside the rate limit and the faults."""
        return self.sim.provision(account_ids)

    async def halt(self) -> None:
        """Close the market: no more prices or trades; commands are still carried out."""
        self.halted = True

    async def run_for(self, seconds: float, step_s: float = 1.0) -> int:
        """Move the market `seconds` of simulated time on at once, in steps of `step_s` (a
        setup step, outside the rate limit and the faults); returns how many messages wait to
        be fetched. The same steps from the same start generate the same events."""
        if not 0 < step_s <= seconds:
            raise ValueError(f"need 0 < step_s <= seconds, got step {step_s}, seconds {seconds}")
        whole, rest = divmod(seconds, step_s)
        for _ in range(int(whole)):
            self.sim.advance(step_s)
        if rest:
            self.sim.advance(rest)
        return len(self.sim.outbox)

    async def ping(self) -> Pulse:
        return pulse()

    async def backlog(self) -> int:
        """Messages generated but not yet fetched."""
        return len(self.sim.outbox) + len(self.again)

    async def report(self) -> SimulatorReport:
        return msgspec.structs.replace(self.sim.report(), rate_limited=self.rate_limited)

    async def inject(self, raw: Sequence[bytes]) -> None:
        """Queue raw messages as if the server had sent them (fault injection). A message's
        `deal_id` counts as the server's own: its next deals are numbered above it, as a
        platform numbering every deal in one sequence would."""
        for message in raw:
            self.sim.outbox.append((0, message))
            try:
                deal_id = msgspec.json.decode(message, type=_Numbered).deal_id
            except msgspec.DecodeError:  # malformed on purpose: the bridge must reject it
                continue
            if isinstance(deal_id, int):
                self.sim.deal_seq = max(self.sim.deal_seq, deal_id)

    async def _request(self, work: Callable[[], T]) -> T | Failure:
        """A command or query: through the rate limit and the faults, then `work`."""
        failure = await self._arrive(limited=True)
        if failure is not None:
            return failure
        self._catch_up()
        try:
            result = work()
        except UnknownAccount as exc:
            return Failure(status=HTTPStatus.NOT_FOUND, detail=f"no account {exc.args[0]!r}")
        return self._dropped() if self._chance(self.faults.dropped) else result

    async def _arrive(self, *, limited: bool) -> Failure | None:
        """A request's way in: its latency, the rate limit, a 503. None when it gets through."""
        low, high = self.faults.latency_ms
        if high > 0:
            await asyncio.sleep(self.chaos.uniform(low, high) / 1000)
        if limited and self.limiter is not None and not self.limiter.try_acquire():
            self.rate_limited += 1
            return Failure(
                status=HTTPStatus.TOO_MANY_REQUESTS,
                detail="too many requests",
                retry_after_s=1.0 / self.limiter.rate,  # a token is free by then at the latest
            )
        if self._chance(self.faults.unavailable):
            return Failure(status=HTTPStatus.SERVICE_UNAVAILABLE, detail="unavailable (injected)")
        return None

    def _dropped(self) -> Failure:
        return Failure(status=CONNECTION_DROPPED, detail="connection dropped (injected)")

    def _chance(self, probability: float) -> bool:
        return probability > 0 and self.chaos.random() < probability

    def _catch_up(self) -> None:
        """Advance the market to now: the server's clock runs whether or not anyone asks."""
        now = time.monotonic()
        if not self.halted:
            self.sim.advance(now - self.last)
        self.last = now

    def _hand_over(self, max_events: int) -> list[bytes]:
        """The next batch: events due again first, then new ones, with the injected faults."""
        batch = [self.again.popleft() for _ in range(min(max_events, len(self.again)))]
        fresh = self.sim.take(max_events - len(batch))
        if self.faults.lost:
            fresh = [m for m in fresh if not self._chance(self.faults.lost)]
        self.again.extend(m for m in fresh if self._chance(self.faults.duplicated))
        batch.extend(fresh)
        if self.faults.reordered:
            self._reorder(batch)
        return batch

    def _reorder(self, batch: list[bytes]) -> None:
        """Swap some adjacent independent events, in place."""
        i = 0
        while i < len(batch) - 1:
            if self._chance(self.faults.reordered) and _independent(batch[i], batch[i + 1]):
                batch[i], batch[i + 1] = batch[i + 1], batch[i]
                i += 1  # the moved event does not move again
            i += 1

    def _positions(self, account_id: str) -> list[OpenPosition]:
        return [
            OpenPosition(
                position_id=position_id,
                symbol=p.symbol,
                side=p.side,
                volume=p.volume,
                open_price=p.open_price,
                profit_cents=self.sim.profit_cents(p),
            )
            for position_id, p in self.sim.positions(account_id).items()
        ]

    def _account_states(self, account_ids: Sequence[str]) -> list[AccountState]:
        known = self.sim.accounts
        return [self._account_state(a) for a in dict.fromkeys(account_ids) if a in known]

    def _account_state(self, account_id: str) -> AccountState:
        account = self.sim.account(account_id)
        return AccountState(
            account_id=account.account_id,
            currency=account.currency,
            balance_cents=account.balance,
            credit_cents=account.credit,
            equity_cents=self.sim.equity_cents(account),
            enabled=account.enabled,
        )


def _independent(first: bytes, second: bytes) -> bool:
    """Whether a platform could send the two events in either order and no account see a
    difference: two accounts' events. Ticks keep their order: ticks of two symbols change an
    account holding both, and the order they happened in is the truth of its equity."""
    try:
        a, b = _decode_route.decode(first), _decode_route.decode(second)
    except msgspec.DecodeError:
        return False
    return a.account_id is not None and b.account_id is not None and a.account_id != b.account_id


RemoteSimulatorServer: Any = ray.remote(SimulatorServer)


class SimulatorConnection:
    """`Platform` over a `SimulatorServer` actor handle: its `Failure` answers raise the
    protocol's errors (`RateLimited`, `Refused`, `Unavailable`)."""

    def __init__(self, server: Any) -> None:
        self.server = server

    async def fetch(self, max_events: int) -> list[bytes]:
        answer: list[bytes] | Failure = await self.server.fetch.remote(max_events)
        return _result(answer)

    async def execute(self, commands: Sequence[AnyPlatformCommand]) -> list[int]:
        answer: list[int] | Failure = await self.server.execute.remote(encode_batch(commands))
        return _result(answer)

    async def history(self, account_id: str, since_ns: int) -> list[bytes]:
        answer: list[bytes] | Failure = await self.server.history.remote(account_id, since_ns)
        return _result(answer)

    async def positions(self, account_id: str) -> list[OpenPosition]:
        answer: list[OpenPosition] | Failure = await self.server.positions.remote(account_id)
        return _result(answer)

    async def account_state(self, account_id: str) -> AccountState:
        answer: AccountState | Failure = await self.server.account_state.remote(account_id)
        return _result(answer)

    async def account_states(self, account_ids: Sequence[str]) -> list[AccountState]:
        answer: list[AccountState] | Failure = await self.server.account_states.remote(
            list(account_ids)
        )
        return _result(answer)


def _result(answer: T | Failure) -> T:
    if isinstance(answer, Failure):
        raise platform_error(answer.status, answer.detail, answer.retry_after_s)
    return answer
