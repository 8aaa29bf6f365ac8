"""Polling helpers for tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path


def wait_until(
    predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.05
) -> bool:
    """Poll ``predicate`` until truthy or ``timeout`` elapses; return success."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        # The polling interval: the predicate is checked again after it, so this never
        # decides an outcome, it only paces the checks.
        time.sleep(interval)


def process_group_gone(pgid: int) -> bool:
    """True once no live (non-zombie) process is left in process group ``pgid`` (Linux)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended while we looked
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return False
    return True
