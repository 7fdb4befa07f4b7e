"""Crash-only recovery, end to end: a run broken in the middle ends exactly as a clean one.

Real Ray, real PostgreSQL, the real bridge and shards; the platform is the simulator. The stream
is recorded once and run twice on fresh databases (`loadtests.recovery`); the faulty run kills a
shard process with SIGKILL, or removes a whole node of a two-node cluster.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from loadtests.recovery import Options, Result, compare_runs, kill_a_shard
from tests.database import admin_url

pytestmark = pytest.mark.postgres


def assert_recovered(result: Result) -> None:
    comparison = result.comparison
    assert comparison.failed > 0, "the stream must make accounts fail, or freezes go untested"
    assert comparison.different_accounts == []
    assert (comparison.journal_only_clean, comparison.journal_only_faulty) == (0, 0)
    assert comparison.freezes_not_once == {}
    assert result.faulty.frozen == result.faulty.failed  # every breach frozen, by the platform
    assert comparison.equal


@pytest.mark.usefixtures("ray_session")
async def test_shard_killed_mid_stream_then_states_breaches_and_freezes_equal_a_clean_run() -> None:
    options = Options(accounts=100, seconds=30.0, admin_url=admin_url())

    result = await compare_runs(options, kill_a_shard)

    assert result.faulty.fault.startswith("killed shard")
    # The kill lost work the bridge had to deliver again (the fault really cost something).
    assert result.faulty.redelivered + result.faulty.delivery_retries > 0
    assert_recovered(result)


def test_node_removed_mid_stream_then_its_shards_recover_on_the_other_node(tmp_path: Path) -> None:
    # Its own process: the two-node cluster must not share a Ray with the rest of the suite.
    out = tmp_path / "recovery.json"
    command = [sys.executable, "-m", "loadtests", "recovery", "--fault", "node",
               "--accounts", "100", "--seconds", "30", "--admin-url", admin_url(),
               "--json", str(out)]  # fmt: skip

    finished = subprocess.run(command, capture_output=True, text=True, timeout=600)

    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    result = msgspec.json.decode(out.read_bytes(), type=Result)
    assert "removed worker node" in result.faulty.fault
    assert "hosting shards []" not in result.faulty.fault
    assert result.faulty.delivery_retries > 0  # its shards were unreachable, then came back
    assert_recovered(result)
