"""The broker URL: accepted schemes, the endpoint it decodes to, the Sentinel master rule."""

from __future__ import annotations

import pytest

from exporter.config.broker import (
    DEFAULT_BROKER_URL,
    SUPPORTED_SCHEMES,
    BrokerEndpoint,
    parse_endpoint,
    require_master_name,
    validate_broker_url,
)
from exporter.config.errors import ConfigError
from exporter.protocol.keys import TransportOptions
from exporter.sources import redis as redis_source

PW = "s3cr3t"


@pytest.mark.parametrize(
    "url",
    [
        DEFAULT_BROKER_URL,
        f"rediss://:{PW}@h:6380/1",
        "unix:///run/redis.sock?db=3",
        "sentinel://s1:26379;sentinel://s2:26379",
        "REDIS://H:1/0",
    ],
)
def test_supported_urls_are_returned_unchanged(url: str) -> None:
    assert validate_broker_url(url) == url


def test_every_supported_scheme_is_named() -> None:
    assert SUPPORTED_SCHEMES == ("redis", "rediss", "sentinel", "unix")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"amqp://u:{PW}@rabbit//", "'amqp' of 'amqp://u:***@rabbit//'"),
        (f"redis://:{PW}@h1/0;memcached://:{PW}@h2", "'memcached' of 'memcached://:***@h2'"),
        (f"u:{PW}@h:6379/0", "'u' of '***@h:6379/0'"),
        (f"//:{PW}@h:6379/0", "'(none)' of '***@h:6379/0'"),
    ],
)
def test_unsupported_scheme(url: str, shown: str) -> None:
    with pytest.raises(ConfigError) as raised:
        validate_broker_url(url)
    assert str(raised.value).startswith(f"--broker-url: scheme {shown} is not supported")
    assert PW not in str(raised.value)


def test_empty_url() -> None:
    with pytest.raises(ConfigError, match="--broker-url: must not be empty"):
        validate_broker_url("")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://h:1", BrokerEndpoint("redis://h:1", 0)),
        ("redis://h:1/7", BrokerEndpoint("redis://h:1/7", 7)),
        ("unix:///s.sock?db=4", BrokerEndpoint("unix:///s.sock?db=4", 4)),
        ("unix:///s.sock?db=x", BrokerEndpoint("unix:///s.sock?db=x", 0)),
        (
            f"sentinel://u:p%40{PW}@s1;sentinel://s2:26380/2",
            BrokerEndpoint(
                f"sentinel://u:p%40{PW}@s1;sentinel://s2:26380/2", 0,
                (("s1", 26379), ("s2", 26380)), f"p@{PW}", "u",
            ),
        ),
    ],
)
def test_parse_endpoint(url: str, expected: BrokerEndpoint) -> None:
    assert parse_endpoint(url) == expected
    assert parse_endpoint(url).is_sentinel == url.startswith("sentinel")


def test_database_not_a_number() -> None:
    with pytest.raises(ConfigError, match=r"^--broker-url: database 'zero' is not a number$"):
        parse_endpoint(f"redis://:{PW}@h:1/zero")


def test_master_name() -> None:
    assert require_master_name(TransportOptions(master_name="mymaster")) == "mymaster"
    with pytest.raises(ConfigError) as raised:
        require_master_name(TransportOptions())
    assert str(raised.value) == (
        "--broker-transport-option: master_name=NAME is required with a sentinel:// broker URL"
    )


def test_sources_read_the_same_endpoint() -> None:
    """The broker source decodes URLs with this parser, not a copy of it."""
    assert redis_source.parse_endpoint is parse_endpoint
    assert redis_source.BrokerEndpoint is BrokerEndpoint


def test_connecting_through_sentinel_without_master_name_is_the_same_error() -> None:
    endpoint = parse_endpoint("sentinel://127.0.0.1:1")
    with pytest.raises(ConfigError, match="master_name=NAME is required"):
        redis_source.connect(endpoint, TransportOptions())
