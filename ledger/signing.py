"""HMAC-SHA256 request signatures, one scheme for every signed push we accept (platform
ingestion, the KYC provider's webhooks): the hex digest of `timestamp + "." + body` under the
shared secret, sent as `sha256=<hex>` with the Unix timestamp in its own header."""

from __future__ import annotations

import hashlib
import hmac


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The signature header value for `body` signed at `timestamp`."""
    digest = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def matches(secret: bytes, timestamp: str, body: bytes, signature: str) -> bool:
    """Whether `signature` is `body`'s at `timestamp` (compared in constant time)."""
    return signature.isascii() and hmac.compare_digest(sign(secret, timestamp, body), signature)
