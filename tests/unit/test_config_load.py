"""build_settings: raw option values → Settings, each value and the rules between them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest

from exporter.cli import serve
from exporter.config.auth import MANAGE_ALL, digest
from exporter.config.broker import DEFAULT_BROKER_URL
from exporter.config.errors import ConfigError
from exporter.config.load import PASSED_AS_IS, RAW_DEFAULTS, build_settings
from exporter.config.settings import DEFAULT_QUEUE_WAIT_BUCKETS, DEFAULT_RUNTIME_BUCKETS

SECRET = "s3cr3t-Pa55-w0rd"
KEY = "an-api-key-0123456789"
SENTINEL_ERROR = (
    "--broker-transport-option: master_name=NAME is required with a sentinel:// broker URL"
)


def error_of(**raw: Any) -> str:
    with pytest.raises(ConfigError) as raised:
        build_settings(raw)
    return str(raised.value)


# -- the options -------------------------------------------------------------------------


def test_the_options_are_the_cli_flags() -> None:
    """Every flag of `serve` is an option here (with its default), and nothing else."""
    assert {param.name for param in serve.params if param.name != "help"} == set(RAW_DEFAULTS)
    assert set(PASSED_AS_IS) <= set(RAW_DEFAULTS)


def test_the_cli_defaults_are_the_raw_defaults() -> None:
    for param in serve.params:
        if isinstance(param, click.Option) and param.name in RAW_DEFAULTS:
            assert param.default == RAW_DEFAULTS[param.name], param.name


def test_unknown_option_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="refresh_intervall"):
        build_settings({"refresh_intervall": 3.0})


def test_overrides_are_set_before_the_rules() -> None:
    assert build_settings({}, state_dir="/run/x").state_dir == "/run/x"
    with pytest.raises(ConfigError, match="--inspect-timeout"):
        build_settings({}, inspect_timeout=20.0)


# -- each value -------------------------------------------------------------------------


def test_values_passed_as_is() -> None:
    raw = {"refresh_interval": 2.0, "web_workers": 3, "log_format": "json", "events": False}
    settings = build_settings(raw)
    assert (settings.refresh_interval, settings.web_workers) == (2.0, 3)
    assert (settings.log_format, settings.events) == ("json", False)


def test_listen_address() -> None:
    settings = build_settings({"listen_address": "[::1]:8000"})
    assert (settings.listen_host, settings.listen_port) == ("::1", 8000)
    assert error_of(listen_address="nowhere").startswith("--listen-address: 'nowhere'")


def test_queues_are_split_stripped_and_deduplicated() -> None:
    settings = build_settings({"queues": ("a,b", " c , a", ",")})
    assert settings.queues == ("a", "b", "c")


def test_buckets_default_when_unset_or_empty() -> None:
    for value in (None, ""):
        settings = build_settings({"runtime_buckets": value, "queue_wait_buckets": value})
        assert settings.runtime_buckets == DEFAULT_RUNTIME_BUCKETS
        assert settings.queue_wait_buckets == DEFAULT_QUEUE_WAIT_BUCKETS
    settings = build_settings({"runtime_buckets": "0.5,1", "queue_wait_buckets": "2"})
    assert (settings.runtime_buckets, settings.queue_wait_buckets) == ((0.5, 1.0), (2.0,))
    assert error_of(queue_wait_buckets="3,2").startswith("--queue-wait-buckets:")


@pytest.mark.parametrize("prefix", ["", "_kombu.binding.", "_kombu"])
def test_history_prefix_must_not_be_empty_or_kombus(prefix: str) -> None:
    assert error_of(history_key_prefix=prefix) == (
        "--history-key-prefix: must be non-empty and not a kombu prefix"
    )


def test_transport_options() -> None:
    settings = build_settings({"transport_options": ("sep=:", "priority_steps=[0,5]")})
    assert (settings.transport.sep, settings.transport.priority_steps) == (":", (0, 5))


# -- the broker URL ---------------------------------------------------------------------


@pytest.mark.parametrize("url", [None, ""])
def test_broker_url_defaults(url: str | None) -> None:
    assert build_settings({"broker_url": url}).broker_url == DEFAULT_BROKER_URL


def test_broker_url_from_its_file(tmp_path: Path) -> None:
    url_file = tmp_path / "url"
    url_file.write_text(f"redis://:{SECRET}@h:1/2\n")
    assert build_settings({"broker_url_file": str(url_file)}).broker_url == (
        f"redis://:{SECRET}@h:1/2"
    )


def test_empty_broker_url_file_means_the_default(tmp_path: Path) -> None:
    url_file = tmp_path / "url"
    url_file.write_text("\n")
    assert build_settings({"broker_url_file": str(url_file)}).broker_url == DEFAULT_BROKER_URL


def test_broker_url_and_its_file_together(tmp_path: Path) -> None:
    url_file = tmp_path / "url"
    url_file.write_text("redis://h:1/0")
    assert error_of(broker_url="redis://h:1/0", broker_url_file=str(url_file)) == (
        "--broker-url-file: give either --broker-url or --broker-url-file"
    )


def test_missing_broker_url_file(tmp_path: Path) -> None:
    missing = tmp_path / "none"
    assert error_of(broker_url_file=str(missing)) == (
        f"--broker-url-file: cannot read {missing}: No such file or directory"
    )


def test_unsupported_scheme_hides_the_password() -> None:
    message = error_of(broker_url=f"amqp://u:{SECRET}@rabbit//")
    assert message == (
        "--broker-url: scheme 'amqp' of 'amqp://u:***@rabbit//' is not supported; "
        "use one of redis://, rediss://, sentinel://, unix://"
    )


@pytest.mark.parametrize(
    "url", [f"redis://:{SECRET}@h:1/x", f"sentinel://:{SECRET}@h:1/x"]
)
def test_database_must_be_a_number(url: str) -> None:
    """Checked with the URL's endpoint: a sentinel:// URL's database before master_name."""
    assert error_of(broker_url=url) == "--broker-url: database 'x' is not a number"


# -- the rules between values ----------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        f"sentinel://:{SECRET}@127.0.0.1:26379",
        "sentinel://s1:26379;sentinel://s2:26379/3",
        " sentinel://s1",
    ],
)
def test_sentinel_url_needs_master_name(url: str) -> None:
    assert error_of(broker_url=url) == SENTINEL_ERROR
    settings = build_settings({"broker_url": url, "transport_options": ("master_name=m",)})
    assert settings.transport.master_name == "m"


def test_sentinel_url_from_a_file_needs_master_name(tmp_path: Path) -> None:
    url_file = tmp_path / "url"
    url_file.write_text("sentinel://s1;sentinel://s2\n")
    assert error_of(broker_url_file=str(url_file)) == SENTINEL_ERROR


@pytest.mark.parametrize("url", ["redis://h:1/0", "rediss://h:1/0", "unix:///run/r.sock"])
def test_master_name_is_not_needed_without_sentinel(url: str) -> None:
    assert build_settings({"broker_url": url}).transport.master_name is None


@pytest.mark.parametrize(
    ("inspect", "refresh"), [(10.0, 5.0), (2.0, 1.0), (2.5, 1.0), (1.0, 0.5)]
)
def test_inspect_timeout_must_be_shorter_than_two_refreshes(
    inspect: float, refresh: float
) -> None:
    assert error_of(inspect_timeout=inspect, refresh_interval=refresh) == (
        "--inspect-timeout: must be shorter than twice --refresh-interval "
        f"({inspect} >= 2 * {refresh})"
    )


@pytest.mark.parametrize(("inspect", "refresh"), [(0.99, 0.5), (1.0, 5.0), (9.99, 5.0)])
def test_inspect_timeout_just_below_two_refreshes(inspect: float, refresh: float) -> None:
    settings = build_settings({"inspect_timeout": inspect, "refresh_interval": refresh})
    assert (settings.inspect_timeout, settings.refresh_interval) == (inspect, refresh)


# -- access -----------------------------------------------------------------------------


def test_api_keys_from_flags_and_file(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.yaml"
    keys_file.write_text(f"- {{name: ops, key: {KEY}-file, permissions: [read]}}\n")
    settings = build_settings(
        {"api_keys": (f"{KEY}-1 {KEY}-2", f"{KEY}-3"), "api_keys_file": str(keys_file)}
    )
    assert [key.name for key in settings.api_keys] == ["flag-1", "flag-2", "flag-3", "ops"]
    assert settings.api_keys[0].sha256 == digest(f"{KEY}-1")
    assert settings.api_keys[0].permissions == frozenset({MANAGE_ALL})
    assert settings.api_keys[3].permissions == frozenset({"read"})


def test_metrics_credentials_from_files(tmp_path: Path) -> None:
    bearer, basic = tmp_path / "bearer", tmp_path / "basic"
    bearer.write_text(SECRET + "\n")
    basic.write_text("prom:" + SECRET + "\n")
    credentials = build_settings(
        {"metrics_bearer_token_file": str(bearer), "metrics_basic_auth_file": str(basic)}
    ).metrics_credentials
    assert credentials is not None and credentials.required
    assert credentials.bearer_sha256 == digest(SECRET)
    assert credentials.basic_user_sha256 == digest("prom")
    assert credentials.basic_password_sha256 == digest(SECRET)


def test_empty_bearer_token_file_is_too_short(tmp_path: Path) -> None:
    bearer = tmp_path / "bearer"
    bearer.write_text("\n")
    assert error_of(metrics_bearer_token_file=str(bearer)) == (
        "--metrics-bearer-token: the token is shorter than 16 characters"
    )


def test_metrics_secret_and_its_file_together(tmp_path: Path) -> None:
    basic = tmp_path / "basic"
    basic.write_text("u:p")
    assert error_of(metrics_basic_auth="u:p", metrics_basic_auth_file=str(basic)) == (
        "--metrics-basic-auth-file: give either --metrics-basic-auth or --metrics-basic-auth-file"
    )


# -- which problem is reported first ----------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "flag"),
    [
        ({"listen_address": "bad", "broker_url": "amqp://h"}, "--listen-address"),
        ({"broker_url": "amqp://h", "runtime_buckets": "3,2"}, "--broker-url"),
        ({"runtime_buckets": "3,2", "api_keys": ("short",)}, "--runtime-buckets"),
        ({"api_keys": ("short",), "history_key_prefix": ""}, "--api-key"),
        ({"metrics_basic_auth": "bad", "history_key_prefix": ""}, "--history-key-prefix"),
        ({"metrics_basic_auth": "bad", "metrics_bearer_token": "short"}, "--metrics-basic-auth"),
        ({"broker_url": "redis://h/x", "history_key_prefix": ""}, "--history-key-prefix"),
        ({"broker_url": "sentinel://h", "inspect_timeout": 9.0, "refresh_interval": 1.0},
         "--broker-transport-option"),
    ],
)
def test_first_problem_is_reported(raw: dict[str, Any], flag: str) -> None:
    assert error_of(**raw).startswith(flag + ":")
