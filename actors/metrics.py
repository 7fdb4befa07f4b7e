"""Ray metrics of the account shards, tagged by shard (never by account: the label set stays small).

Exported by every Ray node's metrics agent, so the Ray dashboard and a Prometheus scrape see them
with the `ray_` prefix (for example `ray_propvisor_shard_events_total`). `docs/operations.md`
says which to watch.
"""

from __future__ import annotations

from ray.util.metrics import Counter, Gauge, Histogram

from bridge.metrics import LATENCY_BOUNDARIES


class ShardMetrics:
    """One shard's instruments (created inside the actor: Ray pickles actor classes by value)."""

    def __init__(self, shard: str) -> None:
        tags = {"shard": shard}
        self.events = Counter(
            "propvisor_shard_events_total",
            description="Platform events applied by the shard (ticks included).",
            tag_keys=("shard",),
        )
        self.evaluations = Counter(
            "propvisor_shard_evaluations_total",
            description="Account evaluations (an account event, or a tick that left its band).",
            tag_keys=("shard",),
        )
        self.breaches = Counter(
            "propvisor_shard_breaches_total",
            description="Rule breaches found.",
            tag_keys=("shard",),
        )
        self.batch_seconds = Histogram(
            "propvisor_shard_batch_seconds",
            description="Time to apply one delivered batch.",
            boundaries=LATENCY_BOUNDARIES,
            tag_keys=("shard",),
        )
        self.checkpoint_seconds = Histogram(
            "propvisor_shard_checkpoint_seconds",
            description="Time to write one checkpoint (journal, snapshots, recovery point).",
            boundaries=LATENCY_BOUNDARIES,
            tag_keys=("shard",),
        )
        self.accounts = Gauge(
            "propvisor_shard_accounts",
            description="Accounts hosted by the shard.",
            tag_keys=("shard",),
        )
        self.unconfirmed = Gauge(
            "propvisor_shard_unconfirmed_freezes",
            description="Freezes sent and not yet confirmed by the platform.",
            tag_keys=("shard",),
        )
        for metric in (
            self.events,
            self.evaluations,
            self.breaches,
            self.batch_seconds,
            self.checkpoint_seconds,
            self.accounts,
            self.unconfirmed,
        ):
            metric.set_default_tags(tags)
