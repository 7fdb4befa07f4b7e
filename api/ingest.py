"""Push ingestion: `POST /ingest/v1/{connection}/events`, for platforms that send us their events.

A request carries a batch of canonical events (`bridge/events.py`) as a JSON array
(`Content-Type: application/json`) or a msgpack array (`application/msgpack`), and two headers:

- `X-Propvisor-Timestamp`: Unix time in seconds when the request was signed;
- `X-Propvisor-Signature`: `sha256=` and the hex HMAC-SHA256, keyed with the connection's secret,
  of the timestamp, a `.`, and the raw body.

Refused as a whole, with an RFC 9457 problem: an unknown connection (404), a missing or wrong
signature (401), a timestamp further than `tolerance_s` from our clock (401, stale), a request
whose signature was already accepted within twice that window (409, replayed; two copies in
flight at once may both get a 200, the second with every event a `duplicate`), a body that is
not an array (400), more than `max_events` events (413; aiohttp refuses a body over 1 MiB with
a plain 413 before we see it). Otherwise each event is judged on its
own: `accepted` (stored now), `duplicate` (its event id was stored before, by this request or an
earlier one: it is applied once) or `rejected` (with the reason, naming the field). The answer
is sent only after the accepted events are committed to the inbox (`ledger/inbox.py`), from
which the bridge delivers them in order (`bridge/pushed.py`).

`GET /ingest/v1/{connection}/stream` is the same over a websocket, for platforms that keep a
connection open. The handshake carries the same two headers and may carry a third:

- `X-Propvisor-Nonce`: a string the client picks afresh for each handshake (say 16 random bytes
  in hex), 8 to 128 visible ASCII characters (`!` to `~`, no spaces);

and the signature is over the timestamp, a `.`, and `GET /ingest/v1/{connection}/stream`, then,
only if the nonce is sent, a newline (one byte, 0x0A) and the nonce (`handshake(connection,
nonce)`):

    1772442000.GET /ingest/v1/mt5-a/stream                                     (no nonce)
    1772442000.GET /ingest/v1/mt5-a/stream<LF>3f9c0e1a7b2d4c6e8a1f5b3d7c9e2a4f  (with one)

It is refused before the upgrade with the same problems (404, 401, 409 for a handshake signature
already used; 426 for a signed request that is not a websocket upgrade), and with a 401 for a
malformed nonce or one the signature does not cover. A signature is single-use and the timestamp
is in whole seconds, so a client opening more than one stream in a second (in parallel, or
reconnecting at once) sends a different nonce with each; without a nonce it must sign a later
second. Then each text frame (a JSON array) or binary frame (a msgpack
array) is one batch, judged as a POST body is and answered, after the accepted events are
committed, by one text frame: the POST's answer plus `batch`, the frame's number on this
connection counting from 1. A frame the POST would refuse whole (not an array: 400, too many
events: 413) is answered `{"batch": n, "error": <problem>}` and the connection stays open. Frames
are handled one at a time, in order. A frame over `MAX_BODY_BYTES` closes the connection (1009),
as does a failed inbox write (1011) and the server shutting down (1001): a batch left unanswered
may or may not be stored, and sent again it is answered as duplicates where it was.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import msgspec
from aiohttp import WSCloseCode, WSMsgType, web
from cachetools import TTLCache

from api.app import json_response, problem
from bridge.events import AnyPlatformEvent
from ledger.inbox import Inbox
from ledger.signing import matches, sign  # noqa: F401 (sign: what a platform sends)

log = logging.getLogger(__name__)

TIMESTAMP_HEADER = "X-Propvisor-Timestamp"
SIGNATURE_HEADER = "X-Propvisor-Signature"
NONCE_HEADER = "X-Propvisor-Nonce"  # stream handshake only
NONCE_LENGTH = (8, 128)
# aiohttp's default `client_max_size`, which bounds a POST body: a stream frame gets the same.
MAX_BODY_BYTES = 1024**2

_json_events = msgspec.json.Decoder(AnyPlatformEvent)
_msgpack_events = msgspec.msgpack.Decoder(AnyPlatformEvent)
_json_items = msgspec.json.Decoder(list[msgspec.Raw])
_msgpack_items = msgspec.msgpack.Decoder(list[msgspec.Raw])
_Decoder = msgspec.json.Decoder[Any] | msgspec.msgpack.Decoder[Any]
_decoders: dict[str, tuple[_Decoder, _Decoder]] = {
    "application/json": (_json_items, _json_events),
    "application/msgpack": (_msgpack_items, _msgpack_events),
}


def handshake(connection: str, nonce: str | None = None) -> bytes:
    """What a stream handshake's signature covers after the timestamp and `.`: the request line,
    then, if the handshake sends `nonce`, a newline and the nonce."""
    line = f"GET /ingest/v1/{connection}/stream"
    return (line if nonce is None else f"{line}\n{nonce}").encode()


def handshake_nonce(headers: Any) -> str | None:
    """The handshake's nonce, None if it sends none; `Refusal` if it is malformed."""
    nonce: str | None = headers.get(NONCE_HEADER)
    if nonce is None:
        return None
    shortest, longest = NONCE_LENGTH
    if not (shortest <= len(nonce) <= longest and all("!" <= c <= "~" for c in nonce)):
        raise Refusal(
            401,
            "Bad nonce",
            f"{NONCE_HEADER} must be {shortest} to {longest} visible ASCII characters (no spaces)",
        )
    return nonce


class IngestConfig(msgspec.Struct, frozen=True, kw_only=True):
    secrets: dict[str, bytes]  # connection -> HMAC key
    tolerance_s: float = 300.0
    max_events: int = 10_000
    heartbeat_s: float = 30.0  # stream: ping this often, close if no pong within half of it


class Refusal(Exception):
    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail


class ItemResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    index: int
    status: str  # accepted, duplicate, rejected
    event_id: str | None = None
    reason: str | None = None


class IngestAnswer(msgspec.Struct, kw_only=True, omit_defaults=True):
    accepted: int
    duplicates: int
    rejected: int
    results: list[ItemResult]
    batch: int | None = None  # stream only: the frame's number on its connection


class Problem(msgspec.Struct, kw_only=True):
    """An RFC 9457 problem, as a stream sends it inside an answer."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str


class BatchError(msgspec.Struct, kw_only=True):
    """A stream's answer to a frame refused whole: nothing of it was stored."""

    batch: int
    error: Problem


class Ingestion:
    """The endpoint's state: the secrets, the inbox, and the signatures recently accepted."""

    def __init__(self, config: IngestConfig, inbox: Inbox) -> None:
        self.config = config
        self.inbox = inbox
        self.accepted_signatures: TTLCache[str, None] = TTLCache(
            maxsize=1_000_000, ttl=2 * config.tolerance_s
        )
        self.streams: set[web.WebSocketResponse] = set()  # open, to close on shutdown

    def verify(self, connection: str, headers: Any, body: bytes, signed: str = "body") -> str:
        """The request's signature of `body` if it may be processed; else `Refusal` (which
        calls `body` by the name `signed`)."""
        secret = self.config.secrets.get(connection)
        if secret is None:
            raise Refusal(404, "Unknown connection", f"no push connection {connection!r}")
        timestamp = headers.get(TIMESTAMP_HEADER, "")
        signature = headers.get(SIGNATURE_HEADER, "")
        if not timestamp.isdigit():
            raise Refusal(401, "Unsigned request", f"{TIMESTAMP_HEADER} must be Unix seconds")
        if not matches(secret, timestamp, body, signature):
            raise Refusal(
                401,
                "Bad signature",
                f"{SIGNATURE_HEADER} does not match the {signed} and timestamp",
            )
        skew = time.time() - int(timestamp)
        if abs(skew) > self.config.tolerance_s:
            raise Refusal(
                401,
                "Stale request",
                f"{TIMESTAMP_HEADER} is {skew:+.0f} s from now; the tolerance is "
                f"{self.config.tolerance_s:g} s",
            )
        if signature in self.accepted_signatures:
            raise Refusal(409, "Replayed request", "this signed request was already accepted")
        return str(signature)

    def items(self, content_type: str, body: bytes) -> tuple[list[msgspec.Raw], Any]:
        decoders = _decoders.get(content_type)
        if decoders is None:
            raise Refusal(
                415, "Unsupported media type", "send application/json or application/msgpack"
            )
        items_decoder, event_decoder = decoders
        try:
            items: list[msgspec.Raw] = items_decoder.decode(body)
        except msgspec.DecodeError as exc:
            detail = f"the body must be an array of events: {exc}"
            raise Refusal(400, "Malformed body", detail) from exc
        if len(items) > self.config.max_events:
            raise Refusal(
                413, "Too many events", f"{len(items)} events; at most {self.config.max_events}"
            )
        return items, event_decoder

    async def ingest_body(self, connection: str, content_type: str, body: bytes) -> IngestAnswer:
        """Decode `body` and ingest its events; `Refusal` if it is refused whole."""
        items, decoder = self.items(content_type, body)
        return await self.ingest(connection, items, decoder)

    async def ingest(self, connection: str, items: list[msgspec.Raw], decoder: Any) -> IngestAnswer:
        results: list[ItemResult] = []
        batch: dict[str, bytes] = {}  # first of each event id in this request
        for index, item in enumerate(items):
            try:
                event = decoder.decode(item)
            except msgspec.DecodeError as exc:
                results.append(ItemResult(index=index, status="rejected", reason=str(exc)))
                continue
            results.append(ItemResult(index=index, status="accepted", event_id=event.event_id))
            batch.setdefault(event.event_id, msgspec.json.encode(event))
        stored = await self.inbox.accept(connection, list(batch.items()))
        first: set[str] = set()
        for result in results:
            if result.event_id is None:
                continue
            if result.event_id not in stored or result.event_id in first:
                result.status = "duplicate"
            first.add(result.event_id)
        counts = {s: sum(r.status == s for r in results) for s in ("accepted", "duplicate")}
        return IngestAnswer(
            accepted=counts["accepted"],
            duplicates=counts["duplicate"],
            rejected=len(results) - counts["accepted"] - counts["duplicate"],
            results=results,
        )


INGESTION = web.AppKey("ingestion", Ingestion)


async def post_events(request: web.Request) -> web.Response:
    ingestion = request.app[INGESTION]
    connection = request.match_info["connection"]
    body = await request.read()
    try:
        signature = ingestion.verify(connection, request.headers, body)
        answer = await ingestion.ingest_body(connection, request.content_type, body)
    except Refusal as refusal:
        return problem(refusal.status, refusal.title, refusal.detail)
    ingestion.accepted_signatures[signature] = None  # only once stored: a failed write may retry
    return json_response(answer)


async def stream_events(request: web.Request) -> web.StreamResponse:
    """Verify the handshake, upgrade, then answer each frame as one batch until either side
    closes."""
    ingestion = request.app[INGESTION]
    connection = request.match_info["connection"]
    ws = web.WebSocketResponse(
        heartbeat=ingestion.config.heartbeat_s, max_msg_size=MAX_BODY_BYTES, decode_text=False
    )
    try:
        nonce = handshake_nonce(request.headers)
        signed = "handshake" if nonce is None else "handshake, nonce"
        message = handshake(connection, nonce)
        signature = ingestion.verify(connection, request.headers, message, signed=signed)
    except Refusal as refusal:
        return problem(refusal.status, refusal.title, refusal.detail)
    if not ws.can_prepare(request).ok:
        refused = problem(426, "Upgrade required", "open this endpoint as a websocket")
        refused.headers["Upgrade"] = "websocket"
        return refused
    # Recorded before the first await: a copy of this handshake arriving meanwhile is a 409.
    ingestion.accepted_signatures[signature] = None
    await ws.prepare(request)
    ingestion.streams.add(ws)
    try:
        await serve_stream(ingestion, connection, ws)
    finally:
        ingestion.streams.discard(ws)
    return ws


_answers = msgspec.json.Encoder()
_FRAME_TYPES = {WSMsgType.TEXT: "application/json", WSMsgType.BINARY: "application/msgpack"}


async def serve_stream(ingestion: Ingestion, connection: str, ws: web.WebSocketResponse) -> None:
    """Answer each data frame in turn; aiohttp answers pings and closes on its own."""
    batch = 0
    async for message in ws:
        content_type = _FRAME_TYPES.get(message.type)
        if content_type is None:
            continue  # an ERROR: aiohttp has closed the connection (1009 for a frame too big)
        batch += 1
        try:
            answer = await answer_frame(ingestion, connection, batch, content_type, message.data)
        except Exception:
            log.exception("push stream %r: batch %d failed; closing", connection, batch)
            await ws.close(code=WSCloseCode.INTERNAL_ERROR, message=b"inbox write failed")
            return
        try:
            await ws.send_frame(_answers.encode(answer), WSMsgType.TEXT)
        except ConnectionResetError:
            return  # closed meanwhile; the client sends the unanswered batch again


async def answer_frame(
    ingestion: Ingestion, connection: str, batch: int, content_type: str, data: bytes
) -> IngestAnswer | BatchError:
    """Batch number `batch` ingested, or the reason it was refused whole."""
    try:
        answer = await ingestion.ingest_body(connection, content_type, data)
    except Refusal as refusal:
        error = Problem(title=refusal.title, status=refusal.status, detail=refusal.detail)
        return BatchError(batch=batch, error=error)
    answer.batch = batch
    return answer


async def close_streams(app: web.Application) -> None:
    """Close every open stream (1001) so that shutting down does not wait on them."""
    streams = list(app[INGESTION].streams)
    await asyncio.gather(
        *(ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown") for ws in streams)
    )


def add_ingestion(app: web.Application, ingestion: Ingestion) -> None:
    """Serve push ingestion on `app`: the POST endpoint and the websocket stream."""
    app[INGESTION] = ingestion
    app.router.add_post("/ingest/v1/{connection}/events", post_events)
    app.router.add_get("/ingest/v1/{connection}/stream", stream_events, allow_head=False)
    app.on_shutdown.append(close_streams)
