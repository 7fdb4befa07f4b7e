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
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

import msgspec
from aiohttp import web
from cachetools import TTLCache

from api.app import json_response, problem
from bridge.events import AnyPlatformEvent
from ledger.inbox import Inbox

TIMESTAMP_HEADER = "X-Propvisor-Timestamp"
SIGNATURE_HEADER = "X-Propvisor-Signature"

_json_events = msgspec.json.Decoder(AnyPlatformEvent)
_msgpack_events = msgspec.msgpack.Decoder(AnyPlatformEvent)
_json_items = msgspec.json.Decoder(list[msgspec.Raw])
_msgpack_items = msgspec.msgpack.Decoder(list[msgspec.Raw])
_Decoder = msgspec.json.Decoder[Any] | msgspec.msgpack.Decoder[Any]
_decoders: dict[str, tuple[_Decoder, _Decoder]] = {
    "application/json": (_json_items, _json_events),
    "application/msgpack": (_msgpack_items, _msgpack_events),
}


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The signature header value for `body` signed at `timestamp` (what a platform sends)."""
    digest = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


class IngestConfig(msgspec.Struct, frozen=True, kw_only=True):
    secrets: dict[str, bytes]  # connection -> HMAC key
    tolerance_s: float = 300.0
    max_events: int = 10_000


class Refusal(Exception):
    def __init__(self, status: int, title: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail = status, title, detail


class ItemResult(msgspec.Struct, kw_only=True, omit_defaults=True):
    index: int
    status: str  # accepted, duplicate, rejected
    event_id: str | None = None
    reason: str | None = None


class IngestAnswer(msgspec.Struct, kw_only=True):
    accepted: int
    duplicates: int
    rejected: int
    results: list[ItemResult]


class Ingestion:
    """The endpoint's state: the secrets, the inbox, and the signatures recently accepted."""

    def __init__(self, config: IngestConfig, inbox: Inbox) -> None:
        self.config = config
        self.inbox = inbox
        self.accepted_signatures: TTLCache[str, None] = TTLCache(
            maxsize=1_000_000, ttl=2 * config.tolerance_s
        )

    def verify(self, connection: str, headers: Any, body: bytes) -> str:
        """The request's signature if it may be processed; else `Refusal`."""
        secret = self.config.secrets.get(connection)
        if secret is None:
            raise Refusal(404, "Unknown connection", f"no push connection {connection!r}")
        timestamp = headers.get(TIMESTAMP_HEADER, "")
        signature = headers.get(SIGNATURE_HEADER, "")
        if not timestamp.isdigit():
            raise Refusal(401, "Unsigned request", f"{TIMESTAMP_HEADER} must be Unix seconds")
        if not signature.isascii() or not hmac.compare_digest(
            sign(secret, timestamp, body), signature
        ):
            raise Refusal(
                401, "Bad signature", f"{SIGNATURE_HEADER} does not match the body and timestamp"
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
        items, decoder = ingestion.items(request.content_type, body)
    except Refusal as refusal:
        return problem(refusal.status, refusal.title, refusal.detail)
    answer = await ingestion.ingest(connection, items, decoder)
    ingestion.accepted_signatures[signature] = None  # only once stored: a failed write may retry
    return json_response(answer)


def add_ingestion(app: web.Application, ingestion: Ingestion) -> None:
    """Serve push ingestion on `app`."""
    app[INGESTION] = ingestion
    app.router.add_post("/ingest/v1/{connection}/events", post_events)
