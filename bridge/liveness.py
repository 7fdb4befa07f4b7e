"""Liveness: what every actor answers to its supervisor's ping (bridge and actors alike)."""

from __future__ import annotations

import os

import msgspec
import ray


class Pulse(msgspec.Struct, frozen=True):
    """Which process and Ray node answered; a new pid between two answers is a restart."""

    pid: int
    node: str
    trouble: str = ""  # answering, but something it depends on fails (an open circuit)


def pulse(trouble: str = "") -> Pulse:
    """This process's pulse."""
    return Pulse(os.getpid(), ray.get_runtime_context().get_node_id(), trouble)
