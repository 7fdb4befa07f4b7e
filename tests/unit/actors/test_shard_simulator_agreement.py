"""The entity and the simulator's oracle agree on who breached, whatever the market does.

The simulator keeps its own brute-force equity; the shard hosts account entities fed with the very
messages the simulator sends, decoded at the edge as the bridge does. Both must find the same
breaches, at the same event, under the same rule.
"""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.plans import Plan
from actors.shard import ShardCore
from bridge.codec import decode_messages
from bridge.commands import DisableTrading
from bridge.simulator import Limits, PlatformSimulator, SimulatorConfig

ACCOUNTS = [f"acc-{i:02d}" for i in range(50)]


def plan_for(limits: Limits) -> Plan:
    """The plan the simulator's limits describe, built here independently of the runtime."""
    return msgspec.convert(
        {
            "id": "sim",
            "name": "sim",
            "initial_balance": limits.initial_balance,
            "day_rollover": {"timezone": limits.day_timezone},
            "phases": [
                {
                    "name": "challenge",
                    "daily_loss": {"pct": limits.daily_loss_pct},
                    "max_loss": {"pct": limits.max_loss_pct},
                }
            ],
        },
        type=Plan,
    )


def pump(sim: PlatformSimulator, shard: ShardCore) -> None:
    """One bridge round trip: fetch, decode at the edge, apply, send the freezes back."""
    events, rejections = decode_messages(sim.take(1_000_000))
    assert rejections == []
    effects = shard.apply(events).effects
    sim.execute([e for e in effects if isinstance(e, DisableTrading)])


def run(config: SimulatorConfig, intervals: list[float]) -> tuple[PlatformSimulator, ShardCore]:
    sim = PlatformSimulator(config)
    shard = ShardCore(shard=0)
    shard.register((account_id, plan_for(config.limits)) for account_id in ACCOUNTS)
    # The market is open before anyone trades, so the book has every symbol (as in production).
    sim.advance(2.0)
    pump(sim, shard)
    assert set(shard.market.book) == set(sim.instruments)
    sim.provision(ACCOUNTS)
    for seconds in intervals:
        sim.advance(seconds)
        pump(sim, shard)
    pump(sim, shard)  # the last confirmations
    return sim, shard


def assert_agree(sim: PlatformSimulator, shard: ShardCore) -> None:
    crossed = sim.report().crossed
    assert set(shard.breached()) == set(crossed)
    for account_id, crossing in crossed.items():
        breach = shard.accounts[account_id].breach
        assert breach is not None
        assert (breach.caused_by, breach.rule.value) == (crossing.event_id, crossing.rule)
        assert (breach.value, breach.limit) == (crossing.equity, crossing.floor)
    frozen = {a.account_id for a in shard.accounts.values() if a.frozen is not None}
    assert frozen == set(sim.report().disabled) == set(crossed)


@settings(max_examples=25, deadline=None, database=None)
@given(
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    reckless_fraction=st.floats(min_value=0.2, max_value=0.6),
    reckless_risk=st.floats(min_value=300.0, max_value=1_500.0),
    intervals=st.lists(st.floats(min_value=0.05, max_value=1.0), min_size=2, max_size=6),
)
def test_breaches_when_shard_is_fed_the_simulator_stream_then_they_equal_oracle_crossings(
    seed: int, reckless_fraction: float, reckless_risk: float, intervals: list[float]
) -> None:
    config = SimulatorConfig(
        seed=seed,
        trades_per_trader_per_minute=60.0,
        reckless_fraction=reckless_fraction,
        reckless_risk_per_tick=reckless_risk,
    )

    assert_agree(*run(config, intervals))


def test_breaches_when_seed_1_reckless_run_then_agreement_is_not_vacuous() -> None:
    config = SimulatorConfig(
        seed=1, trades_per_trader_per_minute=60.0, reckless_fraction=0.4, reckless_risk_per_tick=900
    )

    sim, shard = run(config, [0.5] * 8)

    assert len(sim.report().crossed) >= 3
    assert len(sim.report().crossed) < len(ACCOUNTS)
    assert_agree(sim, shard)
