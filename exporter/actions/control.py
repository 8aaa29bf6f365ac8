"""What the sidecar asks of Celery itself: publish a task again, revoke, stop or start consuming.

Everything goes through a Celery app bound to the broker (no task module is
imported: tasks are published by name), so messages and broadcasts are exactly
what `celery call` and `celery control` send.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from celery import Celery
from kombu.utils.uuid import uuid

log = logging.getLogger(__name__)

#: The message header naming the task id a retry runs again.
RETRY_OF_HEADER = "retry_of"
#: Signals a cancel may send to a running task (terminate is opt-in).
SIGNALS = ("SIGTERM", "SIGINT", "SIGKILL", "SIGQUIT", "SIGUSR1")


class CeleryControl:
    """Publishes and broadcasts through one Celery app; every call may raise broker errors."""

    def __init__(self, app: Celery, reply_timeout: float) -> None:
        self._app = app
        self._timeout = reply_timeout

    def publish_again(
        self,
        name: str,
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        queue: str,
        retry_of: str,
    ) -> str:
        """Publish `name(*args, **kwargs)` to `queue` under a new task id; that id."""
        task_id = uuid()
        self._app.send_task(
            name,
            args=list(args),
            kwargs=dict(kwargs),
            queue=queue,
            task_id=task_id,
            headers={RETRY_OF_HEADER: retry_of},
        )
        return task_id

    def revoke(self, task_id: str, *, terminate: bool = False, signal: str = "SIGTERM") -> None:
        """Tell every worker to discard the task (and, with `terminate`, to stop it)."""
        self._app.control.revoke(task_id, terminate=terminate, signal=signal)

    def cancel_consumer(self, queue: str, workers: Iterable[str]) -> list[str]:
        """Ask `workers` to stop consuming `queue`; the hostnames that confirmed."""
        return self._broadcast("cancel_consumer", queue, workers)

    def add_consumer(self, queue: str, workers: Iterable[str]) -> list[str]:
        """Ask `workers` to consume `queue` again; the hostnames that confirmed."""
        return self._broadcast("add_consumer", queue, workers)

    def _broadcast(self, command: str, queue: str, workers: Iterable[str]) -> list[str]:
        destination = sorted(set(workers))
        if not destination:
            return []
        control = self._app.control
        method = control.cancel_consumer if command == "cancel_consumer" else control.add_consumer
        replies = method(queue, destination=destination, reply=True, timeout=self._timeout)
        confirmed = []
        for reply in replies or ():
            if isinstance(reply, dict):
                for hostname, answer in reply.items():
                    if isinstance(answer, dict) and "ok" in answer:
                        confirmed.append(str(hostname))
                    else:
                        log.warning("%s %s: %s answered %r", command, queue, hostname, answer)
        return sorted(confirmed)
