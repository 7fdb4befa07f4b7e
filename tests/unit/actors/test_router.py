"""Router: rendezvous hashing is stable everywhere, even, and moves few accounts on growth."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from actors.router import Router

IDS = [f"acc-{i:05d}" for i in range(10_000)]
ROOT = Path(__file__).resolve().parents[3]


def placement(router: Router, ids: list[str]) -> list[int]:
    return [router.shard_of(account_id) for account_id in ids]


def test_router_when_two_instances_then_every_account_lands_on_the_same_shard() -> None:
    assert placement(Router(4), IDS) == placement(Router(4), IDS)


def test_router_when_pickled_then_the_copy_places_accounts_identically() -> None:
    router = Router(7)
    before = placement(router, IDS[:500])

    copy = pickle.loads(pickle.dumps(router))

    assert copy.shard_count == 7
    assert placement(copy, IDS[:500]) == before


def test_router_when_pickled_then_the_cache_is_not_shipped() -> None:
    warm = Router(4)
    placement(warm, IDS)

    assert len(pickle.dumps(warm)) == len(pickle.dumps(Router(4)))


@pytest.mark.parametrize("hash_seed", ["0", "12345"])
def test_router_when_run_in_another_process_with_another_hash_seed_then_same_placement(
    hash_seed: str,
) -> None:
    code = (
        "import json, sys; from actors.router import Router; r = Router(5); "
        "print(json.dumps([r.shard_of(i) for i in json.load(sys.stdin)]))"
    )
    sample = IDS[:300]
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    result = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(sample),
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=env,
    )

    assert json.loads(result.stdout) == placement(Router(5), sample)


def test_router_when_10000_accounts_over_4_shards_then_each_within_15_percent_of_mean() -> None:
    counts = Counter(placement(Router(4), IDS))

    mean = len(IDS) / 4
    assert set(counts) == {0, 1, 2, 3}
    for shard, count in counts.items():
        assert abs(count - mean) <= 0.15 * mean, (shard, count)


def test_router_when_growing_from_4_to_5_shards_then_about_a_fifth_move_all_to_the_new() -> None:
    old, new = placement(Router(4), IDS), placement(Router(5), IDS)

    moved = [(a, b) for a, b in zip(old, new, strict=True) if a != b]

    assert 0.12 <= len(moved) / len(IDS) <= 0.28
    assert {b for _, b in moved} == {4}


@pytest.mark.parametrize("count", [0, -1])
def test_router_when_shard_count_below_one_then_value_error_names_it(count: int) -> None:
    with pytest.raises(ValueError, match=f"shard_count.*{count}"):
        Router(count)


def test_router_when_single_shard_then_everything_goes_to_shard_zero() -> None:
    assert set(placement(Router(1), IDS[:100])) == {0}
