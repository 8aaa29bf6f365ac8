"""Settings: frozen, with the CLI's defaults and the values derived from them."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from exporter.config.auth import MetricsCredentials
from exporter.config.broker import DEFAULT_BROKER_URL
from exporter.config.load import RAW_DEFAULTS, build_settings
from exporter.config.settings import (
    DEFAULT_QUEUE_WAIT_BUCKETS,
    DEFAULT_RUNTIME_BUCKETS,
    LOG_FORMATS,
    LOG_LEVELS,
    Settings,
)
from exporter.model.jobs import RetentionLimits
from exporter.protocol.cardinality import (
    DEFAULT_MAX_LABEL_LENGTH,
    DEFAULT_MAX_QUEUES,
    DEFAULT_MAX_TASK_SERIES,
)
from exporter.protocol.keys import TransportOptions
from exporter.protocol.limits import DEFAULT_MAX_MESSAGE_BYTES, InputLimits


def test_defaults() -> None:
    settings = Settings(broker_url=DEFAULT_BROKER_URL)
    assert settings.transport == TransportOptions()
    assert settings.queues == ()
    assert (settings.refresh_interval, settings.inspect_timeout) == (5.0, 1.0)
    assert settings.discovery_interval == 30.0
    assert (settings.listen_host, settings.listen_port) == ("0.0.0.0", 9813)
    assert (settings.web_workers, settings.web_threads) == (1, 4)
    assert (settings.http_header_timeout, settings.max_connections) == (10.0, 1000)
    assert (settings.log_level, settings.log_format) == ("info", "text")
    assert settings.log_level in LOG_LEVELS and settings.log_format in LOG_FORMATS
    assert (settings.events, settings.enable_events_interval) == (True, 0.0)
    assert settings.worker_timeout == 30.0
    assert (settings.completed_retention, settings.failed_retention) == (1000, 5000)
    assert settings.retention_max_age == 0.0
    assert (settings.max_task_names, settings.max_tracked_jobs) == (500, 100_000)
    assert settings.max_queues == DEFAULT_MAX_QUEUES
    assert settings.max_task_series == DEFAULT_MAX_TASK_SERIES
    assert settings.max_label_length == DEFAULT_MAX_LABEL_LENGTH
    assert settings.max_message_bytes == DEFAULT_MAX_MESSAGE_BYTES
    assert settings.runtime_buckets == DEFAULT_RUNTIME_BUCKETS
    assert settings.queue_wait_buckets == DEFAULT_QUEUE_WAIT_BUCKETS
    assert settings.state_dir is None
    assert (settings.auth, settings.api_keys, settings.api_max_limit) == (True, (), 100)
    assert settings.metrics_credentials is None
    assert (settings.history, settings.history_prefix) == (True, "celery-jobs-exporter:")


def test_default_buckets_are_increasing_and_positive() -> None:
    for buckets in (DEFAULT_RUNTIME_BUCKETS, DEFAULT_QUEUE_WAIT_BUCKETS):
        assert buckets and buckets[0] > 0
        assert list(buckets) == sorted(set(buckets))


def test_default_buckets_give_percentiles_within_2_5x_from_10_ms_to_an_hour() -> None:
    """Prometheus interpolates a quantile inside its bucket: the bucket's ratio bounds the error."""
    for buckets in (DEFAULT_RUNTIME_BUCKETS, DEFAULT_QUEUE_WAIT_BUCKETS):
        assert (buckets[0], buckets[-1]) == (0.01, 3600.0)
        assert max(upper / lower for lower, upper in itertools.pairwise(buckets)) <= 2.5
        for true_value in (0.013, 0.3, 7.0, 30.003, 95.0, 2000.0, 3599.0):
            upper = next(bound for bound in buckets if bound >= true_value)
            lower = max((bound for bound in buckets if bound < true_value), default=0.0)
            # Whatever the spread inside the bucket, the estimate lies in (lower, upper].
            assert upper / true_value <= 2.5 and true_value / max(lower, 1e-9) <= 2.5


def test_building_from_no_options_gives_the_defaults() -> None:
    """The CLI with no flag at all and Settings' own defaults agree."""
    built = build_settings({})
    assert dataclasses.replace(built, metrics_credentials=None) == Settings(
        broker_url=DEFAULT_BROKER_URL
    )
    assert built.metrics_credentials == MetricsCredentials()
    assert not built.metrics_credentials.required


def test_raw_defaults_come_from_settings() -> None:
    defaults = Settings(broker_url=DEFAULT_BROKER_URL)
    assert RAW_DEFAULTS["listen_address"] == "0.0.0.0:9813"
    assert RAW_DEFAULTS["history_key_prefix"] == defaults.history_prefix
    assert RAW_DEFAULTS["refresh_interval"] == defaults.refresh_interval
    assert RAW_DEFAULTS["max_queues"] == defaults.max_queues
    assert RAW_DEFAULTS["broker_url"] is None
    with pytest.raises(TypeError):
        RAW_DEFAULTS["refresh_interval"] = 1.0  # type: ignore[index]


def test_frozen_and_replaced() -> None:
    settings = Settings(broker_url=DEFAULT_BROKER_URL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.refresh_interval = 1.0  # type: ignore[misc]
    moved = dataclasses.replace(settings, state_dir="/tmp/state")
    assert moved.state_dir == "/tmp/state"
    assert dataclasses.replace(moved, state_dir=None) == settings


def test_derived_values() -> None:
    settings = Settings(
        broker_url="redis://:pw@h:1/0", completed_retention=3, failed_retention=4,
        retention_max_age=60.0, max_message_bytes=2048,
    )
    assert settings.retention == RetentionLimits(3, 4, 60.0)
    assert settings.input_limits == InputLimits(max_message_bytes=2048)
    assert settings.redacted_broker_url == "redis://:***@h:1/0"


@pytest.mark.parametrize(
    ("refresh", "inspect", "expected"),
    [
        (5.0, 1.0, 15.0),  # 3 refreshes
        (1.0, 1.5, 9.0),  # one refresh, two inspect timeouts and 5 s
        (0.5, 0.99, 7.48),
    ],
)
def test_stale_after(refresh: float, inspect: float, expected: float) -> None:
    settings = Settings(broker_url=DEFAULT_BROKER_URL, refresh_interval=refresh,
                        inspect_timeout=inspect)
    assert settings.stale_after == pytest.approx(expected)
