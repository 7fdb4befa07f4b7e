"""Ray metrics of a bridge worker, tagged by platform connection.

`propvisor_bridge_breach_to_freeze_seconds` is the figure risk cares about: from the moment the
breaching event entered the bridge to the moment the platform carried out the freeze.
"""

from __future__ import annotations

from ray.util.metrics import Counter, Gauge, Histogram

LATENCY_BOUNDARIES = [0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 10]
"""Seconds, from 100 µs to 10 s (shared by the shards' histograms)."""


class BridgeMetrics:
    """One worker's instruments (created inside the actor)."""

    def __init__(self, connection: str) -> None:
        self.events = Counter(
            "propvisor_bridge_events_total",
            description="Platform events taken in (after validation and de-duplication).",
            tag_keys=("connection",),
        )
        self.rejected = Counter(
            "propvisor_bridge_rejected_total",
            description="Platform messages rejected at the edge (malformed).",
            tag_keys=("connection",),
        )
        self.commands = Counter(
            "propvisor_bridge_commands_total",
            description="Commands the platform carried out.",
            tag_keys=("connection",),
        )
        self.breach_to_freeze = Histogram(
            "propvisor_bridge_breach_to_freeze_seconds",
            description="From the breaching event entering the bridge to its freeze carried out.",
            boundaries=LATENCY_BOUNDARIES,
            tag_keys=("connection",),
        )
        self.retained = Gauge(
            "propvisor_bridge_retained_batches",
            description="Batches kept until a shard checkpoint holds them.",
            tag_keys=("connection",),
        )
        for metric in (
            self.events,
            self.rejected,
            self.commands,
            self.breach_to_freeze,
            self.retained,
        ):
            metric.set_default_tags({"connection": connection})
