"""The settings of job actions: --read-only, --result-backend-url, --max-exception-types."""

from __future__ import annotations

import pytest

from exporter.config.errors import ConfigError
from exporter.config.load import build_settings


def test_defaults_allow_actions_without_a_result_backend() -> None:
    settings = build_settings({})
    assert settings.read_only is False
    assert settings.result_backend_url is None
    assert settings.max_exception_types == 100


@pytest.mark.parametrize(
    "url", ["redis://h:6379/1", "rediss://:secret@h:6380/0", "unix:///run/redis.sock?db=2"]
)
def test_a_redis_result_backend_is_accepted(url: str) -> None:
    assert build_settings({"result_backend_url": url}).result_backend_url == url


def test_an_empty_result_backend_means_none() -> None:
    assert build_settings({"result_backend_url": ""}).result_backend_url is None


@pytest.mark.parametrize("url", ["db+postgresql://u:pw@h/db", "rpc://", "h:6379"])
def test_another_result_backend_is_refused_naming_the_flag_without_the_password(
    url: str,
) -> None:
    with pytest.raises(ConfigError) as refused:
        build_settings({"result_backend_url": url})
    message = str(refused.value)
    assert message.startswith("--result-backend-url: scheme")
    assert "pw" not in message


def test_read_only_is_passed_as_given() -> None:
    assert build_settings({"read_only": True}).read_only is True
