"""Sanity checks on inbound prices, past what a single message's schema can say.

`PriceTicked` itself refuses a crossed quote (ask below bid) and non-finite or non-positive
prices. `TickGuard` refuses what is only absurd in context: a spread wider than `max_spread` of
the mid, or a mid that jumps more than `max_jump` from the last accepted one on its symbol (the
2024 crossed-market incident filled trades at impossible prices; one bad quote must not breach
or pass an account). A real level shift is not refused forever: a refused mid becomes the
candidate level, and the next tick within `max_jump` of it is accepted, so a genuine gap (a
central-bank surprise) costs one tick, while a lone bad print costs nothing.
"""

from __future__ import annotations

import msgspec

from bridge.events import PriceTicked


class TickLimits(msgspec.Struct, frozen=True, kw_only=True):
    max_jump: float = 0.2  # a fraction of the last accepted mid
    max_spread: float = 0.05  # a fraction of the mid


class TickGuard:
    """Per connection: the last accepted mid of each symbol, and a candidate after a refusal."""

    def __init__(self, limits: TickLimits) -> None:
        self.limits = limits
        self.accepted: dict[str, float] = {}
        self.candidate: dict[str, float] = {}

    def refuse(self, tick: PriceTicked) -> str | None:
        """Why `tick` is refused, or None (then it is the symbol's new reference)."""
        mid = (tick.bid + tick.ask) / 2
        spread = (tick.ask - tick.bid) / mid
        if spread > self.limits.max_spread:
            return (
                f"{tick.event_id}: {tick.symbol} spread {spread:.2%} of the mid is wider than "
                f"{self.limits.max_spread:.2%}"
            )
        last = self.accepted.get(tick.symbol)
        if last is not None and abs(mid / last - 1) > self.limits.max_jump:
            candidate = self.candidate.get(tick.symbol)
            if candidate is None or abs(mid / candidate - 1) > self.limits.max_jump:
                self.candidate[tick.symbol] = mid
                return (
                    f"{tick.event_id}: {tick.symbol} mid {mid:g} moved {mid / last - 1:+.2%} "
                    f"from the last accepted {last:g} (limit {self.limits.max_jump:.0%})"
                )
        self.accepted[tick.symbol] = mid
        self.candidate.pop(tick.symbol, None)
        return None
