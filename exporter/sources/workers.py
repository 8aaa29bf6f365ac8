"""Ask the workers what they hold: one round of remote-control broadcasts per refresh.

The five inspect commands (active, reserved, scheduled, active_queues, stats) are
published together and their replies collected by one consumer within one bounded
wait, which ends early once every expected worker has answered all five.

kombu waits for replies with a blocking BRPOP, and closing the connection waits for
the one still pending: with its default 1 s timeout, a round that ran to its deadline
(no worker known yet, or one not answering) took up to a second longer than asked.
Once the server is known to take fractional timeouts (Redis 6.0 and later), the
BRPOP timeout is `REPLY_POLL_SECONDS`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

import redis
from celery import Celery
from kombu.messaging import Consumer
from kombu.utils.uuid import uuid

from exporter.model.readings import WorkersReading
from exporter.protocol.replies import COMMANDS, assemble_replies
from exporter.sources.redis import kombu_url

log = logging.getLogger(__name__)

#: kombu's BRPOP timeout while collecting replies, on servers that accept fractions.
REPLY_POLL_SECONDS = 0.1


class WorkersSource:
    """Broadcasts inspect commands through Celery's own remote-control mailbox."""

    def __init__(self, app: Celery, timeout: float) -> None:
        self._app = app
        self._timeout = timeout
        #: Transport options of the next rounds' connections, once the server is known.
        self._short_polls: dict[str, Any] | None = None
        # Replies come back on a queue named after the mailbox object (its oid): a new
        # mailbox per round would add a binding per round to Redis, kept as long as
        # rounds go on. One mailbox for the source's life; each round passes its channel.
        self._mailbox = app.control.mailbox(None)

    def read(self, expected_workers: Iterable[str] = ()) -> WorkersReading:
        """One broadcast round; returns early when every expected worker answered."""
        started = time.monotonic()
        expected = frozenset(expected_workers)
        tickets = {uuid(): command for command in COMMANDS}
        bodies: dict[str, dict[str, Any]] = {command: {} for command in COMMANDS}
        unreadable = 0

        with self._app.connection_for_write(transport_options=self._short_polls) as connection:
            mailbox = self._mailbox
            channel = connection.default_channel
            if self._short_polls is None:
                self._short_polls = _short_polls_for(channel)

            def on_reply(body: Any, message: Any) -> None:
                headers = message.headers
                ticket = headers.get("ticket") if isinstance(headers, dict) else None
                command = tickets.get(ticket) if isinstance(ticket, str) else None
                if command is not None and isinstance(body, dict):
                    bodies[command].update(body)

            def on_undecodable(message: Any, exc: Exception) -> None:
                nonlocal unreadable
                unreadable += 1
                log.debug("inspect: skipped a reply that does not decode: %s", exc)

            consumer = Consumer(  # type: ignore[no-untyped-call]
                channel, [mailbox.reply_queue], accept=["json"], no_ack=True,
                callbacks=[on_reply], on_decode_error=on_undecodable,
            )
            with consumer:
                for ticket, command in tickets.items():
                    mailbox._publish(
                        command, {}, reply_ticket=ticket, channel=channel,
                        timeout=self._timeout,
                    )
                deadline = started + self._timeout
                while (remaining := deadline - time.monotonic()) > 0:
                    if expected and all(expected <= bodies[c].keys() for c in COMMANDS):
                        break
                    try:
                        connection.drain_events(timeout=min(remaining, 0.05))
                    except TimeoutError:
                        continue
                    except (ValueError, KeyError, TypeError, AttributeError) as exc:
                        # An item of the reply queue that is no kombu message (anyone
                        # with access to Redis can push one): it alone is skipped.
                        unreadable += 1
                        log.debug("inspect: skipped a reply queue item: %r", exc)
        replies, malformed = assemble_replies(bodies)
        return WorkersReading(
            replies=replies,
            read_at=time.time(),
            duration=time.monotonic() - started,
            malformed=malformed + unreadable,
        )


def _short_polls_for(channel: Any) -> dict[str, Any]:
    """Transport options that shorten kombu's BRPOP, if this Redis takes fractions."""
    try:
        version = str(channel.client.info("server").get("redis_version", ""))
        major = int(version.split(".")[0])
    except (redis.RedisError, ValueError, AttributeError) as exc:
        log.debug("the broker's Redis version is not known (%s): 1 s reply polls", exc)
        return {}
    return {"polling_interval": REPLY_POLL_SECONDS} if major >= 6 else {}


def make_inspect_app(broker_url: str, transport_options: Mapping[str, Any]) -> Celery:
    """A Celery app used only to talk to the workers' mailbox (it runs no tasks)."""
    app = Celery("celery-jobs-exporter", broker=kombu_url(broker_url), set_as_current=False)
    # max_retries=0: kombu would otherwise retry connecting forever inside a read,
    # and the refresher would wait on it (it now gives up at its deadline anyway).
    app.conf.broker_transport_options = {**transport_options, "max_retries": 0}
    app.conf.broker_connection_retry_on_startup = False
    app.conf.broker_connection_retry = False
    app.conf.broker_connection_timeout = 5
    app.conf.accept_content = ["json"]
    return app
