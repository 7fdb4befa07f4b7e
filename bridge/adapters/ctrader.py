"""cTrader through Spotware's Open API (JSON over WebSocket) and WebServices API: a `Platform`.

Open API messages used (`{"clientMsgId", "payloadType", "payload"}`, fields as in Spotware's
`OpenApiMessages.proto`; answers carry the request's `clientMsgId`):

- 2100/2101 `ProtoOAApplicationAuthReq` (client id and secret), then 2102/2103
  `ProtoOAAccountAuthReq` for every configured account (one access token); 51 heartbeats.
- 2126 `ProtoOAExecutionEvent`: the subscription `fetch` drains (fills become deals, 10
  DEPOSIT_WITHDRAW becomes a balance operation).
- 2133/2134 `ProtoOADealListReq` and 2143/2144 `ProtoOACashFlowHistoryListReq` (one week per
  request): `history`; 2124/2125 `ProtoOAReconcileReq`, 2187/2188 unrealized P&L, 2121/2122
  `ProtoOATraderReq`, 2112/2113 assets, 2114/2115 and 2116/2117 symbols: positions, state, names.
- 2111 `ProtoOAClosePositionReq`: close all (the access token needs the trade scope).
- Errors: 2142 `ProtoOAErrorRes`, 50 `ProtoErrorRes`, 2132 `ProtoOAOrderErrorEvent`.
  REQUEST_FREQUENCY_EXCEEDED and BLOCKED_PAYLOAD_TYPE (with `retryAfter`) raise `RateLimited`;
  maintenance, unreachable servers, a dropped socket or no answer in `timeout_s` raise
  `Unavailable`; a refusal a close can be answered with (NOT_ENOUGH_MONEY, MARKET_CLOSED,
  TRADING_DISABLED...) is that command's code, the `ProtoOAErrorCode` number, and a position
  already closed counts as done; any other error (authentication included) raises `Refused`.
  Published limits, kept by two token buckets: 50 requests a second per connection, 5 a
  second for historical data.

WebServices (REST, `webservices` config, `?token=` from `POST /webserv/managers/token` with the
MD5 of the manager password): `POST /webserv/traders/{login}/changebalance` for balance
operations (DEPOSIT / WITHDRAW, the command id in `comment` and `externalNote`; the cash-flow
history is searched for it first). Its error body is taken to be `{"errorCode", "description"}`.

Not available, answered `UNSUPPORTED` (-2) per command: disabling and enabling trading (the Open
API is a trader API; the WebServices call that changes `accessRights` is not in the pages we
could read), provisioning (`POST /webserv/traders` picks the login itself, and the `Platform`
interface cannot hand a new login back), credit operations, and balance operations when no
`webservices` are configured. Only accounts in `accounts` (our id, the trader login -> the
`ctidTraderAccountId`) are followed, all granted to one access token; a command for another
account answers 106 (CH_CTID_TRADER_ACCOUNT_NOT_FOUND). Events sent while the socket is down
are not replayed; `history` is the reconciliation. Deal and balance-history ids
are numbered apart, so deal numbers are time-ordered (`_http.time_ordered_id`); money fields are
scaled by `moneyDigits` and signed as cTrader reports them.

Tested only against a stub server written from the public documentation
(`tests/unit/bridge/adapters/ctrader_stub.py`), never against a real cTrader server.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import aiohttp
import msgspec

from bridge.adapters._http import (
    UNSUPPORTED,
    HttpClient,
    cents,
    comment_tag,
    ms_to_ns,
    now_ns,
    raise_for_transport,
    scaled,
    time_ordered_id,
)
from bridge.commands import AnyPlatformCommand, CloseAllPositions, OperateBalance
from bridge.events import (
    AnyPlatformEvent,
    BalanceKind,
    BalanceOperated,
    DealEntry,
    DealExecuted,
    Side,
)
from bridge.platform import (
    DONE,
    AccountState,
    NotFound,
    OpenPosition,
    PlatformError,
    RateLimited,
    Refused,
    Unavailable,
)
from bridge.ratelimit import TokenBucket

if TYPE_CHECKING:
    from bridge.platform import Platform

log = logging.getLogger(__name__)

ERROR_RES, HEARTBEAT = 50, 51
APPLICATION_AUTH_REQ, ACCOUNT_AUTH_REQ = 2100, 2102
CLOSE_POSITION_REQ, ASSET_LIST_REQ, SYMBOLS_LIST_REQ, SYMBOL_BY_ID_REQ = 2111, 2112, 2114, 2116
TRADER_REQ, RECONCILE_REQ, EXECUTION_EVENT, ORDER_ERROR_EVENT = 2121, 2124, 2126, 2132
DEAL_LIST_REQ, OA_ERROR_RES, CASH_FLOW_REQ, PNL_REQ = 2133, 2142, 2143, 2187
_ERRORS = {ERROR_RES, OA_ERROR_RES, ORDER_ERROR_EVENT}
_GONE = {2147, 2148, 2164}  # token invalidated, client disconnected, account disconnected

_RATE = frozenset(["REQUEST_FREQUENCY_EXCEEDED", "BLOCKED_PAYLOAD_TYPE"])
_TRANSIENT = frozenset(
    [
        "SERVER_IS_UNDER_MAINTENANCE",
        "CH_SERVER_NOT_REACHABLE",
        "CANT_ROUTE_REQUEST",
        "TIMEOUT_ERROR",
    ]
)
# ProtoOAErrorCode numbers a command may be answered with (any other refusal fails the request)
_ERROR_NUMBERS = {
    "MARKET_CLOSED": 9,
    "CONCURRENT_MODIFICATION": 10,
    "NO_QUOTES": 117,
    "NOT_ENOUGH_MONEY": 118,
    "POSITION_LOCKED": 123,
    "TRADING_BAD_VOLUME": 125,
    "TRADING_DISABLED": 132,
    "TRADING_NOT_ALLOWED": 133,
}
_NOT_FOUND = frozenset(["CH_CTID_TRADER_ACCOUNT_NOT_FOUND"])
UNKNOWN_ACCOUNT = 106  # CH_CTID_TRADER_ACCOUNT_NOT_FOUND: not in `accounts`
_BOOKABLE = {BalanceKind.DEPOSIT, BalanceKind.WITHDRAWAL, BalanceKind.CORRECTION}
_ALREADY_CLOSED = {"POSITION_NOT_FOUND", "POSITION_NOT_OPEN"}
_FILLED = {2, 3, "FILLED", "PARTIALLY_FILLED"}  # ProtoOADealStatus
_FILLS = {3, 11, "ORDER_FILLED", "ORDER_PARTIAL_FILL"}  # ProtoOAExecutionType
_BUY = {1, "BUY"}  # ProtoOATradeSide
_FULL_ACCESS = {0, "FULL_ACCESS"}  # ProtoOAAccessRights
_WITHDRAWALS = {1, 4, 6, 10, 12, 13, 14, 16, 17, 18, 20, 22, 28, 30, 32, 34, 35, 37}
_WEEK_MS = 604_800_000  # the longest window one cash-flow request may ask for
_COMMENT_LENGTH = 50


class CTraderWebServices(msgspec.Struct, frozen=True, kw_only=True):
    """The broker's WebServices API (manager credentials; calls from whitelisted IPs only)."""

    base_url: str  # "https://HOST:PORT/v2"
    manager_login: int
    manager_password: str  # a configuration value, never in code
    timeout_s: float = 10.0
    requests_per_second: float = 5.0  # Spotware limits non-GET calls per hour, unpublished


class CTraderConfig(msgspec.Struct, frozen=True, kw_only=True):
    """One Open API application connected to one cTrader environment (live or demo)."""

    server: str  # our name for the server, first part of every event id
    url: str  # "wss://live.ctraderapi.com:5036" (JSON)
    client_id: str
    client_secret: str  # configuration values, never in code
    access_token: str
    accounts: dict[str, int]  # our account id (the trader login) -> ctidTraderAccountId
    timeout_s: float = 10.0
    heartbeat_s: float = 10.0
    requests_per_second: float = 50.0
    history_requests_per_second: float = 5.0
    webservices: CTraderWebServices | None = None
    dedupe_lookback_s: int = 7 * 86_400


class CTraderRefusal(Refused):
    """A request the server refused with an error code a command can be answered with."""

    def __init__(self, error_code: str, description: str) -> None:
        super().__init__(f"cTrader {error_code}: {description}")
        self.error_code, self.description = error_code, description

    def __reduce__(self) -> tuple[type, tuple[str, str]]:  # crosses Ray actor boundaries
        return type(self), (self.error_code, self.description)


class CTraderNotFound(CTraderRefusal, NotFound):
    """The server has no such trader account."""


# Wire shapes: the proto messages' JSON form, the fields we read (unknown fields ignored).
# Enums are accepted as numbers or names.


class _Message(msgspec.Struct, frozen=True, rename="camel"):
    payload_type: int
    payload: msgspec.Raw = msgspec.Raw(b"{}")
    client_msg_id: str | None = None


class _Error(msgspec.Struct, frozen=True, rename="camel"):
    error_code: str
    description: str = ""
    retry_after: int | None = None


class _Detail(msgspec.Struct, frozen=True, rename="camel"):
    gross_profit: int = 0
    swap: int = 0
    money_digits: int = 2


class _Deal(msgspec.Struct, frozen=True, rename="camel"):
    deal_id: int
    position_id: int
    symbol_id: int
    filled_volume: int
    execution_timestamp: int
    trade_side: int | str
    deal_status: int | str
    execution_price: float = 0.0
    commission: int = 0
    money_digits: int = 2
    close_position_detail: _Detail | None = None


class _Flow(msgspec.Struct, frozen=True, rename="camel"):
    operation_type: int | str
    balance_history_id: int
    delta: int
    change_balance_timestamp: int
    external_note: str = ""
    money_digits: int = 2


class _Execution(msgspec.Struct, frozen=True, rename="camel"):
    ctid_trader_account_id: int
    execution_type: int | str
    deal: _Deal | None = None
    deposit_withdraw: _Flow | None = None


class _TradeData(msgspec.Struct, frozen=True, rename="camel"):
    symbol_id: int
    volume: int
    trade_side: int | str


class _Position(msgspec.Struct, frozen=True, rename="camel"):
    position_id: int
    trade_data: _TradeData
    price: float = 0.0


class _Reconcile(msgspec.Struct, frozen=True, rename="camel"):
    position: list[_Position] = []


class _DealList(msgspec.Struct, frozen=True, rename="camel"):
    deal: list[_Deal] = []
    has_more: bool = False


class _CashFlow(msgspec.Struct, frozen=True, rename="camel"):
    deposit_withdraw: list[_Flow] = []


class _Trader(msgspec.Struct, frozen=True, rename="camel"):
    balance: int
    deposit_asset_id: int
    money_digits: int = 2
    access_rights: int | str = 0


class _TraderRes(msgspec.Struct, frozen=True, rename="camel"):
    trader: _Trader


class _Named(msgspec.Struct, frozen=True, rename="camel"):
    asset_id: int = 0
    symbol_id: int = 0
    name: str = ""
    symbol_name: str = ""
    lot_size: int = 0


class _Listing(msgspec.Struct, frozen=True, rename="camel"):
    asset: list[_Named] = []
    symbol: list[_Named] = []


class _Pnl(msgspec.Struct, frozen=True, rename="camel"):
    position_id: int
    net_unrealized_pnl: int = msgspec.field(name="netUnrealizedPnL", default=0)


class _PnlRes(msgspec.Struct, frozen=True, rename="camel"):
    positions: list[_Pnl] = msgspec.field(name="positionUnrealizedPnL", default_factory=list)
    money_digits: int = 2


_message = msgspec.json.Decoder(_Message)
_json = msgspec.json.Encoder()


def _decode(kind: type[Any], raw: msgspec.Raw | bytes, what: str) -> Any:
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.DecodeError as exc:
        raise Refused(f"cTrader {what}: unexpected answer ({exc})") from exc


def _platform_error(error: _Error) -> PlatformError:
    if error.error_code in _RATE:
        return RateLimited(f"cTrader {error.error_code}: {error.description}", error.retry_after)
    if error.error_code in _TRANSIENT:
        return Unavailable(f"cTrader {error.error_code}: {error.description}")
    if error.error_code in _NOT_FOUND:
        return CTraderNotFound(error.error_code, error.description)
    return CTraderRefusal(error.error_code, error.description)


class _WebServices:
    """The few WebServices calls used, with the manager token they need."""

    def __init__(self, config: CTraderWebServices) -> None:
        self.config = config
        rate = config.requests_per_second
        self.http = HttpClient(
            config.base_url, timeout_s=config.timeout_s, rate_per_s=rate, burst=max(1, int(rate))
        )
        self.token: str | None = None

    async def _token(self) -> str:
        if self.token is None:
            hashed = hashlib.md5(self.config.manager_password.encode()).hexdigest()
            body = {"login": self.config.manager_login, "hashedPassword": hashed}
            reply = await self.http.request(
                "POST", "/webserv/managers/token", json=body, what="cTrader manager token"
            )
            raise_for_transport(reply, "cTrader manager token")
            if reply.status != 200:
                raise Refused(f"cTrader manager token: HTTP {reply.status} {reply.snippet()}")
            self.token = str(msgspec.json.decode(reply.body).get("webservToken", ""))
        return self.token

    async def change_balance(self, login: str, body: dict[str, Any]) -> int:
        path, what = f"/webserv/traders/{login}/changebalance", "cTrader changebalance"
        for attempt in (1, 2):
            params = {"token": await self._token()}
            reply = await self.http.request("POST", path, params=params, json=body, what=what)
            if reply.status in (401, 403) and attempt == 1:  # the token was invalidated
                self.token = None
                continue
            break
        if b"REQUEST_FREQUENCY_EXCEEDED" in reply.body:
            raise RateLimited(f"{what}: {reply.snippet()}", reply.retry_after_s)
        raise_for_transport(reply, what)
        if reply.status >= 300:
            log.error("%s for %s: HTTP %s %s", what, login, reply.status, reply.snippet())
            return reply.status
        return DONE

    async def close(self) -> None:
        await self.http.close()


class CTraderOpenApi:
    """`Platform` over one Open API connection (and, optionally, the WebServices API)."""

    def __init__(self, config: CTraderConfig) -> None:
        self.config = config
        self.logins = {ctid: login for login, ctid in config.accounts.items()}
        self.webservices = _WebServices(config.webservices) if config.webservices else None
        self.limiter = TokenBucket(
            config.requests_per_second, max(1, int(config.requests_per_second))
        )
        self.history_limiter = TokenBucket(
            config.history_requests_per_second, max(1, int(config.history_requests_per_second))
        )
        self.session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.stale = False  # the server ended the session: connect again before the next call
        self.tasks: list[asyncio.Task[None]] = []
        self.connect_lock = asyncio.Lock()
        self.ids = itertools.count(1)
        self.waiting: dict[str, asyncio.Future[_Message]] = {}
        self.executions: deque[msgspec.Raw] = deque()
        self.names: dict[int, dict[int, str]] = {}  # ctid -> symbol id -> name
        self.lots: dict[tuple[int, int], int] = {}  # (ctid, symbol id) -> lot size (cents)
        self.currencies: dict[tuple[int, int], str] = {}  # (ctid, asset id) -> name

    # Connection -----------------------------------------------------------------------------

    async def close(self) -> None:
        await self._drop()
        if self.webservices is not None:
            await self.webservices.close()

    async def _drop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks = []
        if self.ws is not None and not self.ws.closed:
            await self.ws.close()
        if self.session is not None:
            await self.session.close()
        self.session, self.ws, self.stale = None, None, False
        self._fail_waiting("connection closed")

    def _fail_waiting(self, reason: str) -> None:
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(Unavailable(f"cTrader: {reason}"))

    async def _connected(self) -> None:
        async with self.connect_lock:
            if self.ws is not None and not self.ws.closed and not self.stale:
                return
            await self._drop()
            self.session = aiohttp.ClientSession()
            try:
                async with asyncio.timeout(self.config.timeout_s):
                    self.ws = await self.session.ws_connect(self.config.url, heartbeat=None)
            except (TimeoutError, aiohttp.ClientError) as exc:
                await self._drop()
                raise Unavailable(f"cTrader connect: {type(exc).__name__} {exc}") from exc
            self.tasks = [
                asyncio.create_task(self._read(self.ws)),
                asyncio.create_task(self._beat()),
            ]
            try:
                await self._authorize()
            except PlatformError:
                await self._drop()
                raise

    async def _authorize(self) -> None:
        config = self.config
        app = {"clientId": config.client_id, "clientSecret": config.client_secret}
        await self._send(APPLICATION_AUTH_REQ, app)
        for ctid in config.accounts.values():
            account = {"ctidTraderAccountId": ctid, "accessToken": config.access_token}
            await self._send(ACCOUNT_AUTH_REQ, account)

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            async for frame in ws:
                if frame.type is aiohttp.WSMsgType.TEXT:
                    self._dispatch(frame.data)
        finally:
            self._fail_waiting("the server closed the connection")

    def _dispatch(self, text: str) -> None:
        try:
            message = _message.decode(text)
        except msgspec.DecodeError:
            log.warning("cTrader sent an unreadable message: %.200s", text)
            return
        future = self.waiting.get(message.client_msg_id or "")
        if future is not None and not future.done():
            future.set_result(message)
        if message.payload_type == EXECUTION_EVENT:
            self.executions.append(message.payload)
        elif message.payload_type in _GONE:
            log.warning("cTrader ended the session (%s): %s", message.payload_type, text[:200])
            self.stale = True  # the next call connects and authorizes again

    async def _beat(self) -> None:
        beat = _json.encode({"payloadType": HEARTBEAT, "payload": {}}).decode()
        while True:
            await asyncio.sleep(self.config.heartbeat_s)
            try:
                if self.ws is not None and not self.ws.closed:
                    await self.ws.send_str(beat)
            except (aiohttp.ClientError, ConnectionError):
                return  # the reader sees the closed socket; the next call reconnects

    async def _request(
        self, payload_type: int, payload: dict[str, Any], history: bool = False
    ) -> _Message:
        await self._connected()
        return await self._send(payload_type, payload, history)

    async def _send(
        self, payload_type: int, payload: dict[str, Any], history: bool = False
    ) -> _Message:
        ws = self.ws
        if ws is None or ws.closed:
            raise Unavailable("cTrader: not connected")
        msg_id = f"pv-{next(self.ids)}"
        future: asyncio.Future[_Message] = asyncio.get_running_loop().create_future()
        self.waiting[msg_id] = future
        try:
            await self.limiter.acquire()
            if history:
                await self.history_limiter.acquire()
            envelope = {"clientMsgId": msg_id, "payloadType": payload_type, "payload": payload}
            await ws.send_str(_json.encode(envelope).decode())
            async with asyncio.timeout(self.config.timeout_s):
                message = await future
        except TimeoutError as exc:
            raise Unavailable(
                f"cTrader {payload_type}: no answer in {self.config.timeout_s}s"
            ) from exc
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise Unavailable(f"cTrader {payload_type}: {type(exc).__name__} {exc}") from exc
        finally:
            self.waiting.pop(msg_id, None)
        if message.payload_type in _ERRORS:
            raise _platform_error(_decode(_Error, message.payload, str(payload_type)))
        return message

    async def _ask(
        self, kind: type[Any], payload_type: int, ctid: int, history: bool = False, **fields: Any
    ) -> Any:
        message = await self._request(
            payload_type, {"ctidTraderAccountId": ctid, **fields}, history
        )
        return _decode(kind, message.payload, str(payload_type))

    def _ctid(self, account_id: str) -> int:
        ctid = self.config.accounts.get(account_id)
        if ctid is None:
            # Not ours to ask about: for reconciliation, an account the platform cannot show.
            raise NotFound(f"cTrader: account {account_id} is not configured (`accounts`)")
        return ctid

    # Names ------------------------------------------------------------------------------------

    async def _symbol(self, ctid: int, symbol_id: int) -> tuple[str, int]:
        """A symbol's name and lot size (in cents of units), looked up once."""
        if ctid not in self.names:
            listing: _Listing = await self._ask(_Listing, SYMBOLS_LIST_REQ, ctid)
            self.names[ctid] = {s.symbol_id: s.symbol_name for s in listing.symbol}
        if (ctid, symbol_id) not in self.lots:
            found: _Listing = await self._ask(
                _Listing, SYMBOL_BY_ID_REQ, ctid, symbolId=[symbol_id]
            )
            for symbol in found.symbol:
                self.lots[(ctid, symbol.symbol_id)] = symbol.lot_size
        name = self.names[ctid].get(symbol_id) or str(symbol_id)
        return name, self.lots.get((ctid, symbol_id)) or 10_000_000  # 100,000 units: FX

    async def _currency(self, ctid: int, asset_id: int) -> str:
        if (ctid, asset_id) not in self.currencies:
            listing: _Listing = await self._ask(_Listing, ASSET_LIST_REQ, ctid)
            for asset in listing.asset:
                self.currencies[(ctid, asset.asset_id)] = asset.name
        return self.currencies.get((ctid, asset_id), "USD")

    # Events -----------------------------------------------------------------------------------

    async def fetch(self, max_events: int) -> list[bytes]:
        """Execution events received on the connection, oldest first."""
        await self._connected()
        out: list[bytes] = []
        while self.executions and len(out) < max_events:
            try:
                execution = _decode(_Execution, self.executions[0], "execution event")
            except Refused:
                log.exception("cTrader execution event dropped: %s", self.executions.popleft())
                continue
            event = await self._from_execution(execution)  # a failed lookup keeps it queued
            self.executions.popleft()
            if event is not None:
                out.append(msgspec.json.encode(event))
        return out

    async def _from_execution(self, execution: _Execution) -> AnyPlatformEvent | None:
        account_id = self.logins.get(execution.ctid_trader_account_id)
        if account_id is None:
            return None
        if execution.deal is not None and execution.execution_type in _FILLS:
            return await self._deal(account_id, execution.ctid_trader_account_id, execution.deal)
        if execution.deposit_withdraw is not None:
            return self._flow(account_id, execution.deposit_withdraw)
        return None

    async def _deal(self, account_id: str, ctid: int, deal: _Deal) -> DealExecuted | None:
        if deal.deal_status not in _FILLED or deal.filled_volume <= 0 or deal.execution_price <= 0:
            return None
        symbol, lot = await self._symbol(ctid, deal.symbol_id)
        detail = deal.close_position_detail
        ts_ns = ms_to_ns(deal.execution_timestamp)
        return DealExecuted(
            event_id=f"{self.config.server}:deal:{deal.deal_id}",
            ts_ns=ts_ns,
            account_id=account_id,
            deal_id=time_ordered_id(ts_ns, f"deal:{deal.deal_id}"),
            position_id=deal.position_id,
            symbol=symbol,
            entry=DealEntry.IN if detail is None else DealEntry.OUT,
            side=Side.BUY if deal.trade_side in _BUY else Side.SELL,
            volume=deal.filled_volume / lot,
            price=deal.execution_price,
            profit=scaled(detail.gross_profit, detail.money_digits) if detail else 0.0,
            commission=scaled(deal.commission, deal.money_digits),
            swap=scaled(detail.swap, detail.money_digits) if detail else 0.0,
        )

    def _flow(self, account_id: str, flow: _Flow) -> BalanceOperated:
        kind = flow.operation_type
        outgoing = kind in _WITHDRAWALS or (isinstance(kind, str) and "WITHDRAW" in kind)
        amount = abs(scaled(flow.delta, flow.money_digits))
        ts_ns = ms_to_ns(flow.change_balance_timestamp)
        return BalanceOperated(
            event_id=f"{self.config.server}:balance:{flow.balance_history_id}",
            ts_ns=ts_ns,
            account_id=account_id,
            deal_id=time_ordered_id(ts_ns, f"balance:{flow.balance_history_id}"),
            kind=_flow_kind(kind),
            amount=-amount if outgoing else amount,
        )

    async def history(self, account_id: str, since_ns: int) -> list[bytes]:
        ctid = self._ctid(account_id)
        since_ms, now_ms = since_ns // 1_000_000, now_ns() // 1_000_000
        events: list[AnyPlatformEvent] = []
        for deal in await self._deals(ctid, since_ms, now_ms):
            found = await self._deal(account_id, ctid, deal)
            if found is not None:
                events.append(found)
        events += [self._flow(account_id, f) for f in await self._flows(ctid, since_ms, now_ms)]
        events = [e for e in events if e.ts_ns >= since_ns]
        events.sort(key=lambda e: (e.ts_ns, getattr(e, "deal_id", 0)))
        return [msgspec.json.encode(e) for e in events]

    async def _deals(self, ctid: int, from_ms: int, to_ms: int) -> list[_Deal]:
        deals: dict[int, _Deal] = {}
        while True:
            page: _DealList = await self._ask(
                _DealList, DEAL_LIST_REQ, ctid, True, fromTimestamp=from_ms, toTimestamp=to_ms
            )
            new = [d for d in page.deal if d.deal_id not in deals]
            deals.update((d.deal_id, d) for d in new)
            if not page.has_more or not new:
                return sorted(deals.values(), key=lambda d: (d.execution_timestamp, d.deal_id))
            from_ms = max(d.execution_timestamp for d in new)  # inclusive: ties come again

    async def _flows(self, ctid: int, from_ms: int, to_ms: int) -> list[_Flow]:
        flows: dict[int, _Flow] = {}
        for start in range(from_ms, to_ms + 1, _WEEK_MS):
            end = min(start + _WEEK_MS - 1, to_ms)
            found: _CashFlow = await self._ask(
                _CashFlow, CASH_FLOW_REQ, ctid, True, fromTimestamp=start, toTimestamp=end
            )
            flows.update((f.balance_history_id, f) for f in found.deposit_withdraw)
        return list(flows.values())

    # State ------------------------------------------------------------------------------------

    async def positions(self, account_id: str) -> list[OpenPosition]:
        ctid = self._ctid(account_id)
        reconcile: _Reconcile = await self._ask(_Reconcile, RECONCILE_REQ, ctid)
        profits = await self._unrealized(ctid)
        found = []
        for position in reconcile.position:
            symbol, lot = await self._symbol(ctid, position.trade_data.symbol_id)
            found.append(
                OpenPosition(
                    position_id=position.position_id,
                    symbol=symbol,
                    side=Side.BUY if position.trade_data.trade_side in _BUY else Side.SELL,
                    volume=position.trade_data.volume / lot,
                    open_price=position.price,
                    profit_cents=profits.get(position.position_id, 0),
                )
            )
        return found

    async def _unrealized(self, ctid: int) -> dict[int, int]:
        """Net unrealized P&L per open position, in cents."""
        found: _PnlRes = await self._ask(_PnlRes, PNL_REQ, ctid)
        return {
            p.position_id: cents(scaled(p.net_unrealized_pnl, found.money_digits))
            for p in found.positions
        }

    async def account_state(self, account_id: str) -> AccountState:
        ctid = self._ctid(account_id)
        found: _TraderRes = await self._ask(_TraderRes, TRADER_REQ, ctid)
        trader = found.trader
        balance = cents(scaled(trader.balance, trader.money_digits))
        floating = sum((await self._unrealized(ctid)).values())
        return AccountState(
            account_id=account_id,
            currency=await self._currency(ctid, trader.deposit_asset_id),
            balance_cents=balance,
            credit_cents=0,  # cTrader has bonuses, not MetaTrader credit: not mapped
            equity_cents=balance + floating,
            enabled=trader.access_rights in _FULL_ACCESS,
        )

    # Commands ---------------------------------------------------------------------------------

    async def execute(self, commands: Sequence[AnyPlatformCommand]) -> list[int]:
        return [await self._execute(command) for command in commands]

    async def _execute(self, command: AnyPlatformCommand) -> int:
        ctid = self.config.accounts.get(command.account_id)
        if ctid is None or not command.account_id.isdigit():
            log.error("cTrader account %s is not configured (`accounts`)", command.account_id)
            return UNKNOWN_ACCOUNT
        if isinstance(command, CloseAllPositions):
            return await self._close_all(ctid)
        webservices = self.webservices
        if isinstance(command, OperateBalance) and webservices and command.kind in _BOOKABLE:
            return await self._operate_balance(command, ctid, webservices)
        log.error(
            "cTrader cannot carry out %s for %s: no documented API (see bridge.adapters.ctrader)",
            type(command).__name__,
            command.account_id,
        )
        return UNSUPPORTED

    async def _close_all(self, ctid: int) -> int:
        reconcile: _Reconcile = await self._ask(_Reconcile, RECONCILE_REQ, ctid)
        for position in reconcile.position:
            fields = {"positionId": position.position_id, "volume": position.trade_data.volume}
            try:
                await self._request(CLOSE_POSITION_REQ, {"ctidTraderAccountId": ctid, **fields})
            except CTraderRefusal as refusal:
                if refusal.error_code in _ERROR_NUMBERS:
                    return _ERROR_NUMBERS[refusal.error_code]
                if refusal.error_code not in _ALREADY_CLOSED:
                    raise
        return DONE

    async def _operate_balance(
        self, command: OperateBalance, ctid: int, webservices: _WebServices
    ) -> int:
        tag = comment_tag(command.command_id, _COMMENT_LENGTH)
        if await self._already_booked(ctid, tag):
            return DONE
        outgoing = command.kind is BalanceKind.WITHDRAWAL
        body = {
            "login": int(command.account_id),
            "preciseAmount": command.amount_cents / 100,
            "type": "WITHDRAW" if outgoing else "DEPOSIT",
            "comment": tag,
            "externalNote": tag,
            "externalId": tag,
        }
        return await webservices.change_balance(command.account_id, body)

    async def _already_booked(self, ctid: int, tag: str) -> bool:
        now_ms = now_ns() // 1_000_000
        flows = await self._flows(ctid, now_ms - self.config.dedupe_lookback_s * 1000, now_ms)
        return any(flow.external_note == tag for flow in flows)


def _flow_kind(kind: int | str) -> BalanceKind:
    if kind in (0, "BALANCE_DEPOSIT"):
        return BalanceKind.DEPOSIT
    if kind in (1, "BALANCE_WITHDRAW"):
        return BalanceKind.WITHDRAWAL
    return BalanceKind.CORRECTION  # commissions, fees, dividends, transfers, bonus moves...


if TYPE_CHECKING:
    _conforms: type[Platform] = CTraderOpenApi
