"""What one Ray actor costs: creation time and resident memory (`python -m loadtests.actor_cost`).

The reason accounts are entities hosted in shard actors rather than one Ray actor each.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from typing import Any

import psutil
import ray


class Probe:
    def pid(self) -> int:
        return os.getpid()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--actors", type=int, default=20)
    count = parser.parse_args().actors
    ray.init(include_dashboard=False, configure_logging=False, log_to_driver=False)
    remote: Any = ray.remote(num_cpus=0)(Probe)
    started = time.perf_counter()
    actors = [remote.remote() for _ in range(count)]
    pids: list[int] = ray.get([a.pid.remote() for a in actors])
    elapsed = time.perf_counter() - started
    rss = statistics.median(psutil.Process(p).memory_info().rss for p in pids) / 2**20
    ray.shutdown()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Ray {ray.__version__}")
    print(f"{count} actors ready in {elapsed:.1f} s ({elapsed / count:.2f} s each)")
    print(f"median RSS per actor process: {rss:.0f} MiB")


if __name__ == "__main__":
    main()
