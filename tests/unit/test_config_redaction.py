"""Passwords out of URLs: exporter.config.redaction, which logs and errors go through."""

from __future__ import annotations

import logging

import pytest

from exporter.config import settings
from exporter.config.logs import RedactingFilter
from exporter.config.redaction import redact_url, redact_userinfo
from exporter.config.settings import Settings

PW = "s3cr3t"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"redis://:{PW}@h:6379/0", "redis://:***@h:6379/0"),
        (f"rediss://user:{PW}@h:6380/1?ssl_cert_reqs=none", "rediss://user:***@h:6380/1?ssl_cert_reqs=none"),
        (f"unix://:{PW}@/run/redis.sock?db=2", "unix://:***@/run/redis.sock?db=2"),
        (f"sentinel://:{PW}@s1:26379;sentinel://:{PW}@s2:26379",
         "sentinel://:***@s1:26379;sentinel://:***@s2:26379"),
        (f"redis://h:1/0?password={PW}&db=1", "redis://h:1/0?password=***&db=1"),
        (f"sentinel://h1?sentinel_password={PW}", "sentinel://h1?sentinel_password=***"),
        (f"error: cannot reach redis://:{PW}@h:1/0 (refused)",
         "error: cannot reach redis://:***@h:1/0 (refused)"),
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("redis://user@h:1/0", "redis://user@h:1/0"),
        ("no URL here", "no URL here"),
        ("", ""),
    ],
)
def test_redact_url(text: str, expected: str) -> None:
    assert redact_url(text) == expected
    assert PW not in redact_url(text)


def test_redaction_is_idempotent() -> None:
    once = redact_url(f"redis://u:{PW}@h:1/0?password={PW}")
    assert redact_url(once) == once


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"default:{PW}@redis.internal:6379/0", "***@redis.internal:6379/0"),
        (f"//:{PW}@h1:6379/0", "***@h1:6379/0"),
        (f"amqp://guest:{PW}@rabbit//", "amqp://guest:***@rabbit//"),
        ("localhost:6379", "localhost:6379"),
    ],
)
def test_redact_userinfo_without_a_scheme(text: str, expected: str) -> None:
    assert redact_userinfo(text) == expected


def test_settings_keep_the_same_function() -> None:
    """Settings (and what imports redact_url from the settings module) use this one."""
    assert settings.redact_url is redact_url
    url = f"redis://:{PW}@h:1/0"
    assert Settings(broker_url=url).redacted_broker_url == "redis://:***@h:1/0"


def test_log_filter_redacts_with_it() -> None:
    record = logging.makeLogRecord({
        "msg": "connecting to %s",
        "args": (f"redis://:{PW}@h:1/0",),
        "extra_url": f"x?password={PW}",
    })
    assert RedactingFilter().filter(record)
    assert record.getMessage() == "connecting to redis://:***@h:1/0"
    assert getattr(record, "extra_url") == "x?password=***"  # noqa: B009
