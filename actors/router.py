"""Account placement: which shard hosts an account. One router, used by every caller."""

from __future__ import annotations

import hashlib


class Router:
    """Rendezvous (highest-random-weight) hashing of account ids over `shard_count` shards.

    Stable across processes and restarts (no salted `hash()`), and changing the shard count moves
    only the accounts whose winning shard changed, about 1/N of them.
    """

    def __init__(self, shard_count: int) -> None:
        if shard_count < 1:
            raise ValueError(f"shard_count must be at least 1, got {shard_count}")
        self.shard_count = shard_count
        self._cache: dict[str, int] = {}

    def shard_of(self, account_id: str) -> int:
        shard = self._cache.get(account_id)
        if shard is None:
            shard = max(range(self.shard_count), key=lambda s: _weight(s, account_id))
            self._cache[account_id] = shard
        return shard

    def __reduce__(self) -> tuple[type[Router], tuple[int]]:
        return Router, (self.shard_count,)  # ship the rule, not the cache


def _weight(shard: int, account_id: str) -> int:
    digest = hashlib.blake2b(f"{shard}\x00{account_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")
