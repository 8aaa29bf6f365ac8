"""Polling until a condition holds."""

from __future__ import annotations

import time
from collections.abc import Callable


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
