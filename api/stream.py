"""The risk stream: `GET /api/v1/stream`, a websocket of the risk hub's messages (protocol:
`docs/stream.md`).

Each API process runs one `StreamServer`. Its reader task follows the hub with a cursor
(`RiskHub.read`, a long poll), keeps a mirror of the hub's state (the latest message of each
account and book, the open alerts, the recent breaches) and the last `ring_size` messages, each
JSON-encoded once. Every client has a filter and a bounded queue of pending messages, keyed so
that an account's newer row replaces its older one (and a book's newer exposure table its older
one): a client that falls behind gets the latest of each, not every step. A client with nothing
waiting is handed the batch's frame as built once for its filter (every client that keeps up
with the same filter shares it); the next read from the hub is already under way meanwhile. A
client whose queue passes `max_pending`, or whose socket has not taken a frame for
`max_stall_s`, is disconnected with a reason; the others are not slowed, because each client
has its own writer task.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Annotated, Any, Literal

import msgspec
from aiohttp import WSMsgType, web

from actors.alerts import SEVERITY_RANK, Severity
from actors.hub import (
    AccountUpdate,
    AlertAcknowledged,
    AlertRaised,
    BreachReported,
    ExposureUpdate,
    HubConfig,
    HubState,
    Read,
    StreamMessage,
)
from api.auth import Permission, Principal, allows
from api.problems import ApiError
from api.services import TOKENS

log = logging.getLogger(__name__)

Kind = Literal["account", "exposure", "alert", "breach", "event"]
_Names = Annotated[
    frozenset[Annotated[str, msgspec.Meta(max_length=128)]],
    msgspec.Meta(min_length=1, max_length=10_000),
]

CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_SLOW = 4008
CLOSE_PROTOCOL = 4400
MAX_OPEN_ALERTS = HubConfig().max_open_alerts


class Filter(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What a client wants; a field left out does not filter. Account filters (accounts,
    traders, plans, phases, symbols) narrow the messages about an account; firm-wide messages
    (exposure tables, alerts not about one account) pass them."""

    accounts: _Names | None = None
    traders: _Names | None = None
    plans: _Names | None = None
    phases: _Names | None = None
    symbols: _Names | None = None
    kinds: Annotated[frozenset[Kind], msgspec.Meta(min_length=1)] | None = None
    severity: Severity = "info"  # the least severe alert sent


class Resume(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    epoch: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    seq: Annotated[int, msgspec.Meta(ge=0)]


class Subscribe(
    msgspec.Struct, frozen=True, kw_only=True, tag="subscribe", forbid_unknown_fields=True
):
    token: Annotated[str, msgspec.Meta(max_length=256)] | None = None
    filters: Filter = Filter()
    resume: Resume | None = None


class Ping(msgspec.Struct, frozen=True, kw_only=True, tag="ping", forbid_unknown_fields=True):
    pass


ClientMessage = Subscribe | Ping
_decode_client = msgspec.json.Decoder(ClientMessage)
_decode_messages = msgspec.msgpack.Decoder(list[StreamMessage])
_json = msgspec.json.Encoder()
_DELTAS = b'{"type":"deltas","messages":['


class StreamConfig(msgspec.Struct, frozen=True, kw_only=True):
    ring_size: int = 100_000  # messages kept for clients that resume
    max_pending: int = 20_000  # messages a client may have waiting before it is dropped
    max_stall_s: float = 10.0  # a socket that takes no frame this long is dropped
    max_behind_s: float = 10.0  # a client whose bytes take longer to reach it is dropped
    probe_s: float = 1.0  # how often a websocket ping follows a frame, to time the way there
    heartbeat_s: float = 5.0  # a heartbeat message when nothing else was sent
    ping_s: float = 20.0  # websocket pings; a client that does not answer is closed
    auth_timeout_s: float = 5.0  # to send the first `subscribe` (with the token, from a browser)
    send_buffer_bytes: int | None = 262_144  # the kernel's send buffer per client (None: OS's)
    read_wait_s: float = 1.0  # the long poll on the hub
    max_frame_messages: int = 5_000  # deltas per frame


class Entry(msgspec.Struct, gc=False):
    """One message as the stream holds it: what filters look at, and its JSON, encoded once.
    Entries hold only immutable values, so the garbage collector need not track them (the ring
    keeps 100,000 of them, which a full collection would otherwise walk)."""

    seq: int
    kind: str
    data: bytes
    key: Any = None  # messages with the same key conflate; None: the seq (never conflates)
    account_id: str | None = None
    trader_id: str | None = None
    plan: str | None = None
    phase: str | None = None
    symbols: frozenset[str] = frozenset()
    severity: str | None = None

    def __post_init__(self) -> None:
        if self.key is None:
            self.key = self.seq


def matches(wanted: Filter, entry: Entry) -> bool:
    if wanted.kinds is not None and entry.kind not in wanted.kinds:
        return False
    if (
        entry.severity is not None
        and SEVERITY_RANK[entry.severity] < SEVERITY_RANK[wanted.severity]
    ):
        return False
    if entry.account_id is None:
        return True
    return (
        (wanted.accounts is None or entry.account_id in wanted.accounts)
        and (wanted.traders is None or entry.trader_id in wanted.traders)
        and (wanted.plans is None or entry.plan in wanted.plans)
        and (wanted.phases is None or entry.phase in wanted.phases)
        and (wanted.symbols is None or not wanted.symbols.isdisjoint(entry.symbols))
    )


class Client:
    """One websocket: its filter, its pending messages (keyed, so rows conflate) and its writer."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        wanted: Filter,
        config: StreamConfig,
        abort: Callable[[], None] = lambda: None,
    ) -> None:
        self.ws = ws
        self.abort = abort  # drops the connection without a goodbye
        self.filter = wanted
        self.config = config
        self.pending: dict[Any, Entry] = {}
        self.wake = asyncio.Event()
        self.closing: str | None = None
        self.close_code = CLOSE_SLOW
        self.done = False  # the writer has closed (or cut) the connection
        self.cut_scheduled = False
        self.sending_since: float | None = None
        # The websocket ping sent after a frame and not answered yet: (payload, when that
        # frame went out), and when the last one went out. The answer comes once the client
        # has read every byte before it, so its age is how far behind the client reads.
        self.probe: tuple[bytes, float] | None = None
        self.probed = -math.inf  # the first frame is followed by one
        self.probes = 0
        self.snapshot: bytes | None = None  # sent before anything pending
        # A deltas frame built once for every caught-up client of the same filter, and its
        # entries (which move to `pending` if another batch arrives before it is sent).
        self.shared: tuple[bytes, list[Entry]] | None = None
        self.sent = 0
        self.conflated = 0

    @property
    def caught_up(self) -> bool:
        return not self.pending and self.shared is None and self.snapshot is None

    def offer_frame(self, frame: bytes, entries: list[Entry]) -> None:
        """Offer `entries`, with `frame` already built from them: sent as it is if nothing
        is waiting, else the entries join the pending ones."""
        if self.closing is not None:
            return
        if self.caught_up:
            self.shared = (frame, entries)
            self.wake.set()
        else:
            self.offer(entries)

    def offer(self, entries: Iterable[Entry]) -> None:
        if self.closing is not None:
            return
        pending = self.pending
        if self.shared is not None:  # older than `entries`: they go first
            entries = itertools.chain(self.shared[1], entries)
            self.shared = None
        for entry in entries:
            if pending.pop(entry.key, None) is not None:
                self.conflated += 1
            pending[entry.key] = entry  # at the end: frames stay in sequence order
        if len(pending) > self.config.max_pending:
            self.drop(f"slow consumer: {len(pending)} messages pending")
        self.wake.set()

    def stalled(self, now: float) -> bool:
        since = self.sending_since
        return since is not None and now - since > self.config.max_stall_s

    def behind(self, now: float) -> bool:
        """A frame handed to the socket `max_behind_s` ago has not been read through yet:
        the ping that followed it is unanswered, or the frame itself is still going out. The
        client reads, but what it reads is that old (a steady slow reader, whose conflated
        queue never fills, but whose socket buffers hold seconds of frames). The second arm
        is the stall rule's test with this limit: whichever limit is lower decides."""
        oldest = min(
            self.probe[1] if self.probe is not None else now,
            self.sending_since if self.sending_since is not None else now,
        )
        return now - oldest > self.config.max_behind_s

    def answered(self, payload: bytes) -> None:
        """A pong arrived: the probe it answers is done."""
        probe = self.probe
        if probe is not None and payload == probe[0]:
            self.probe = None

    def drop(self, reason: str, code: int = CLOSE_SLOW) -> None:
        """Close with `reason` once the frame being sent is out (the stall check aborts a
        socket that never takes it)."""
        if self.closing is None:
            self.closing = reason
            self.close_code = code
            self.forget()
            self.snapshot = None
            self.wake.set()

    def forget(self) -> None:
        """Drop what is waiting (a new snapshot follows, or the connection closes)."""
        self.pending.clear()
        self.shared = None

    async def write_forever(self) -> None:
        try:
            await self._write()
        finally:
            try:
                await asyncio.wait_for(
                    self.ws.close(
                        code=self.close_code, message=(self.closing or "").encode()[:120]
                    ),
                    timeout=1.0,
                )
                self.done = True
            except Exception:  # the peer took neither the close frame nor its answer in time
                self.abort()
                self.done = True

    async def _write(self) -> None:
        config = self.config
        while self.closing is None:
            if self.caught_up:
                self.wake.clear()
                try:
                    async with asyncio.timeout(config.heartbeat_s):  # no task per wake
                        await self.wake.wait()
                except TimeoutError:
                    await self._send(_json.encode({"type": "heartbeat", "ts_ns": time.time_ns()}))
                    continue
                if self.closing is not None:
                    break
            if self.snapshot is not None:
                frame, self.snapshot = self.snapshot, None
                await self._send(frame)
                continue
            if self.shared is not None:
                (frame, entries), self.shared = self.shared, None
                await self._send(frame)
                self.sent += len(entries)
                continue
            batch = list(itertools.islice(self.pending.values(), config.max_frame_messages))
            if len(batch) == len(self.pending):
                self.pending.clear()
            else:
                for entry in batch:
                    del self.pending[entry.key]
            await self._send(deltas_frame(batch))
            self.sent += len(batch)

    async def _send(self, frame: bytes) -> None:
        self.sending_since = now = time.monotonic()
        await self.ws.send_frame(frame, WSMsgType.TEXT)
        if self.probe is None and now - self.probed >= self.config.probe_s:
            self.probes += 1
            self.probe, self.probed = (b"%d" % self.probes, now), now
            await self.ws.ping(self.probe[0])
        self.sending_since = None


def deltas_frame(entries: list[Entry]) -> bytes:
    return b"".join((_DELTAS, b",".join([e.data for e in entries]), b"]}"))


class Mirror:
    """The hub's state as this process last read it, each message encoded once."""

    def __init__(self) -> None:
        self.epoch: str | None = None
        self.seq = 0
        self.floor = 0  # the oldest cursor a client may resume from
        self.firm_currency = "USD"
        self.accounts: dict[str, Entry] = {}
        self.symbols: dict[str, frozenset[str]] = {}
        self.plans: dict[str, tuple[str, str]] = {}
        self.exposure: dict[str, Entry] = {}
        self.alerts: dict[str, Entry] = {}
        self.breaches: deque[Entry] = deque(maxlen=200)

    def reset(self, state: HubState) -> None:
        """Forget everything and start from the hub's `state`."""
        for table in (self.accounts, self.symbols, self.plans, self.exposure, self.alerts):
            table.clear()
        self.breaches.clear()
        self.epoch, self.seq, self.floor = state.epoch, state.seq, state.seq
        self.firm_currency = state.firm_currency
        for update in state.accounts:
            self.apply(update)
        for exposure in state.exposure:
            self.apply(exposure)
        for alert in state.alerts:
            self.apply(AlertRaised(seq=0, alert=alert))
        for breach in state.breaches:
            self.apply(breach)

    def apply(self, message: StreamMessage) -> Entry:
        """Fold a message in; its entry."""
        data = _json.encode(message)
        seq = message.seq
        if isinstance(message, AccountUpdate):
            row = message.row
            account_id = row.account_id
            now = row.symbols()
            symbols = now | self.symbols.get(account_id, frozenset())  # a closed one too
            self.symbols[account_id] = now
            self.plans[account_id] = (row.plan, row.phase)
            entry = Entry(
                seq,
                "account",
                data,
                ("a", account_id),
                account_id,
                message.trader_id,
                row.plan,
                row.phase,
                symbols,
            )
            self.accounts[account_id] = entry
            return entry
        if isinstance(message, ExposureUpdate):
            entry = Entry(seq, "exposure", data, ("x", message.book))
            self.exposure[message.book] = entry
            return entry
        if isinstance(message, AlertRaised):
            alert = message.alert
            entry = self._about(
                seq, "alert", data, alert.account_id, alert.trader_id, alert.severity
            )
            self.alerts[alert.id] = entry
            while len(self.alerts) > MAX_OPEN_ALERTS:  # as the hub: the oldest leave the view
                del self.alerts[next(iter(self.alerts))]
            return entry
        if isinstance(message, AlertAcknowledged):
            self.alerts.pop(message.alert_id, None)
            return self._about(
                seq, "alert", data, message.account_id, message.trader_id, message.severity
            )
        if isinstance(message, BreachReported):
            entry = self._about(seq, "breach", data, message.event.account_id, message.trader_id)
            self.breaches.append(entry)
            return entry
        return self._about(seq, "event", data, message.event.account_id, message.trader_id)

    def _about(
        self,
        seq: int,
        kind: str,
        data: bytes,
        account_id: str | None,
        trader_id: str | None,
        severity: str | None = None,
    ) -> Entry:
        plan, phase = self.plans.get(account_id or "", (None, None))
        symbols = self.symbols.get(account_id or "", frozenset())
        return Entry(seq, kind, data, None, account_id, trader_id, plan, phase, symbols, severity)

    def snapshot(self, wanted: Filter, reason: str) -> bytes:
        """Every current message the filter matches, as of `seq`, in one frame."""
        picked = [
            e.data
            for group in (
                self.exposure.values(),
                self.accounts.values(),
                self.alerts.values(),
                self.breaches,
            )
            for e in group
            if matches(wanted, e)
        ]
        head = _json.encode(
            {
                "type": "snapshot",
                "epoch": self.epoch,
                "seq": self.seq,
                "reason": reason,
                "firm_currency": self.firm_currency,
            }
        )
        return head[:-1] + b',"messages":[' + b",".join(picked) + b"]}"


class StreamServer:
    """One API process's side of the stream: the hub reader, the mirror, the clients."""

    def __init__(self, hub: Any, config: StreamConfig | None = None) -> None:
        self.hub = hub
        self.config = config or StreamConfig()
        self.mirror = Mirror()
        self.ring: deque[Entry] = deque(maxlen=self.config.ring_size)
        self.clients: set[Client] = set()
        self.dropped_slow = 0
        self.synced = asyncio.Event()
        self.resync = False  # a read failed: take a new state before going on
        self.ahead: asyncio.Future[Read] | None = None  # the next read, already asked for

    # -- the hub ------------------------------------------------------------------------------

    async def run_forever(self) -> None:
        try:
            await self._follow_forever()
        finally:
            self._forget_ahead()

    async def _follow_forever(self) -> None:
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("risk stream: reading the hub failed; retrying")
                self._forget_ahead()
                self.resync = True
                await asyncio.sleep(1.0)

    async def _follow(self) -> None:
        mirror = self.mirror
        if mirror.epoch is None or self.resync:  # starting, or the hub could not be read
            await self._reset("the risk hub was unreachable: resnapshot")
            self.resync = False
        ahead, self.ahead = self.ahead, None
        read: Read = await (ahead or self._read(mirror.seq))
        if read.reset:
            await self._reset("the risk hub restarted or this process fell behind")
            return
        if read.epoch == mirror.epoch:  # the next read waits at the hub while this one fans out
            self.ahead = self._read(read.seq)
        entries: list[Entry] = []
        for chunk in read.chunks:
            for message in _decode_messages.decode(chunk):
                if message.seq <= mirror.seq:
                    continue
                entries.append(mirror.apply(message))
                mirror.seq = message.seq
        if entries:
            self.ring.extend(entries)
            if len(self.ring) == self.ring.maxlen:
                mirror.floor = self.ring[0].seq - 1
            self._fan_out(entries)
        await asyncio.sleep(0)  # pongs that came while this batch was read are counted first
        self._check_stalls()

    def _read(self, after: int) -> asyncio.Future[Read]:
        pending: asyncio.Future[Read] = asyncio.ensure_future(
            self.hub.read.remote(self.mirror.epoch, after, self.config.read_wait_s)
        )
        return pending

    def _forget_ahead(self) -> None:
        if self.ahead is not None:
            self.ahead.cancel()
            self.ahead = None

    async def _reset(self, reason: str) -> None:
        self._forget_ahead()
        raw: bytes = await self.hub.state.remote()
        state = msgspec.msgpack.decode(raw, type=HubState)
        had_epoch = self.synced.is_set()
        self.mirror.reset(state)
        self.ring.clear()
        self.synced.set()
        if had_epoch:
            for client in self.clients:
                client.forget()
                client.snapshot = self.mirror.snapshot(client.filter, reason)
                client.wake.set()

    def _fan_out(self, entries: list[Entry]) -> None:
        """Each distinct filter is matched once, and its frame built once for all the clients
        with nothing waiting (most of them, when they keep up)."""
        by_filter: dict[Filter, list[Entry]] = {}
        frames: dict[Filter, bytes] = {}
        most = self.config.max_frame_messages
        for client in self.clients:
            wanted = client.filter
            picked = by_filter.get(wanted)
            if picked is None:
                picked = by_filter[wanted] = [e for e in entries if matches(wanted, e)]
            if not picked:
                continue
            if client.caught_up and len(picked) <= most:
                frame = frames.get(wanted)
                if frame is None:
                    frame = frames[wanted] = deltas_frame(picked)
                client.offer_frame(frame, picked)
            else:
                client.offer(picked)

    def _check_stalls(self) -> None:
        now = time.monotonic()
        loop = asyncio.get_running_loop()
        for client in list(self.clients):
            if client.cut_scheduled:
                continue
            if client.stalled(now):
                reason = f"no frame taken for {self.config.max_stall_s:g} s"
            elif client.behind(now):
                reason = f"more than {self.config.max_behind_s:g} s behind the stream"
            else:
                continue
            # Dropped now if it was not yet (for a full queue, say). The close frame waits
            # behind the bytes its socket has not taken, or has yet to read: a second, then
            # the connection is cut.
            client.drop(f"slow consumer: {reason}")
            client.cut_scheduled = True
            loop.call_later(1.0, _abort_unless_closed, client)

    # -- clients --------------------------------------------------------------------------------

    def attach(self, client: Client, resume: Resume | None) -> None:
        """Start a client at a snapshot, or, resuming, after the message it saw last."""
        mirror = self.mirror
        backlog: list[Entry] | None = None
        if (
            resume is not None
            and resume.epoch == mirror.epoch
            and mirror.floor <= resume.seq <= mirror.seq
        ):
            backlog = [e for e in self._after(resume.seq) if matches(client.filter, e)]
        # A backlog filling half the queue would only get the client dropped again: start over.
        if (
            resume is not None
            and backlog is not None
            and len(backlog) <= self.config.max_pending // 2
        ):
            client.snapshot = _json.encode(
                {"type": "resumed", "epoch": mirror.epoch, "after": resume.seq, "seq": mirror.seq}
            )
            client.offer(backlog)
        else:
            reason = "subscribe" if resume is None else "resume unavailable: resnapshot"
            client.snapshot = mirror.snapshot(client.filter, reason)
        self.clients.add(client)
        client.wake.set()

    def _after(self, seq: int) -> list[Entry]:
        ring = self.ring
        index = len(ring)
        while index > 0 and ring[index - 1].seq > seq:
            index -= 1
        return list(itertools.islice(ring, index, None))

    async def serve(self, request: web.Request) -> web.StreamResponse:
        """The websocket handler."""
        principal = await _header_principal(request)
        # Pings answered here, so that pongs reach the reader (they time the probes).
        ws = web.WebSocketResponse(
            heartbeat=self.config.ping_s, autoping=False, compress=False, max_msg_size=1 << 20
        )
        await ws.prepare(request)
        self._size_buffer(request)
        try:
            await asyncio.wait_for(self.synced.wait(), timeout=30.0)
        except TimeoutError:
            await ws.close(code=1013, message=b"the risk hub is not reachable yet; try again")
            return ws
        try:
            async with asyncio.timeout(self.config.auth_timeout_s):
                first = await ws.receive()
                while first.type in (WSMsgType.PING, WSMsgType.PONG):
                    if first.type == WSMsgType.PING:
                        await ws.pong(first.data)
                    first = await ws.receive()
        except TimeoutError:
            await ws.close(code=CLOSE_UNAUTHORIZED, message=b"unauthorized: no subscribe in time")
            return ws
        subscribe = await self._subscribe(ws, request, first, principal)
        if subscribe is None:
            return ws
        transport = request.transport
        client = Client(ws, subscribe.filters, self.config, transport.abort if transport else _no)
        self.attach(client, subscribe.resume)
        writer = asyncio.create_task(client.write_forever())
        reader = asyncio.create_task(self._read_client(ws, client))
        try:
            # Until the client goes, or the writer closes it (dropped: slow, or shutting down).
            await asyncio.wait((writer, reader), return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.clients.discard(client)
            if client.closing is not None and client.close_code == CLOSE_SLOW:
                self.dropped_slow += 1
                log.warning("risk stream: dropped a client: %s", client.closing)
            for task in (writer, reader):
                task.cancel()
            await asyncio.gather(writer, reader, return_exceptions=True)
        return ws

    def _size_buffer(self, request: web.Request) -> None:
        size = self.config.send_buffer_bytes
        sock = request.transport.get_extra_info("socket") if request.transport else None
        if size is not None and sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)

    async def _subscribe(
        self,
        ws: web.WebSocketResponse,
        request: web.Request,
        first: Any,
        principal: Principal | None,
    ) -> Subscribe | None:
        if first.type != WSMsgType.TEXT:
            await ws.close(code=CLOSE_PROTOCOL, message=b"expected a subscribe message")
            return None
        try:
            message = _decode_client.decode(first.data)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            await ws.close(code=CLOSE_PROTOCOL, message=f"invalid subscribe: {exc}".encode()[:120])
            return None
        if not isinstance(message, Subscribe):
            await ws.close(code=CLOSE_PROTOCOL, message=b"expected a subscribe message first")
            return None
        if principal is None:
            principal = (
                await request.app[TOKENS].principal(message.token) if message.token else None
            )
            if principal is None:
                await ws.close(
                    code=CLOSE_UNAUTHORIZED, message=b"unauthorized: a valid token is required"
                )
                return None
            if not allows(principal.role, Permission.RISK_READ):
                await ws.close(
                    code=CLOSE_FORBIDDEN,
                    message=f"forbidden: role {principal.role.value!r} lacks risk:read".encode(),
                )
                return None
        return message

    async def _read_client(self, ws: web.WebSocketResponse, client: Client) -> None:
        """Answer pings; a new subscribe changes the filter (and sends a new snapshot)."""
        async for message in ws:
            if client.closing is not None:
                return
            if message.type == WSMsgType.PING:
                await ws.pong(message.data)
                continue
            if message.type == WSMsgType.PONG:
                client.answered(message.data)
                continue
            if message.type != WSMsgType.TEXT:
                continue
            try:
                decoded = _decode_client.decode(message.data)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                await ws.send_frame(
                    _json.encode({"type": "error", "detail": str(exc)}), WSMsgType.TEXT
                )
                continue
            if isinstance(decoded, Ping):
                await ws.send_frame(
                    _json.encode({"type": "pong", "seq": self.mirror.seq}), WSMsgType.TEXT
                )
            else:
                self.clients.discard(client)
                client.filter = decoded.filters
                client.forget()
                self.attach(client, decoded.resume)


def _no() -> None:
    pass


def _abort_unless_closed(client: Client) -> None:
    if not client.done:
        client.abort()


async def _header_principal(request: web.Request) -> Principal | None:
    """The caller of an `Authorization: Bearer` header (refused before the upgrade if it is
    not valid or may not stream); None without one (a browser sends it in `subscribe`)."""
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    principal = None
    if scheme.lower() == "bearer" and token:
        principal = await request.app[TOKENS].principal(token.strip())
    if principal is None:
        raise ApiError(
            401,
            "Unauthorized",
            "a valid bearer token is required",
            headers={"WWW-Authenticate": 'Bearer realm="propvisor"'},
        )
    if not allows(principal.role, Permission.RISK_READ):
        raise ApiError(
            403, "Forbidden", f"role {principal.role.value!r} lacks the permission 'risk:read'"
        )
    return principal


STREAM = web.AppKey("stream", StreamServer)


def streaming(server: StreamServer) -> Callable[[web.Application], AsyncIterator[None]]:
    """The app's cleanup context: follow the hub while the app runs."""

    async def run(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(server.run_forever())
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    return run


async def say_goodbye(app: web.Application) -> None:
    """On shutdown, before aiohttp waits for open handlers: close every stream with 1001."""
    server = app.get(STREAM)
    if server is not None:
        for client in list(server.clients):
            client.drop("server shutting down", code=1001)


async def stream_handler(request: web.Request) -> web.StreamResponse:
    server = request.app.get(STREAM)
    if server is None:
        raise ApiError(503, "No risk stream", "this process runs without the risk hub")
    return await server.serve(request)
