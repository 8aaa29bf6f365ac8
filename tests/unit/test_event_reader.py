"""The event stream's read loop on a local socket pair: batches, coalescing, a closed peer."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time

import pytest
import redis

from exporter.protocol.events import Event
from exporter.sources import events as source
from exporter.sources.events import EventStream


def pmessage(uuid: str) -> bytes:
    body = {"type": "task-started", "uuid": uuid, "hostname": "w@h", "timestamp": 1.0}
    data = json.dumps({
        "body": base64.b64encode(json.dumps(body).encode()).decode(),
        "content-type": "application/json", "properties": {"body_encoding": "base64"},
    }).encode()
    return b">4\r\n$8\r\npmessage\r\n$1\r\n*\r\n$6\r\n/0.x/y\r\n$%d\r\n%s\r\n" % (len(data), data)


class Handled:
    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.bad = 0

    def __call__(self, events: list[Event], bad: int) -> None:
        self.batches.append([e.uuid or "" for e in events])
        self.bad += bad


def read_all(payload_writes: list[bytes], *, close: bool = True) -> tuple[Handled, BaseException]:
    """Run the read loop on one end of a socket pair while the other end writes, then closes."""
    handled = Handled()
    stream = EventStream(redis.Redis(), "/0.x/*", handled)
    ours, theirs = socket.socketpair()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            stream._read_until_stopped(ours, lambda: None)
        except BaseException as exc:  # what ended the loop is the result
            failure.append(exc)

    reader = threading.Thread(target=run)
    reader.start()
    for data in payload_writes:
        theirs.sendall(data)
    if close:
        theirs.close()
    reader.join(10)
    ours.close()
    assert not reader.is_alive()
    return handled, failure[0]


def test_messages_written_together_are_decoded_in_one_batch_until_the_peer_closes() -> None:
    handled, ended = read_all([b"".join(pmessage(f"u{n}") for n in range(30))])
    assert [u for batch in handled.batches for u in batch] == [f"u{n}" for n in range(30)]
    assert len(handled.batches) <= 2
    assert isinstance(ended, ConnectionError)


def test_a_short_read_waits_for_what_follows_and_decodes_it_with_the_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A few messages, then more while the reader waits: one batch, not two."""
    first, second = pmessage("a"), pmessage("b")
    handled = Handled()
    stream = EventStream(redis.Redis(), "/0.x/*", handled)
    ours, theirs = socket.socketpair()
    slept = threading.Event()

    def sleep(seconds: float) -> None:  # the second message arrives during the wait
        assert seconds == source.COALESCE_SECONDS
        theirs.sendall(second)
        theirs.close()
        slept.set()

    monkeypatch.setattr(time, "sleep", sleep)
    theirs.sendall(first)
    with pytest.raises(ConnectionError):
        stream._read_until_stopped(ours, lambda: None)
    ours.close()
    assert slept.is_set()
    assert handled.batches == [["a", "b"]]


def test_what_came_before_the_peer_closed_is_decoded() -> None:
    handled, ended = read_all([pmessage("a"), pmessage("b")[:20]])
    assert [u for batch in handled.batches for u in batch] == ["a"]
    assert isinstance(ended, ConnectionError)
