"""Celery's event stream on Redis: a pub/sub reader that keeps up with a firehose.

Celery publishes each event as a kombu envelope (JSON) on the fanout channel
``{global_keyprefix}/{db}.celeryev/{routing key}``. The reader PSUBSCRIBEs on a
dedicated connection, reads replies in batches (hiredis parses them) and decodes
each payload with `exporter.protocol.events` (typed msgspec structs): no kombu
consumer on the hot path.
When Redis drops the subscription (a slow client) or goes away, the reader logs,
counts the reconnect and subscribes again; it never exits while the sidecar runs.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, cast

import hiredis
import redis

from exporter.protocol.events import Event, decode_batch
from exporter.protocol.limits import DEFAULT_LIMITS, InputLimits

log = logging.getLogger(__name__)

RECV_BYTES = 1 << 20
FEED_BYTES = 1 << 14
#: A read shorter than COALESCE_BYTES means the reader has caught up: it sleeps
#: COALESCE_SECONDS and reads what came meanwhile before decoding. A batch costs
#: about 10 µs whatever its size, so a reader that keeps up with 40,000 events/s
#: in reads of 3-4 messages spent twice the CPU per event that it spends on batches
#: of a hundred (bench/events/profile.py --read-bytes 2048 vs 65536). A reader that is
#: behind reads more than COALESCE_BYTES at once and never sleeps.
COALESCE_BYTES = 1 << 14
COALESCE_SECONDS = 0.002
READ_TIMEOUT = 1.0
MAX_BACKOFF = 2.0

BatchHandler = Callable[[list[Event], int], None]


class EventStream:
    """Reads Celery events from Redis pub/sub and hands decoded batches to a handler."""

    def __init__(
        self,
        client: redis.Redis,
        pattern: str,
        handle: BatchHandler,
        *,
        on_state: Callable[[bool, bool], None] = lambda connected, reconnected: None,
        limits: InputLimits = DEFAULT_LIMITS,
    ) -> None:
        self._client = client
        self._pattern = pattern
        self._handle = handle
        self._on_state = on_state
        self._limits = limits
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Run the reader in a daemon thread."""
        self._thread = threading.Thread(target=self.run, name="event-stream", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the reader to stop and wait for it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        """Subscribe, read until stopped, and reconnect with backoff on any failure."""
        backoff = 0.5
        subscribed_before = False
        lost_at: float | None = None

        def confirmed() -> None:
            nonlocal subscribed_before, backoff, lost_at
            self._on_state(True, subscribed_before)
            if subscribed_before:
                away = time.monotonic() - lost_at if lost_at is not None else 0.0
                log.warning(
                    "event stream: subscribed again to %s after %.1fs without a subscription; "
                    "events published meanwhile were not seen", self._pattern, away,
                )
            else:
                log.info("event stream: subscribed to %s", self._pattern)
            subscribed_before = True
            lost_at = None
            backoff = 0.5

        while not self._stop.is_set():
            # A connection of the client's own pool class (TCP, TLS or Sentinel-resolved),
            # so the handshake (AUTH, SELECT, TLS) is redis-py's; only its socket is read.
            connection: Any = self._client.connection_pool.make_connection()
            try:
                connection.connect()
                connection.send_command("PSUBSCRIBE", self._pattern)
                self._read_until_stopped(connection._sock, confirmed)
            except (redis.RedisError, OSError) as exc:
                if lost_at is None and subscribed_before:
                    lost_at = time.monotonic()
                self._on_state(False, False)
                log.warning(
                    "event stream: connection lost (%s); events published meanwhile are lost, "
                    "subscribing again in %.1fs", exc, backoff,
                )
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
            finally:
                connection.disconnect()

    def _read_until_stopped(self, sock: socket.socket, confirmed: Callable[[], None]) -> None:
        """Read raw RESP from the subscribed socket; hiredis splits it into replies.

        redis-py's own reply path is bypassed after the handshake: it handles push
        messages one Python call at a time, far too slowly for tens of thousands a second.
        """
        replies = PubSubReplies(confirmed)
        buffer = bytearray(RECV_BYTES)  # reused: hiredis copies what it is fed
        view = memoryview(buffer)
        sock.settimeout(READ_TIMEOUT)
        recv_into = sock.recv_into
        ready = select.poll()
        ready.register(sock, select.POLLIN)
        while not self._stop.is_set():
            try:
                size = recv_into(buffer)
            except TimeoutError:
                continue
            if not size:
                raise ConnectionError("the server closed the subscription")
            failure: OSError | None = None
            if size < COALESCE_BYTES:
                # Caught up: wait a moment for more before decoding, so that each batch
                # carries dozens of events rather than a few (see COALESCE_SECONDS).
                time.sleep(COALESCE_SECONDS)
                if ready.poll(0):  # arrived meanwhile: read without waiting
                    try:
                        more = recv_into(view[size:])
                    except TimeoutError:  # TLS: part of a record yet; the next read has it
                        more = None
                    except OSError as exc:  # what came first is still decoded
                        failure, more = exc, None
                    if more == 0:
                        failure = ConnectionError("the server closed the subscription")
                    size += more or 0
            payloads = replies.split(buffer, size)
            if payloads:
                events, bad = decode_batch(payloads, self._limits)
                try:
                    self._handle(events, bad)
                except Exception:  # a bug in handling must not end the subscription
                    log.exception("event stream: could not apply %d events", len(events))
            if failure is not None:
                raise failure


class PubSubReplies:
    """Splits the raw RESP of a pattern subscription into the payloads of its messages.

    hiredis is fed at most `FEED_BYTES` at a time: after each reply it returns, it moves
    the unread rest of its buffer to the front, so a whole 1 MB read fed at once costs
    time quadratic in its size (6.5 µs per event instead of 0.7, measured with
    `bench/events/profile.py --read-bytes 1048576`), just when the reader is behind.
    """

    def __init__(self, confirmed: Callable[[], None] = lambda: None) -> None:
        self._reader = hiredis.Reader()
        self._confirmed = confirmed

    def split(self, data: bytes | bytearray, size: int | None = None) -> list[bytes]:
        """The payloads of the pmessages completed by `data[:size]` (kept: any partial one)."""
        size = len(data) if size is None else size
        chunk = cast(bytes, data)  # hiredis reads any buffer; its stubs say bytes
        feed, gets = self._reader.feed, self._reader.gets
        payloads: list[bytes] = []
        append = payloads.append
        for offset in range(0, size, FEED_BYTES):
            feed(chunk, offset, min(FEED_BYTES, size - offset))
            while (reply := gets()) is not False:
                if isinstance(reply, list) and len(reply) == 4 and reply[0] == b"pmessage":
                    append(reply[3])
                elif isinstance(reply, list) and reply and reply[0] == b"psubscribe":
                    self._confirmed()
                elif isinstance(reply, hiredis.ReplyError):
                    raise redis.ResponseError(str(reply))
        return payloads
