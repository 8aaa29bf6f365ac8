"""Rate-limited reports of skipped items: one log line per source per minute at most.

A broker full of bad data must not flood the logs: the first bad item of a source is
logged at once, later ones are summed into the next line (they are all counted in
the metrics either way).
"""

from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger("exporter.protocol")

LOG_INTERVAL = 60.0


class SkipLog:
    """Logs skipped items of one source, at most once per `interval` seconds."""

    def __init__(self, source: str, interval: float = LOG_INTERVAL) -> None:
        self.source = source
        self._interval = interval
        self._lock = threading.Lock()
        self._pending = 0
        self._logged_at = float("-inf")

    def skipped(self, reason: str, count: int = 1) -> None:
        """Note `count` skipped items; log now if the last line is old enough."""
        now = time.monotonic()
        with self._lock:
            self._pending += count
            if now - self._logged_at < self._interval:
                return
            pending, self._pending, self._logged_at = self._pending, 0, now
        log.warning(
            "skipped %d malformed %s item(s) (counted in the metrics; at most one such line "
            "per %.0fs): %s", pending, self.source, self._interval, reason[:300],
        )
