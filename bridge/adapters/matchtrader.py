"""Match-Trader through Match-Trade's Broker API (REST, JSON, 500 requests a minute): a `Platform`.

Endpoints used, Broker API v1 (paths and shapes as Match-Trade documents them; every call sends
`Authorization: <api key>` and names the trading system by `systemUuid`):

- `GET /v1/trading-account?systemUuid&login`: `financeInfo` (balance, equity, credit, currency).
- `GET /v1/trading-accounts/trading-data/open-positions?systemUuid&login`,
  `.../closed-positions?systemUuid&login&from&to`, `.../ledgers?systemUuid&login&types&from&to`:
  positions, history and the `fetch` poll.
- `POST /v1/deposits/manual`, `POST /v1/withdrawals/manual` (through `payment_gateway_uuid`),
  `POST /v1/credit/in`: balance operations; the comment carries the command id, and the
  ledger is searched for it first so a resend is not booked twice.
- `POST /v1/trading-accounts/positions/close`: close all, every open position in one request.

Broker API v2 (`v2_base_url`), where v1 has no such operation. Match-Trade documents the method,
parameters and bodies, but the path templates below were not in the pages we could read and are
our assumption, to check against the broker's environment:

- `GET /v1/trading-accounts/{login}` (-> `accessRight`, `version`) and
  `PATCH /v1/trading-accounts/{login}` with `{"accessRight", "version"}` (optimistic locking):
  trading off (`TRADING_DISABLED`) and on (`FULL`), and `AccountState.enabled`.
- `POST /v1/user-accounts/{user_account_uuid}/trading-accounts` with a custom `login`, `group`,
  `leverageRatioPercent` (leverage x 100, our reading) and `accountType`: provisioning, so the
  login is our account id and a resend finds it instead of creating a second account.

Errors: HTTP 429 raises `RateLimited` with its Retry-After; 5xx, time-outs and dropped
connections raise `Unavailable`; 401/403 raise `Refused`; other 4xx of a command are that
command's result code (the HTTP status). A manual payment answered REJECTED or FAILED is 422.

`fetch` polls every login in `logins` (and those it provisioned) at most every
`poll_interval_s`: open positions (a new one is an opening deal), closed positions (the closing
deal, and the opening one if it was never seen open) and the ledger (deposits, withdrawals,
credit). Three requests per login per poll: at 500 a minute this suits tens of accounts, not
thousands (the documented gRPC streams would; not implemented). The cursor (per login, the time
of the last poll) and the ids already emitted live in memory; persisting them is the bridge's job.

Match-Trader numbers positions and ledger entries apart (and not necessarily as integers), so
deal numbers are time-ordered (`_http.time_ordered_id`). Commission and swap of a position are
reported on its closing deal (an opening deal carries none, so nothing is counted twice). A
partly closed position's opening deal carries the volume of the first record seen.

Tested only against a stub server written from the public documentation
(`tests/unit/bridge/adapters/matchtrader_stub.py`), never against a real Match-Trader server.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgspec
from cachetools import LRUCache

from bridge.adapters._http import (
    UNSUPPORTED,
    HttpClient,
    Reply,
    cents,
    comment_tag,
    decode_or_refuse,
    now_ns,
    ns_to_rfc3339,
    numeric_or_stable,
    raise_for_transport,
    rfc3339_to_ns,
    time_ordered_id,
)
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
    Side,
    TradingDisabled,
)
from bridge.platform import DONE, AccountState, NotFound, OpenPosition, Refused

if TYPE_CHECKING:
    from bridge.platform import Platform

log = logging.getLogger(__name__)

UNPROCESSABLE = 422  # a payment or close the platform answered REJECTED / FAILED
_FAILED = {"REJECTED", "FAILED", "FAILED_PAYMENT", "CANCELLED_BY_USER"}
_LEDGER_TYPES = ("DEPOSIT", "WITHDRAWAL", "CREDIT_IN", "CREDIT_OUT")
_LEDGER_KIND = {"DEPOSIT": BalanceKind.DEPOSIT, "WITHDRAWAL": BalanceKind.WITHDRAWAL}
_COMMENT_LENGTH = 64
_FAR_FUTURE_NS = 2_000_000_000 * 1_000_000_000
_SEEN = 200_000  # event ids remembered against a poll window that overlaps the last one


class MatchTraderConfig(msgspec.Struct, frozen=True, kw_only=True):
    """One Match-Trader broker environment and the Broker API key the bridge uses."""

    server: str  # our name for the server, first part of every event id
    base_url: str  # Broker API v1 root, "https://broker-api.match-trader.com"
    api_key: str  # a configuration value, never in code
    system_uuid: str  # the trading system of the accounts
    payment_gateway_uuid: str  # the gateway manual deposits and withdrawals are booked under
    v2_base_url: str | None = None  # Broker API v2 root; None: same as base_url
    auth_scheme: str = ""  # the documented header is the bare key; "Bearer" if yours wants it
    timeout_s: float = 10.0
    requests_per_minute: int = 500
    poll_interval_s: float = 5.0
    logins: tuple[str, ...] = ()  # accounts `fetch` polls
    start_ns: int | None = None  # where `fetch` starts; None: when it first polls
    overlap_s: int = 60  # each poll re-reads this much of the last (late records, skew)
    dedupe_lookback_s: int = 7 * 86_400  # how far back a resent balance operation is looked for
    user_account_uuid: str | None = None  # the user account new trading accounts belong to
    account_type: str = "DEMO"  # DEMO or REAL, for provisioning


# Wire shapes: the documented records, the fields we read (unknown fields ignored).


class _FinanceInfo(msgspec.Struct, frozen=True):
    balance: float = 0.0
    equity: float = 0.0
    credit: float = 0.0
    currency: str = "USD"


class _TradingAccount(msgspec.Struct, frozen=True, rename="camel"):
    login: str = ""
    finance_info: _FinanceInfo = _FinanceInfo()


class _AccessRights(msgspec.Struct, frozen=True, rename="camel"):
    login: str = ""
    access_right: str = "FULL"
    version: int | str = 0


class _Position(msgspec.Struct, frozen=True, rename="camel"):
    id: str
    symbol: str
    volume: float
    side: str
    open_time: str
    open_price: float
    profit: float = 0.0


class _Positions(msgspec.Struct, frozen=True):
    positions: list[_Position] = []


class _Closed(msgspec.Struct, frozen=True, rename="camel"):
    id: str
    symbol: str
    volume: float
    side: str
    open_time: str
    open_price: float
    time: str  # when it closed
    close_price: float
    profit: float = 0.0
    commission: float = 0.0
    swap: float = 0.0
    closing_order_id: str = msgspec.field(name="closingOrderID", default="")


class _ClosedPositions(msgspec.Struct, frozen=True, rename="camel"):
    closed_positions: list[_Closed] = []


class _Ledger(msgspec.Struct, frozen=True):
    id: str
    type: str
    time: str
    profit: float = 0.0
    comment: str = ""


class _Ledgers(msgspec.Struct, frozen=True):
    operations: list[_Ledger] = []


class _Payment(msgspec.Struct, frozen=True):
    status: str = "NEW"


class _TradeResult(msgspec.Struct, frozen=True):
    status: str = "OK"


def _decoder(kind: Any) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(kind, strict=False)


_trading_account = _decoder(_TradingAccount)
_access_rights = _decoder(_AccessRights)
_positions = _decoder(_Positions)
_closed = _decoder(_ClosedPositions)
_ledgers = _decoder(_Ledgers)
_payment = _decoder(_Payment)
_trade_result = _decoder(_TradeResult)
_json = msgspec.json.Encoder()


class MatchTraderBrokerApi:
    """`Platform` over the Broker API of one Match-Trader broker environment."""

    def __init__(self, config: MatchTraderConfig) -> None:
        self.config = config
        key = f"{config.auth_scheme} {config.api_key}".strip()
        self.v1 = self._client(config.base_url, key)
        self.v2 = self._client(config.v2_base_url or config.base_url, key)
        self.logins: list[str] = list(config.logins)
        self.cursors: dict[str, int] = {}  # login -> UTC ns its last poll started
        self.seen: LRUCache[str, None] = LRUCache(maxsize=_SEEN)
        self.start_ns = config.start_ns
        self.pending: deque[bytes] = deque()
        self.next_poll = 0.0

    def _client(self, base_url: str, key: str) -> HttpClient:
        per_s = self.config.requests_per_minute / 60
        return HttpClient(
            base_url,
            timeout_s=self.config.timeout_s,
            rate_per_s=per_s,
            burst=max(1, int(per_s)),
            headers={"Authorization": key, "Accept": "application/json"},
        )

    async def close(self) -> None:
        await self.v1.close()
        await self.v2.close()

    # HTTP -----------------------------------------------------------------------------------

    async def _send(
        self, client: HttpClient, method: str, path: str, *, params: Any = None, body: Any = None
    ) -> Reply:
        what = f"Match-Trader {method} {path}"
        data = None if body is None else _json.encode(body)
        headers = None if body is None else {"Content-Type": "application/json"}
        reply = await client.request(
            method, path, params=params, data=data, headers=headers, what=what
        )
        raise_for_transport(reply, what)
        return reply

    async def _read(self, path: str, params: Any, decoder: msgspec.json.Decoder[Any]) -> Any:
        reply = await self._send(self.v1, "GET", path, params=params)
        if reply.status == 404:
            raise NotFound(f"Match-Trader GET {path}: {reply.snippet()}")
        if reply.status != 200:
            raise Refused(f"Match-Trader GET {path}: HTTP {reply.status} {reply.snippet()}")
        return decode_or_refuse(decoder, reply, path)

    def _account_params(self, login: str, **extra: Any) -> dict[str, Any]:
        return {"systemUuid": self.config.system_uuid, "login": login, **extra}

    # Reads ----------------------------------------------------------------------------------

    async def _open_positions(self, login: str) -> list[_Position]:
        params = self._account_params(login)
        found: _Positions = await self._read(
            "/v1/trading-accounts/trading-data/open-positions", params, _positions
        )
        return found.positions

    async def _closed_positions(self, login: str, since_ns: int) -> list[_Closed]:
        params = self._account_params(
            login, **{"from": ns_to_rfc3339(since_ns), "to": ns_to_rfc3339(_FAR_FUTURE_NS)}
        )
        found: _ClosedPositions = await self._read(
            "/v1/trading-accounts/trading-data/closed-positions", params, _closed
        )
        return found.closed_positions

    async def _ledger(self, login: str, since_ns: int) -> list[_Ledger]:
        params = [(k, v) for k, v in self._account_params(login).items()]
        params += [("types", t) for t in _LEDGER_TYPES]
        params += [("from", ns_to_rfc3339(since_ns)), ("to", ns_to_rfc3339(_FAR_FUTURE_NS))]
        found: _Ledgers = await self._read(
            "/v1/trading-accounts/trading-data/ledgers", params, _ledgers
        )
        return found.operations

    async def positions(self, account_id: str) -> list[OpenPosition]:
        return [_open_position(p) for p in await self._open_positions(account_id)]

    async def account_state(self, account_id: str) -> AccountState:
        params = self._account_params(account_id)
        account: _TradingAccount = await self._read("/v1/trading-account", params, _trading_account)
        rights = await self._access_rights(account_id)
        if rights is None:
            raise NotFound(f"Match-Trader: no trading account {account_id}")
        finance = account.finance_info
        return AccountState(
            account_id=account_id,
            currency=finance.currency,
            balance_cents=cents(finance.balance),
            credit_cents=cents(finance.credit),
            equity_cents=cents(finance.equity),
            enabled=rights.access_right == "FULL",
        )

    async def _access_rights(self, login: str) -> _AccessRights | None:
        """The v2 record of a trading account, or None when there is none."""
        reply = await self._send(self.v2, "GET", f"/v1/trading-accounts/{login}")
        if reply.status == 404:
            return None
        if reply.status != 200:
            raise Refused(f"Match-Trader trading account {login}: HTTP {reply.status}")
        found: _AccessRights = decode_or_refuse(_access_rights, reply, "trading account")
        return found

    # Events ---------------------------------------------------------------------------------

    async def fetch(self, max_events: int) -> list[bytes]:
        """New deals and balance operations of the polled logins, oldest first."""
        loop_now = asyncio.get_running_loop().time()
        if not self.pending and loop_now >= self.next_poll:
            self.next_poll = loop_now + self.config.poll_interval_s
            await self._poll()
        count = min(max_events, len(self.pending))
        return [self.pending.popleft() for _ in range(count)]

    async def _poll(self) -> None:
        started = now_ns()
        if self.start_ns is None:
            self.start_ns = started
        for login in self.logins:  # one login at a time: a failure keeps the others' events
            since = self.cursors.get(login, self.start_ns) - self.config.overlap_s * 10**9
            try:
                events = await self._events(login, max(since, 0), open_positions=True)
            except NotFound:
                log.exception("Match-Trader login %s not found; left out of this poll", login)
                continue
            fresh = {e.event_id: e for e in events if e.ts_ns >= self.start_ns}
            for event in sorted(fresh.values(), key=_order):
                if event.event_id not in self.seen:
                    self.seen[event.event_id] = None
                    self.pending.append(msgspec.json.encode(event))
            self.cursors[login] = started

    async def _events(
        self, login: str, since_ns: int, open_positions: bool
    ) -> list[AnyPlatformEvent]:
        """Deals and balance operations of `login` from the three documented reads."""
        events: list[AnyPlatformEvent] = []
        if open_positions:
            events += [self._opening(login, p) for p in await self._open_positions(login)]
        for closed in await self._closed_positions(login, since_ns):
            events += [self._opening(login, closed), self._closing(login, closed)]
        for entry in await self._ledger(login, since_ns):
            operation = self._balance(login, entry)
            if operation is not None:
                events.append(operation)
        return events

    async def history(self, account_id: str, since_ns: int) -> list[bytes]:
        events = await self._events(account_id, since_ns, open_positions=True)
        unique = {e.event_id: e for e in reversed(events) if e.ts_ns >= since_ns}
        return [msgspec.json.encode(e) for e in sorted(unique.values(), key=_order)]

    def _opening(self, login: str, position: _Position | _Closed) -> DealExecuted:
        ts_ns = rfc3339_to_ns(position.open_time)
        return DealExecuted(
            event_id=f"{self.config.server}:open:{position.id}",
            ts_ns=ts_ns,
            account_id=login,
            deal_id=time_ordered_id(ts_ns, f"open:{position.id}"),
            position_id=numeric_or_stable(position.id),
            symbol=position.symbol,
            entry=DealEntry.IN,
            side=Side.BUY if position.side == "BUY" else Side.SELL,
            volume=position.volume,
            price=position.open_price,
        )

    def _closing(self, login: str, closed: _Closed) -> DealExecuted:
        ts_ns = rfc3339_to_ns(closed.time)
        key = f"close:{closed.closing_order_id or closed.id}"
        return DealExecuted(
            event_id=f"{self.config.server}:{key}",
            ts_ns=ts_ns,
            account_id=login,
            deal_id=time_ordered_id(ts_ns, key),
            position_id=numeric_or_stable(closed.id),
            symbol=closed.symbol,
            entry=DealEntry.OUT,
            side=Side.SELL if closed.side == "BUY" else Side.BUY,  # the opposite of the position
            volume=closed.volume,
            price=closed.close_price,
            profit=closed.profit,
            commission=closed.commission,
            swap=closed.swap,
        )

    def _balance(self, login: str, entry: _Ledger) -> BalanceOperated | None:
        if entry.type not in _LEDGER_TYPES:
            return None
        kind = _LEDGER_KIND.get(entry.type, BalanceKind.CREDIT)
        outgoing = entry.type in ("WITHDRAWAL", "CREDIT_OUT")
        ts_ns = rfc3339_to_ns(entry.time)
        return BalanceOperated(
            event_id=f"{self.config.server}:ledger:{entry.id}",
            ts_ns=ts_ns,
            account_id=login,
            deal_id=time_ordered_id(ts_ns, f"ledger:{entry.id}"),
            kind=kind,
            amount=-abs(entry.profit) if outgoing else abs(entry.profit),
        )

    # Commands -------------------------------------------------------------------------------

    async def execute(self, commands: Sequence[AnyPlatformCommand]) -> list[int]:
        return [await self._execute(command) for command in commands]

    async def _execute(self, command: AnyPlatformCommand) -> int:
        try:
            return await self._carry_out(command)
        except NotFound as missing:  # this command's answer, not the whole request's
            log.error(
                "Match-Trader %s for %s: %s", type(command).__name__, command.account_id, missing
            )
            return 404

    async def _carry_out(self, command: AnyPlatformCommand) -> int:
        if isinstance(command, DisableTrading):
            return await self._set_access(command.account_id, "TRADING_DISABLED", command)
        if isinstance(command, EnableTrading):
            return await self._set_access(command.account_id, "FULL", command)
        if isinstance(command, OperateBalance):
            return await self._operate_balance(command)
        if isinstance(command, ProvisionAccount):
            return await self._provision(command)
        return await self._close_all(command)

    async def _set_access(
        self, login: str, access: str, command: DisableTrading | EnableTrading
    ) -> int:
        for _ in range(2):  # a concurrent update moves `version`: read again, try once more
            current = await self._access_rights(login)
            if current is None:
                return 404
            if current.access_right != access:
                body = {"accessRight": access, "version": current.version}
                path = f"/v1/trading-accounts/{login}"
                reply = await self._send(self.v2, "PATCH", path, body=body)
                if reply.status in (409, 412):
                    continue
                if reply.status >= 300:
                    return reply.status
            if isinstance(command, DisableTrading):
                self.pending.append(msgspec.json.encode(self._disabled(login, command)))
            return DONE
        return 409

    def _disabled(self, login: str, command: DisableTrading) -> TradingDisabled:
        return TradingDisabled(
            event_id=f"{self.config.server}:disabled:{command.command_id}",
            ts_ns=now_ns(),
            account_id=login,
            command_id=command.command_id,
        )

    async def _operate_balance(self, command: OperateBalance) -> int:
        path = {
            BalanceKind.DEPOSIT: "/v1/deposits/manual",
            BalanceKind.CORRECTION: "/v1/deposits/manual",
            BalanceKind.WITHDRAWAL: "/v1/withdrawals/manual",
            BalanceKind.CREDIT: "/v1/credit/in",
        }[command.kind]
        tag = comment_tag(command.command_id, _COMMENT_LENGTH)
        return await self._payment(command.account_id, path, command.amount_cents, tag)

    async def _payment(self, login: str, path: str, amount_cents: int, tag: str) -> int:
        """One payment, unless the ledger already has an entry with its comment."""
        since = now_ns() - self.config.dedupe_lookback_s * 1_000_000_000
        if any(entry.comment == tag for entry in await self._ledger(login, since)):
            return DONE
        body: dict[str, Any] = self._account_params(login, amount=amount_cents / 100, comment=tag)
        if path != "/v1/credit/in":
            body["paymentGatewayUuid"] = self.config.payment_gateway_uuid
        reply = await self._send(self.v1, "POST", path, body=body)
        if reply.status >= 300:
            return reply.status
        if reply.status == 200 and decode_or_refuse(_payment, reply, path).status in _FAILED:
            return UNPROCESSABLE
        return DONE

    async def _provision(self, command: ProvisionAccount) -> int:
        user = self.config.user_account_uuid
        if user is None:
            log.error("Match-Trader provisioning needs `user_account_uuid` in the configuration")
            return UNSUPPORTED
        login = command.account_id
        if await self._access_rights(login) is None:
            body = {
                "login": login,
                "group": command.group,
                "leverageRatioPercent": command.leverage * 100,
                "accessRight": "FULL",
                "accountType": self.config.account_type,
                "accountDetails": {"name": command.name} if command.name else {},
            }
            path = f"/v1/user-accounts/{user}/trading-accounts"
            reply = await self._send(self.v2, "POST", path, body=body)
            if reply.status >= 300:
                return reply.status
        if login not in self.logins:
            self.logins.append(login)
        if command.deposit_cents == 0:
            return DONE
        tag = comment_tag(command.command_id, _COMMENT_LENGTH)
        return await self._payment(login, "/v1/deposits/manual", command.deposit_cents, tag)

    async def _close_all(self, command: CloseAllPositions) -> int:
        positions = await self._open_positions(command.account_id)
        if not positions:
            return DONE
        closing = [{"positionId": p.id, "instrument": p.symbol} for p in positions]
        body = self._account_params(command.account_id, closePositions=closing)
        path = "/v1/trading-accounts/positions/close"
        reply = await self._send(self.v1, "POST", path, body=body)
        if reply.status >= 300:
            return reply.status
        result: _TradeResult = decode_or_refuse(_trade_result, reply, path)
        return DONE if result.status == "OK" else UNPROCESSABLE


def _order(event: AnyPlatformEvent) -> tuple[int, int]:
    return event.ts_ns, getattr(event, "deal_id", 0)


def _open_position(position: _Position) -> OpenPosition:
    return OpenPosition(
        position_id=numeric_or_stable(position.id),
        symbol=position.symbol,
        side=Side.BUY if position.side == "BUY" else Side.SELL,
        volume=position.volume,
        open_price=position.open_price,
        profit_cents=cents(position.profit),
    )


if TYPE_CHECKING:
    _conforms: type[Platform] = MatchTraderBrokerApi
