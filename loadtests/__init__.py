"""Load tests and benchmarks (`python -m loadtests SCENARIO`, `make bench`).

Empty for now: the scenarios, the ground-truth oracle runs and the figures arrive with the load-test
issue. Until then the only measured run is `propvisor demo --json`, whose summary includes
breach-to-freeze latency and the simulator's ground truth.
"""
