"""Platform bridge: events and commands, decoding at the edge, the worker pool, the simulator."""
