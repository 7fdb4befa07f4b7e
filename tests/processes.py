"""Processes the tests start: `propvisor simulate` as its own OS process."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class Process:
    """The simulator process: its URL, and its exit status once it ended."""

    def __init__(self, url: str, process: asyncio.subprocess.Process) -> None:
        self.url = url
        self.process = process

    @property
    def returncode(self) -> int | None:
        return self.process.returncode


@asynccontextmanager
async def simulate(*options: str) -> AsyncIterator[Process]:
    """`python -m api.cli simulate --port 0 ...`, terminated (SIGTERM) on the way out."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "api.cli", "simulate", "--port", "0", *options,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), timeout=60)
        assert line.startswith(b"http://"), f"first line: {line!r}"
        yield Process(line.decode().strip(), process)
    finally:
        if process.returncode is None:
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), timeout=30)
        except TimeoutError:
            process.kill()
            await process.wait()
