"""Raw option values → validated, frozen Settings: every check of the configuration.

The raw values are a plain mapping by option name (the names the CLI's flags parse
into: `refresh_interval`, `broker_url_file`, `api_keys`, ...), already of the flag's
type (numbers in range, choices among theirs). Each value is parsed and checked, then
the rules between values; the first problem found is raised as a ConfigError whose
message starts with the flag to fix.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import MISSING, fields
from types import MappingProxyType
from typing import Any

from exporter.config.auth import ApiKey, keys_from_file, keys_from_flags, metrics_credentials
from exporter.config.broker import (
    parse_endpoint,
    read_broker_url,
    require_master_name,
    validate_result_backend_url,
)
from exporter.config.errors import ConfigError
from exporter.config.parsing import (
    buckets_or_default,
    parse_history_prefix,
    parse_listen_address,
    parse_queues,
)
from exporter.config.secrets import secret_value
from exporter.config.settings import DEFAULT_QUEUE_WAIT_BUCKETS, DEFAULT_RUNTIME_BUCKETS, Settings
from exporter.config.transport import parse_transport_options
from exporter.protocol.keys import TransportOptions

#: Options whose raw value is the setting of the same name, unchanged.
PASSED_AS_IS = (
    "refresh_interval", "inspect_timeout", "discovery_interval", "web_workers", "web_threads",
    "http_header_timeout", "max_connections", "log_level", "log_format", "events",
    "enable_events_interval", "worker_timeout", "completed_retention", "failed_retention",
    "retention_max_age", "max_task_names", "max_exception_types", "max_tracked_jobs", "max_queues",
    "max_task_series", "max_label_length", "max_message_bytes", "auth", "api_max_limit",
    "history", "read_only",
)

_SETTINGS_DEFAULTS = {f.name: f.default for f in fields(Settings) if f.default is not MISSING}

#: The raw value of every option when it is not given: the CLI's defaults.
RAW_DEFAULTS: Mapping[str, Any] = MappingProxyType({
    "broker_url": None,  # with no --broker-url-file either: DEFAULT_BROKER_URL
    "broker_url_file": None,
    "transport_options": (),
    "queues": (),
    "listen_address": (
        f"{_SETTINGS_DEFAULTS['listen_host']}:{_SETTINGS_DEFAULTS['listen_port']}"
    ),
    "api_keys": (),
    "api_keys_file": None,
    "metrics_bearer_token": None,
    "metrics_bearer_token_file": None,
    "metrics_basic_auth": None,
    "metrics_basic_auth_file": None,
    "history_key_prefix": _SETTINGS_DEFAULTS["history_prefix"],
    "result_backend_url": None,
    "runtime_buckets": None,  # DEFAULT_RUNTIME_BUCKETS
    "queue_wait_buckets": None,  # DEFAULT_QUEUE_WAIT_BUCKETS
    **{name: _SETTINGS_DEFAULTS[name] for name in PASSED_AS_IS},
})


def build_settings(raw: Mapping[str, Any], **overrides: Any) -> Settings:
    """Validate raw option values into Settings; raises ConfigError naming the flag.

    An option missing from `raw` takes its RAW_DEFAULTS value; a name that is no
    option is a TypeError (a mistake of the caller, not of the configuration).
    `overrides` are Settings fields set as given, before the rules between values
    are checked.
    """
    unknown = sorted(set(raw) - set(RAW_DEFAULTS))
    if unknown:
        raise TypeError(f"not configuration options: {', '.join(unknown)}")
    options = {**RAW_DEFAULTS, **raw}
    # Each value in turn: this order decides which problem is reported first.
    host, port = parse_listen_address(options["listen_address"])
    queues = parse_queues(options["queues"])
    broker_url = read_broker_url(options["broker_url"], options["broker_url_file"])
    transport = parse_transport_options(options["transport_options"])
    runtime_buckets = buckets_or_default(
        "--runtime-buckets", options["runtime_buckets"], DEFAULT_RUNTIME_BUCKETS
    )
    queue_wait_buckets = buckets_or_default(
        "--queue-wait-buckets", options["queue_wait_buckets"], DEFAULT_QUEUE_WAIT_BUCKETS
    )
    api_keys = _api_keys(options["api_keys"], options["api_keys_file"])
    bearer = secret_value("--metrics-bearer-token", options["metrics_bearer_token"],
                          "--metrics-bearer-token-file", options["metrics_bearer_token_file"])
    basic = secret_value("--metrics-basic-auth", options["metrics_basic_auth"],
                         "--metrics-basic-auth-file", options["metrics_basic_auth_file"])
    history_prefix = parse_history_prefix(options["history_key_prefix"])
    result_backend_url = validate_result_backend_url(options["result_backend_url"])
    values: dict[str, Any] = {
        "broker_url": broker_url,
        "transport": transport,
        "queues": queues,
        "listen_host": host,
        "listen_port": port,
        "runtime_buckets": runtime_buckets,
        "queue_wait_buckets": queue_wait_buckets,
        "api_keys": api_keys,
        "metrics_credentials": metrics_credentials(bearer, basic),
        "history_prefix": history_prefix,
        "result_backend_url": result_backend_url,
        **{name: options[name] for name in PASSED_AS_IS},
        **overrides,
    }
    _check_sentinel_master(values["broker_url"], values["transport"])
    _check_inspect_timeout(values["inspect_timeout"], values["refresh_interval"])
    return Settings(**values)


def _api_keys(flag_values: Iterable[str], keys_file: str | None) -> tuple[ApiKey, ...]:
    """`--api-key` values (each one key or several space-separated), then the keys file's."""
    keys = keys_from_flags(key for raw in flag_values for key in raw.split())
    if keys_file:
        keys += keys_from_file(keys_file)
    return tuple(keys)


def _check_sentinel_master(broker_url: str, transport: TransportOptions) -> None:
    """A sentinel:// broker URL needs `master_name`; the URL's database must be a number."""
    if parse_endpoint(broker_url).is_sentinel:
        require_master_name(transport)


def _check_inspect_timeout(inspect_timeout: float, refresh_interval: float) -> None:
    """Inspect replies are awaited less than two refresh intervals."""
    if inspect_timeout >= refresh_interval * 2:
        raise ConfigError(
            "--inspect-timeout: must be shorter than twice --refresh-interval "
            f"({inspect_timeout} >= 2 * {refresh_interval})"
        )
