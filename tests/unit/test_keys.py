"""Redis keys and the event channel, compared with kombu's own Redis transport.

A real kombu Redis channel is built from `as_kombu_options()` (its connection check
answered in-process, nothing is sent): the keys it would LPUSH and BRPOP, and the
channel it would PUBLISH events on, must be the sidecar's.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from kombu.connection import Connection

from exporter.protocol.keys import TransportOptions

QUEUES = ("celery", "reports.high", "q:with:colons", "ünïcødé")
EVENT_ROUTING_KEYS = ("worker.heartbeat", "task.started", "task.succeeded", "worker-offline")

CASES: list[tuple[str, TransportOptions, int]] = [
    ("defaults", TransportOptions(), 0),
    ("sep-and-steps", TransportOptions(sep=":", priority_steps=(0, 1, 2, 5)), 0),
    ("all-ten-steps", TransportOptions(priority_steps=tuple(range(10))), 2),
    ("global-keyprefix", TransportOptions(global_keyprefix="app:"), 0),
    ("prefix-steps-db", TransportOptions(global_keyprefix="tenant-7/", priority_steps=(0, 9)), 4),
    ("no-fanout-prefix", TransportOptions(fanout_prefix=False), 1),
    ("custom-fanout-prefix", TransportOptions(fanout_prefix="/events."), 0),
    ("no-fanout-patterns", TransportOptions(fanout_patterns=False, global_keyprefix="x:"), 2),
    ("fanout-prefix-template", TransportOptions(fanout_prefix="/{db}.custom."), 3),
]


def redis_glob(pattern: str) -> re.Pattern[str]:
    """A Redis glob (PSUBSCRIBE, SCAN MATCH) as a regular expression, as Redis reads it.

    `*` any run, `?` one character, `[...]` a class (`^` negates, `a-z` ranges) and
    a backslash escaping the next character.
    """
    out: list[str] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "\\" and index + 1 < len(pattern):
            index += 1
            out.append(re.escape(pattern[index]))
        elif char == "[":
            index += 1
            negate = index < len(pattern) and pattern[index] == "^"
            index += negate
            items: list[str] = []
            while index < len(pattern) and pattern[index] != "]":
                if pattern[index] == "\\" and index + 1 < len(pattern):
                    index += 1
                    items.append(re.escape(pattern[index]))
                elif index + 2 < len(pattern) and pattern[index + 1] == "-":
                    low, high = sorted((pattern[index], pattern[index + 2]))
                    items.append(f"{re.escape(low)}-{re.escape(high)}")
                    index += 2
                else:
                    items.append(re.escape(pattern[index]))
                index += 1
            out.append(f"[{'^' if negate else ''}{''.join(items)}]" if items else
                       ("[\\s\\S]" if negate else "[^\\s\\S]"))
        else:
            out.append(re.escape(char))
        index += 1
    return re.compile("".join(out), re.S)


def test_the_glob_reader_reads_redis_globs() -> None:
    assert redis_glob("/0.celeryev/*").fullmatch("/0.celeryev/task.started")
    assert not redis_glob("/0.celeryev/*").fullmatch("/1.celeryev/task.started")
    assert redis_glob("h?llo").fullmatch("hallo") and not redis_glob("h?llo").fullmatch("hllo")
    assert redis_glob("h[ae]llo").fullmatch("hello")
    assert not redis_glob("h[^e]llo").fullmatch("hello")
    assert redis_glob("h[a-b]llo").fullmatch("hbllo")
    assert redis_glob("t\\[1]").fullmatch("t[1]") and not redis_glob("t[1]").fullmatch("t[1]")


class KombuChannel:
    """kombu's Redis channel for some options; nothing ever reaches a server."""

    def __init__(self, options: TransportOptions, db: int, monkeypatch: pytest.MonkeyPatch):
        with monkeypatch.context() as patched:
            patched.setattr(redis.Redis, "ping", lambda self, **kwargs: True)
            self.connection: Any = Connection(  # type: ignore[no-untyped-call]
                f"redis://127.0.0.1:1/{db}", transport_options=options.as_kombu_options()
            )
            self.channel: Any = self.connection.default_channel

    def prefixed(self, command: str, *args: Any) -> list[Any]:
        """A command's arguments after kombu's client applied the global key prefix."""
        client = self.channel.client
        arguments = [command, *args]
        if hasattr(client, "_prefix_args"):
            arguments = client._prefix_args(arguments)
        return arguments[1:]

    def pushed_to(self, queue: str, priority: int) -> str:
        """The key kombu LPUSHes a message of this priority to."""
        key: str = self.prefixed("LPUSH", self.channel._q_for_pri(queue, priority), "m")[0]
        return key

    def popped_from(self, queue: str) -> list[str]:
        """The keys of the BRPOP kombu sends to consume `queue`, in order."""
        sent: list[tuple[Any, ...]] = []
        real = self.channel.client

        class Recorder:
            connection = property(lambda _self: _self)

            def send_command(self, *args: Any) -> None:
                sent.append(args)

            def _prefix_args(self, args: list[Any]) -> list[Any]:
                prefixed: list[Any] = real._prefix_args(args)
                return prefixed

        self.channel.client = Recorder()
        self.channel._active_queues = [queue]
        self.channel._queue_cycle.update([queue])
        try:
            self.channel._brpop_start(timeout=1)
        finally:
            self.channel.client, self.channel._in_poll = real, None
            self.channel._active_queues = []
        [(command, *keys, _timeout)] = sent
        assert command == "BRPOP"
        return [str(key) for key in keys]

    def event_channel(self, routing_key: str) -> str:
        """The channel kombu PUBLISHes an event with this routing key on."""
        topic = self.channel._get_publish_topic("celeryev", routing_key)
        channel: str = self.prefixed("PUBLISH", topic, "m")[0]
        return channel

    def close(self) -> None:
        self.connection.release()


@pytest.fixture
def kombu_channels(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    made: list[KombuChannel] = []

    def make(options: TransportOptions, db: int = 0) -> KombuChannel:
        made.append(KombuChannel(options, db, monkeypatch))
        return made[-1]

    yield make
    for channel in made:
        channel.close()


def test_the_defaults_are_kombu_s_defaults() -> None:
    """A sidecar given no transport options reads where an app given none writes."""
    defaults = TransportOptions()
    bare = Connection("redis://127.0.0.1:1/0")  # type: ignore[no-untyped-call]
    try:
        with pytest.MonkeyPatch.context() as patched:
            patched.setattr(redis.Redis, "ping", lambda self, **kwargs: True)
            channel: Any = bare.default_channel
        assert channel.sep == defaults.sep
        assert tuple(channel.priority_steps) == defaults.priority_steps
        assert channel.global_keyprefix == defaults.global_keyprefix
        assert channel.unacked_key == defaults.unacked_key
        assert channel.visibility_timeout == defaults.visibility_timeout
        assert (channel.fanout_prefix, channel.fanout_patterns) == (
            defaults.fanout_prefix, defaults.fanout_patterns)
    finally:
        bare.release()  # type: ignore[no-untyped-call]


@pytest.mark.parametrize(("options", "db"), [(c[1], c[2]) for c in CASES],
                         ids=[c[0] for c in CASES])
def test_kombu_reads_the_options_it_is_given_back(
    kombu_channels: Any, options: TransportOptions, db: int
) -> None:
    """as_kombu_options makes an inspect app use the same keys as the sidecar."""
    channel = kombu_channels(options, db).channel
    assert channel.sep == options.sep
    assert tuple(channel.priority_steps) == options.priority_steps
    assert channel.global_keyprefix == options.global_keyprefix
    assert channel.unacked_key == options.unacked_key
    assert channel.visibility_timeout == options.visibility_timeout
    assert (channel.fanout_prefix, channel.fanout_patterns) == (
        options.fanout_prefix, options.fanout_patterns)


@pytest.mark.parametrize(("options", "db"), [(c[1], c[2]) for c in CASES],
                         ids=[c[0] for c in CASES])
def test_every_priority_lands_in_one_of_the_queue_keys(
    kombu_channels: Any, options: TransportOptions, db: int
) -> None:
    kombu = kombu_channels(options, db)
    for queue in QUEUES:
        keys = options.queue_keys(queue)
        assert len(set(keys)) == len(options.priority_steps)
        for priority in range(256):
            step = kombu.channel.priority(priority)
            assert kombu.pushed_to(queue, priority) == options.queue_key(queue, step), priority
        assert {kombu.pushed_to(queue, p) for p in options.priority_steps} == set(keys)


@pytest.mark.parametrize(("options", "db"), [(c[1], c[2]) for c in CASES],
                         ids=[c[0] for c in CASES])
def test_queue_keys_are_in_the_order_workers_pop_them(
    kombu_channels: Any, options: TransportOptions, db: int
) -> None:
    kombu = kombu_channels(options, db)
    for queue in QUEUES:
        assert options.queue_keys(queue) == kombu.popped_from(queue)


@pytest.mark.parametrize(("options", "db"), [(c[1], c[2]) for c in CASES],
                         ids=[c[0] for c in CASES])
def test_the_event_pattern_matches_the_channels_kombu_publishes_on(
    kombu_channels: Any, options: TransportOptions, db: int
) -> None:
    kombu = kombu_channels(options, db)
    pattern = redis_glob(options.event_channel_pattern(db))
    for routing_key in EVENT_ROUTING_KEYS:
        assert pattern.fullmatch(kombu.event_channel(routing_key)), routing_key


WITH_DB = [c for c in CASES if c[1].fanout_prefix is True or "{db}" in str(c[1].fanout_prefix)]


@pytest.mark.parametrize(("options", "db"), [(c[1], c[2]) for c in WITH_DB],
                         ids=[c[0] for c in WITH_DB])
def test_the_event_pattern_ignores_other_databases(
    kombu_channels: Any, options: TransportOptions, db: int
) -> None:
    """Redis pub/sub spans databases: the db in the prefix keeps other apps' events out."""
    other = kombu_channels(options, db + 1)
    pattern = redis_glob(options.event_channel_pattern(db))
    assert not pattern.fullmatch(other.event_channel("task.started"))


def test_the_event_pattern_ignores_other_key_prefixes(kombu_channels: Any) -> None:
    mine, theirs = TransportOptions(global_keyprefix="a:"), TransportOptions(global_keyprefix="b:")
    pattern = redis_glob(mine.event_channel_pattern(0))
    assert pattern.fullmatch(kombu_channels(mine).event_channel("task.started"))
    assert not pattern.fullmatch(kombu_channels(theirs).event_channel("task.started"))


@pytest.mark.parametrize(("prefix", "neighbour"),
                         [("tenant[1]:", "tenant1:"), ("app*:", "app-other:"), ("q?:", "qX:")])
def test_glob_characters_in_the_key_prefix_are_matched_literally(
    kombu_channels: Any, prefix: str, neighbour: str
) -> None:
    mine = TransportOptions(global_keyprefix=prefix)
    pattern = redis_glob(mine.event_channel_pattern(0))
    theirs = kombu_channels(TransportOptions(global_keyprefix=neighbour))
    assert pattern.fullmatch(kombu_channels(mine).event_channel("task.started"))
    assert not pattern.fullmatch(theirs.event_channel("task.started"))


def test_kombu_options_carry_the_extra_options_and_sentinel_ones_only_when_set() -> None:
    plain = TransportOptions(extra={"max_connections": 20, "sep": "ignored"})
    options = plain.as_kombu_options()
    assert options["max_connections"] == 20
    assert options["sep"] == plain.sep  # a known option wins over an extra of that name
    assert "master_name" not in options and "sentinel_kwargs" not in options
    sentinel = TransportOptions(master_name="mymaster", sentinel_kwargs={"password": "s"})
    assert sentinel.as_kombu_options()["master_name"] == "mymaster"
    assert sentinel.as_kombu_options()["sentinel_kwargs"] == {"password": "s"}
    assert TransportOptions(priority_steps=(0, 5)).as_kombu_options()["priority_steps"] == [0, 5]
