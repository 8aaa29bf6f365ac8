"""Settings parsing, and the Redis keys and channels the exporter derives, checked against kombu."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
import redis
from celery import Celery
from hypothesis import given, settings
from hypothesis import strategies as st
from kombu.connection import Connection
from kombu.utils.url import parse_url

from exporter.config.broker import parse_endpoint
from exporter.config.errors import ConfigError
from exporter.config.parsing import parse_buckets, parse_listen_address
from exporter.config.redaction import redact_url
from exporter.config.settings import Settings
from exporter.config.transport import parse_transport_options, transport_options_from_mapping
from exporter.protocol.keys import DEFAULT_PRIORITY_STEPS, DEFAULT_SEP, TransportOptions
from testkit.redis_server import RedisServer

FLAG = "--broker-transport-option"


# -- parse_transport_options -----------------------------------------------------------


def test_no_options_are_kombu_defaults() -> None:
    """Without options, the separator and priority steps are kombu's own defaults."""
    options = parse_transport_options([])
    assert options == TransportOptions()
    assert options.sep == DEFAULT_SEP == "\x06\x16"
    assert options.priority_steps == DEFAULT_PRIORITY_STEPS == (0, 3, 6, 9)
    assert options.global_keyprefix == ""
    assert options.extra == {}


def test_values_parse_as_json_else_as_strings() -> None:
    """A value that parses as JSON is JSON; anything else is the plain string."""
    options = parse_transport_options(
        [
            "sep=:",
            "priority_steps=[9, 0, 3, 3]",
            "global_keyprefix=tenant-1:",
            "visibility_timeout=7200",
            "unacked_key=my_unacked",
            "fanout_prefix=false",
            "fanout_patterns=false",
            "master_name=mymaster",
            'sentinel_kwargs={"password": "sentinel-pw"}',
            "socket_timeout=2.5",
            "client_name=exporter",
            "retry_on_timeout=true",
        ]
    )
    assert options.sep == ":"
    assert options.priority_steps == (0, 3, 9)
    assert options.global_keyprefix == "tenant-1:"
    assert options.visibility_timeout == 7200.0
    assert options.unacked_key == "my_unacked"
    assert options.fanout_prefix is False
    assert options.fanout_patterns is False
    assert options.master_name == "mymaster"
    assert options.sentinel_kwargs == {"password": "sentinel-pw"}
    assert options.extra == {
        "socket_timeout": 2.5,
        "client_name": "exporter",
        "retry_on_timeout": True,
    }


def test_value_may_contain_equals_and_string_fanout_prefix() -> None:
    """Only the first `=` splits; a string fanout_prefix stays a string."""
    options = parse_transport_options(["global_keyprefix=a=b:", "fanout_prefix=/events."])
    assert options.global_keyprefix == "a=b:"
    assert options.fanout_prefix == "/events."


def test_later_option_wins() -> None:
    """A repeated key takes its last value."""
    assert parse_transport_options(["sep=:", "sep=|"]).sep == "|"


def test_kombu_options_round_trip() -> None:
    """as_kombu_options gives a mapping that validates back to the same options."""
    options = parse_transport_options(
        ["sep=:", "priority_steps=[0,5]", "global_keyprefix=p:", "master_name=m", "x_extra=1"]
    )
    kombu_options = options.as_kombu_options()
    assert kombu_options["priority_steps"] == [0, 5]
    assert kombu_options["x_extra"] == 1
    assert transport_options_from_mapping(kombu_options) == options


@pytest.mark.parametrize(
    ("pairs", "mentions"),
    [
        (["noequals"], "noequals"),
        (["=value"], "=value"),
        (["priority_steps=[1,2]"], "priority_steps"),
        (["priority_steps=[]"], "priority_steps"),
        (["priority_steps=[0,256]"], "priority_steps"),
        (["priority_steps=[0,-1]"], "priority_steps"),
        (["priority_steps=[0,true]"], "priority_steps"),
        (["priority_steps=[0,1.5]"], "priority_steps"),
        (["priority_steps=0,3"], "priority_steps"),
        (["priority_steps=abc"], "priority_steps"),
        (["sep="], "sep"),
        (["sep=1"], "sep"),
        (["master_name="], "master_name"),
        (["unacked_key=[]"], "unacked_key"),
        (["global_keyprefix=[1]"], "global_keyprefix"),
        (["visibility_timeout=0"], "visibility_timeout"),
        (["visibility_timeout=-5"], "visibility_timeout"),
        (["visibility_timeout=true"], "visibility_timeout"),
        (["visibility_timeout=soon"], "visibility_timeout"),
        (["fanout_prefix=1"], "fanout_prefix"),
        (["fanout_patterns=yes"], "fanout_patterns"),
        (["sentinel_kwargs=[1]"], "sentinel_kwargs"),
    ],
)
def test_invalid_transport_options_name_the_flag(pairs: list[str], mentions: str) -> None:
    """Every invalid option raises ConfigError that starts with the flag and names the key."""
    with pytest.raises(ConfigError) as caught:
        parse_transport_options(pairs)
    message = str(caught.value)
    assert message.startswith(f"{FLAG}: ")
    assert mentions in message
    assert "\n" not in message


# -- keys and channels, compared with kombu ---------------------------------------------

KOMBU_CASES: list[tuple[str, list[str], int]] = [
    ("defaults", [], 0),
    ("sep-and-steps", ["sep=:", "priority_steps=[0,1,2,5]"], 0),
    ("global-keyprefix", ["global_keyprefix=app:"], 0),
    ("prefix-steps-db", ["global_keyprefix=tenant-7/", "priority_steps=[0,9]"], 4),
    ("no-fanout-prefix", ["fanout_prefix=false"], 1),
    ("custom-fanout-prefix", ["fanout_prefix=/events."], 0),
    ("no-fanout-patterns", ["fanout_patterns=false", "global_keyprefix=x:"], 2),
    ("fanout-prefix-template", ["fanout_prefix=/{db}.custom."], 3),
]


@pytest.fixture
def kombu_connections() -> Iterator[list[Connection]]:
    """Collects kombu connections to release after the test."""
    connections: list[Connection] = []
    try:
        yield connections
    finally:
        for connection in connections:
            connection.release()  # type: ignore[no-untyped-call]


def _kombu_channel(
    connections: list[Connection], url: str, options: TransportOptions
) -> Any:
    connection = Connection(  # type: ignore[no-untyped-call]
        url, transport_options=options.as_kombu_options()
    )
    connections.append(connection)
    return connection.default_channel


@pytest.mark.parametrize(("pairs", "db"), [(c[1], c[2]) for c in KOMBU_CASES],
                         ids=[c[0] for c in KOMBU_CASES])
def test_queue_keys_match_kombu(
    redis_server: RedisServer,
    kombu_connections: list[Connection],
    pairs: list[str],
    db: int,
) -> None:
    """queue_keys equals the prefix plus kombu's `_q_for_pri`, in kombu's step order."""
    options = parse_transport_options(pairs)
    channel = _kombu_channel(kombu_connections, redis_server.url_for_db(db), options)
    assert list(channel.priority_steps) == list(options.priority_steps)
    assert channel.sep == options.sep
    assert channel.global_keyprefix == options.global_keyprefix
    for queue in ("celery", "reports.high", "q:with:colons"):
        expected = [
            options.global_keyprefix + channel._q_for_pri(queue, step)
            for step in channel.priority_steps
        ]
        assert options.queue_keys(queue) == expected


@pytest.mark.parametrize(("pairs", "db"), [(c[1], c[2]) for c in KOMBU_CASES],
                         ids=[c[0] for c in KOMBU_CASES])
def test_real_celery_messages_land_in_queue_keys(
    redis_server: RedisServer, pairs: list[str], db: int
) -> None:
    """Tasks of every priority, sent by real Celery, land exactly in the keys computed."""
    options = parse_transport_options(pairs)
    app = Celery("keys", broker=redis_server.url_for_db(db), set_as_current=False)
    app.conf.broker_transport_options = options.as_kombu_options()
    client: redis.Redis = redis_server.client(db=db)
    try:
        for priority in range(10):
            app.send_task("tests.add", args=(priority, 0), queue="jobs", priority=priority)
        lists = {
            key.decode()
            for key in client.scan_iter(count=1000)
            if client.type(key) == b"list"
        }
        assert lists == set(options.queue_keys("jobs"))
        assert sum(client.llen(k) for k in options.queue_keys("jobs")) == 10
    finally:
        client.close()
        app.close()


@pytest.mark.parametrize(("pairs", "db"), [(c[1], c[2]) for c in KOMBU_CASES],
                         ids=[c[0] for c in KOMBU_CASES])
def test_event_channel_pattern_matches_kombu(
    redis_server: RedisServer,
    kombu_connections: list[Connection],
    pairs: list[str],
    db: int,
) -> None:
    """The PSUBSCRIBE pattern receives what a real Celery event dispatcher publishes.

    The channel published on is the global prefix plus kombu's `_get_publish_topic`.
    """
    options = parse_transport_options(pairs)
    url = redis_server.url_for_db(db)
    channel = _kombu_channel(kombu_connections, url, options)
    topic = options.global_keyprefix + channel._get_publish_topic("celeryev", "worker.heartbeat")
    pattern = options.event_channel_pattern(parse_endpoint(url).db)

    client: redis.Redis = redis_server.client(db=db)
    pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
    app = Celery("events", broker=url, set_as_current=False)
    app.conf.broker_transport_options = options.as_kombu_options()
    try:
        pubsub.psubscribe(pattern)
        deadline = time.monotonic() + 5
        while client.pubsub_numpat() < 1 and time.monotonic() < deadline:
            pubsub.get_message(timeout=0.05)
        with app.connection_for_write() as connection:
            dispatcher = app.events.Dispatcher(connection, hostname="probe@host", enabled=True)
            dispatcher.send("worker-heartbeat", freq=2.0, active=0, processed=0)
            dispatcher.close()
        received = None
        deadline = time.monotonic() + 3
        while received is None and time.monotonic() < deadline:
            received = pubsub.get_message(timeout=0.1)
        assert received is not None, (
            f"pattern {pattern!r} received nothing; kombu published on {topic!r}"
        )
        assert received["channel"].decode() == topic
    finally:
        pubsub.close()
        client.close()
        app.close()


def test_event_channel_pattern_shapes() -> None:
    """The documented shapes: `{prefix}/{db}.celeryev/*` by default."""
    assert TransportOptions().event_channel_pattern(0) == "/0.celeryev/*"
    assert TransportOptions(global_keyprefix="p:").event_channel_pattern(7) == "p:/7.celeryev/*"
    assert TransportOptions(fanout_prefix=False).event_channel_pattern(7) == "celeryev/*"
    assert TransportOptions(fanout_patterns=False).event_channel_pattern(1) == "/1.celeryev"


# -- redact_url ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://:s3cr3t@localhost:6379/0", "redis://:***@localhost:6379/0"),
        ("redis://user:s3cr3t@localhost:6379/0", "redis://user:***@localhost:6379/0"),
        (
            "rediss://default:s3cr3t@cache.internal:6380/1?ssl_cert_reqs=required",
            "rediss://default:***@cache.internal:6380/1?ssl_cert_reqs=required",
        ),
        (
            "sentinel://:s3cr3t@s1:26379;sentinel://:s3cr3t@s2:26379;sentinel://:s3cr3t@s3:26379",
            "sentinel://:***@s1:26379;sentinel://:***@s2:26379;sentinel://:***@s3:26379",
        ),
        (
            "sentinel://u:pw-one@s1:26379/2; sentinel://u:pw-two@s2:26379/2",
            "sentinel://u:***@s1:26379/2; sentinel://u:***@s2:26379/2",
        ),
        ("redis://:pa%40ss%3Aw%2Frd@h:1/0", "redis://:***@h:1/0"),
        ("redis://:pa:ss/wo rd@h:1/0", "redis://:***@h:1/0"),
        ("unix://:s3cr3t@/run/redis.sock?db=2", "unix://:***@/run/redis.sock?db=2"),
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("redis://user@localhost:6379/0", "redis://user@localhost:6379/0"),
        ("error connecting to redis://:s3cr3t@h:1/0: refused",
         "error connecting to redis://:***@h:1/0: refused"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    """Every password of every URL is replaced; nothing else changes."""
    assert redact_url(url) == expected
    assert "s3cr3t" not in redact_url(url)


def test_redacted_broker_url_property() -> None:
    """Settings never hands out the password through its redacted URL."""
    settings_ = Settings(broker_url="redis://admin:hunter2@redis:6379/3")
    assert settings_.redacted_broker_url == "redis://admin:***@redis:6379/3"


def test_redact_url_password_with_raw_at_sign() -> None:
    """kombu splits user info at the LAST `@`: a password may hold a raw `@`.

    Such a URL works with Celery, so the whole password must be hidden.
    """
    url = "redis://:p@ssw0rd@redis.internal:6379/0"
    assert parse_url(url)["password"] == "p@ssw0rd"
    assert parse_url(url)["hostname"] == "redis.internal"
    redacted = redact_url(url)
    assert "ssw0rd" not in redacted, f"part of the password leaks: {redacted}"
    assert redacted == "redis://:***@redis.internal:6379/0"


@settings(max_examples=200, deadline=None, database=None)
@given(
    st.text(min_size=1, max_size=30),
    st.sampled_from(["redis", "rediss", "sentinel"]),
    st.sampled_from(["", "user", "default"]),
)
def test_redact_url_hides_any_percent_encoded_password(
    password: str, scheme: str, username: str
) -> None:
    """Any password, percent-encoded as a URL requires, is fully replaced."""
    encoded = quote(password, safe="")
    url = f"{scheme}://{quote(username)}:{encoded}@127.0.0.1:6379/0"
    assert parse_url(url)["password"] == password
    assert redact_url(url) == f"{scheme}://{username}:***@127.0.0.1:6379/0"


# -- parse_listen_address ------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0.0.0.0:9813", ("0.0.0.0", 9813)),
        ("127.0.0.1:1", ("127.0.0.1", 1)),
        ("localhost:65535", ("localhost", 65535)),
        ("[::1]:9813", ("::1", 9813)),
        ("[::]:8080", ("::", 8080)),
        ("[fe80::1%eth0]:9813", ("fe80::1%eth0", 9813)),
        (":9813", ("0.0.0.0", 9813)),
    ],
)
def test_parse_listen_address(value: str, expected: tuple[str, int]) -> None:
    """HOST:PORT, IPv6 in brackets; an empty host means every interface."""
    assert parse_listen_address(value) == expected


@pytest.mark.parametrize(
    "value",
    ["127.0.0.1", "localhost", "host:", "host:0", "host:65536", "host:http", "host:-1",
     "[::1]", "", "::1"],
)
def test_parse_listen_address_rejects(value: str) -> None:
    """Without a valid port (1..65535) the address is refused, naming the flag."""
    with pytest.raises(ConfigError) as caught:
        result = parse_listen_address(value)
        pytest.fail(f"{value!r} was accepted as {result!r}")
    assert str(caught.value).startswith("--listen-address: ")
    assert repr(value) in str(caught.value)


# -- parse_buckets ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0.1,1,10", (0.1, 1.0, 10.0)),
        (" 0.5 , 2 ,30, ", (0.5, 2.0, 30.0)),
        ("1e-3,1e3", (0.001, 1000.0)),
        ("42", (42.0,)),
    ],
)
def test_parse_buckets(value: str, expected: tuple[float, ...]) -> None:
    """Comma-separated, increasing, positive bounds."""
    assert parse_buckets("--runtime-buckets", value) == expected


@pytest.mark.parametrize(
    "value", ["", ",", "a,b", "1,x", "0,1", "-1,2", "2,1", "1,1", "1,2,2,3"]
)
def test_parse_buckets_rejects(value: str) -> None:
    """Invalid bounds raise ConfigError naming the flag it was given."""
    with pytest.raises(ConfigError) as caught:
        parse_buckets("--queue-wait-buckets", value)
    assert str(caught.value).startswith("--queue-wait-buckets: ")


@pytest.mark.parametrize("value", ["1,nan", "nan", "1,2,inf", "inf"])
def test_parse_buckets_rejects_non_finite(value: str) -> None:
    """NaN and infinite bounds are not bucket bounds (+Inf is always added by the exporter)."""
    try:
        bounds = parse_buckets("--runtime-buckets", value)
    except ConfigError as exc:
        assert str(exc).startswith("--runtime-buckets: ")
        return
    assert all(math.isfinite(b) for b in bounds), f"{value!r} accepted as {bounds!r}"
