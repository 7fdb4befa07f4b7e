"""`POST /webhooks/v1/kyc`: the document-verification provider's reports (`actors/
verification.py`), signed with the shared secret like platform pushes (`ledger/signing.py`).

A bad or missing signature, or a timestamp more than `TOLERANCE_S` from now, is refused (401)
before the body is read as JSON; a malformed report is a 400 naming the field. A duplicate or a
report older than the one we hold is answered 200 `stale` and changes nothing; a reference we
do not know is a 503 with `Retry-After` (a report can arrive before we recorded opening it: the
provider sends it again).
"""

from __future__ import annotations

import time

import msgspec
from aiohttp import web

from actors.verification import SIGNATURE_HEADER, TIMESTAMP_HEADER, Report
from api.app import json_response
from api.problems import problem
from api.services import KYC, KYC_WEBHOOK_SECRET
from ledger.signing import matches

TOLERANCE_S = 300.0
MAX_BODY_BYTES = 64 * 1024
_reports = msgspec.json.Decoder(Report)


async def kyc_webhook(request: web.Request) -> web.StreamResponse:
    if (request.content_length or 0) > MAX_BODY_BYTES:
        return problem(413, "Too large", f"a report is at most {MAX_BODY_BYTES} bytes")
    body = await request.read()
    if len(body) > MAX_BODY_BYTES:
        return problem(413, "Too large", f"a report is at most {MAX_BODY_BYTES} bytes")
    timestamp = request.headers.get(TIMESTAMP_HEADER, "")
    signature = request.headers.get(SIGNATURE_HEADER, "")
    if not timestamp.isdigit():
        return problem(401, "Unsigned request", f"{TIMESTAMP_HEADER} must be Unix seconds")
    if not matches(request.app[KYC_WEBHOOK_SECRET], timestamp, body, signature):
        detail = f"{SIGNATURE_HEADER} does not match the body and timestamp"
        return problem(401, "Bad signature", detail)
    skew = time.time() - int(timestamp)
    if abs(skew) > TOLERANCE_S:
        detail = f"{TIMESTAMP_HEADER} is {skew:+.0f} s from now; the tolerance is {TOLERANCE_S:g} s"
        return problem(401, "Stale request", detail)
    try:
        report = _reports.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return problem(400, "Malformed report", str(exc))
    outcome: str = await request.app[KYC].verification.remote(report)
    if outcome == "unknown":  # 503: a report can outrun our record of the verification
        detail = f"no verification {report.provider_ref!r} for trader {report.trader_id!r} (yet)"
        return problem(503, "Unknown verification", detail, headers={"Retry-After": "1"})
    return json_response({"outcome": outcome})
