"""What the event stream itself did: events counted, and its connection's ups and downs."""

from __future__ import annotations

import time
from collections.abc import Callable


class StreamBook:
    """Event counters and connection state. Called with the tracker's lock held."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.received = 0
        self.undecodable = 0
        #: task-started events missed, as worker heartbeats reveal them.
        self.lost = 0
        self.connected = False
        self.reconnects = 0
        self._monotonic = monotonic
        self._seconds_lost = 0.0
        self._lost_at: float | None = None  # monotonic, while a subscription is lost

    def mark(self, connected: bool, *, reconnected: bool = False) -> None:
        """Record the connection state (see TaskTracker.mark_stream)."""
        if connected and self._lost_at is not None:
            self._seconds_lost += self._monotonic() - self._lost_at
            self._lost_at = None
        elif not connected and self.connected:
            self._lost_at = self._monotonic()
        self.connected = connected
        if reconnected:
            self.reconnects += 1

    def disconnected_seconds(self) -> float:
        """Seconds lost subscriptions stayed lost, the ongoing one included."""
        ongoing = 0.0 if self._lost_at is None else self._monotonic() - self._lost_at
        return self._seconds_lost + ongoing
