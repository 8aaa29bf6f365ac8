"""Command line: flags and environment variables → Settings; `serve` and `demo`.

Every flag has an environment variable, `CELERY_EXPORTER_` + the flag's name in upper
case with `-` as `_` (e.g. `--refresh-interval` ↔ `CELERY_EXPORTER_REFRESH_INTERVAL`).
"""

from __future__ import annotations

import functools
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from exporter import __version__
from exporter.config.errors import ConfigError
from exporter.config.settings import (
    LOG_FORMATS,
    LOG_LEVELS,
    Settings,
    parse_buckets,
    parse_listen_address,
    parse_transport_options,
    validate_broker_url,
)
from exporter.protocol.cardinality import (
    DEFAULT_MAX_LABEL_LENGTH,
    DEFAULT_MAX_QUEUES,
    DEFAULT_MAX_TASK_SERIES,
)
from exporter.protocol.limits import DEFAULT_MAX_MESSAGE_BYTES
from exporter.sources.redis import parse_endpoint

ENV_PREFIX = "CELERY_EXPORTER_"
DEFAULT_BROKER_URL = "redis://localhost:6379/0"


def _env(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def _option(flag: str, *names: str, **kwargs: Any) -> Decorator:
    env_flag = flag.split("/")[0]
    return click.option(flag, *names, envvar=_env(env_flag), show_envvar=True, **kwargs)


_POSITIVE = click.FloatRange(min=0.0, min_open=True)
_NON_NEGATIVE = click.FloatRange(min=0.0)

SIDECAR_OPTIONS: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
    _option("--broker-url", default=None,
            help=f"Celery broker URL: redis://, rediss://, unix:// or sentinel:// "
            f"(default {DEFAULT_BROKER_URL}). The password is never logged."),
    _option("--broker-url-file", type=click.Path(dir_okay=False), default=None,
            help="Read the broker URL from this file instead (for secrets)."),
    _option("--broker-transport-option", "transport_options", multiple=True, metavar="KEY=VALUE",
            help="A kombu Redis transport option, repeatable; a VALUE that parses as JSON is "
            "JSON (priority_steps=[0,3,6,9], sep=:, global_keyprefix=app:, master_name=...)."),
    _option("--queue", "queues", multiple=True, metavar="NAME",
            help="A queue to always report, even empty or not yet seen; repeatable."),
    _option("--refresh-interval", type=_POSITIVE, default=5.0, show_default=True,
            help="Seconds between two refreshes of the snapshot."),
    _option("--inspect-timeout", type=_POSITIVE, default=1.0, show_default=True,
            help="Seconds to wait for workers' inspect replies in each refresh."),
    _option("--discovery-interval", type=_NON_NEGATIVE, default=30.0, show_default=True,
            help="Seconds between two SCANs for kombu binding tables (new queues)."),
    _option("--listen-address", default="0.0.0.0:9813", show_default=True,
            help="HOST:PORT to serve HTTP on."),
    _option("--web-workers", type=click.IntRange(1, 64), default=1, show_default=True,
            help="Gunicorn worker processes; one refresher serves them all."),
    _option("--web-threads", type=click.IntRange(1, 256), default=4, show_default=True,
            help="Threads per gunicorn worker that build Jobs API pages (they may read "
                 "the broker); everything else is answered on the event loop."),
    _option("--http-header-timeout", type=click.FloatRange(0.1, 3600.0), default=10.0,
            show_default=True, metavar="SECONDS",
            help="Close a connection whose request headers are not complete this many "
                 "seconds after it opened (or, kept alive, after the request began)."),
    _option("--max-connections", type=click.IntRange(1, 1_000_000), default=1000,
            show_default=True, metavar="N",
            help="Open connections per web worker process; one more is answered 503 and "
                 "closed."),
    _option("--log-level", type=click.Choice(LOG_LEVELS), default="info", show_default=True,
            help="Log level."),
    _option("--log-format", type=click.Choice(LOG_FORMATS), default="text", show_default=True,
            help="Log lines as text or JSON."),
    _option("--events/--no-events", default=True, show_default=True,
            help="Consume the Celery event stream (task counters, histograms, job history)."),
    _option("--enable-events-interval", type=_NON_NEGATIVE, default=0.0, show_default=True,
            help="Every N seconds, ask workers to send task events (0: never)."),
    _option("--worker-timeout", type=_POSITIVE, default=30.0, show_default=True,
            help="A worker silent (no inspect reply, no heartbeat) this long is down."),
    _option("--completed-retention", type=click.IntRange(0), default=1000, show_default=True,
            help="Completed jobs kept per queue."),
    _option("--failed-retention", type=click.IntRange(0), default=5000, show_default=True,
            help="Failed jobs kept per queue."),
    _option("--retention-max-age", type=_NON_NEGATIVE, default=0.0, show_default=True,
            help="Forget finished jobs older than this many seconds (0: no age limit)."),
    _option("--max-task-names", type=click.IntRange(1), default=500, show_default=True,
            help="Distinct task names used as label values; later ones fold into 'other'."),
    _option("--max-tracked-jobs", type=click.IntRange(100), default=100_000, show_default=True,
            help="In-flight jobs tracked from events at most (oldest forgotten first)."),
    _option("--max-queues", type=click.IntRange(1), default=DEFAULT_MAX_QUEUES,
            show_default=True,
            help="Queues reported at most (configured ones always); later queue names are "
            "not reported and are counted in celery_exporter_dropped_queue_names."),
    _option("--max-task-series", type=click.IntRange(1), default=DEFAULT_MAX_TASK_SERIES,
            show_default=True,
            help="(queue, task) pairs with task counters and runtime histograms of their "
            "own; later pairs are reported as task='other' of their queue."),
    _option("--max-label-length", type=click.IntRange(16, 4096),
            default=DEFAULT_MAX_LABEL_LENGTH, show_default=True,
            help="Longest label value in /metrics; longer queue, task or worker names are "
            "cut and end with ~ and 8 hex digits of their hash."),
    _option("--max-message-bytes", type=click.IntRange(1024), default=DEFAULT_MAX_MESSAGE_BYTES,
            show_default=True,
            help="Largest task message or event body decoded (after base64 and "
            "decompression); larger ones are skipped and counted."),
    _option("--auth/--no-auth", default=True, show_default=True,
            help="Require an API key with permission manage:all for the Jobs API. "
            "--no-auth turns it off (a warning is logged)."),
    _option("--api-key", "api_keys", multiple=True, metavar="KEY",
            help="An API key (16+ characters) granting manage:all; repeatable. Only its "
            "SHA-256 is kept; it is never logged."),
    _option("--api-keys-file", type=click.Path(dir_okay=False), default=None,
            help="YAML/JSON list of {name, key or sha256, permissions} entries."),
    _option("--api-max-limit", type=click.IntRange(1, 10_000), default=100, show_default=True,
            help="Largest `limit` the Jobs API accepts."),
    _option("--metrics-bearer-token", default=None, metavar="TOKEN",
            help="Require this bearer token on /metrics."),
    _option("--metrics-bearer-token-file", type=click.Path(dir_okay=False), default=None,
            help="Read the /metrics bearer token from a file."),
    _option("--metrics-basic-auth", default=None, metavar="USER:PASSWORD",
            help="Require HTTP basic auth on /metrics."),
    _option("--metrics-basic-auth-file", type=click.Path(dir_okay=False), default=None,
            help="Read USER:PASSWORD for /metrics from a file."),
    _option("--history/--no-history", default=True, show_default=True,
            help="Keep finished jobs across restarts, in the broker's Redis under "
            "--history-key-prefix (trimmed to the retention limits)."),
    _option("--history-key-prefix", default="celery-jobs-exporter:", show_default=True,
            help="Prefix of the Redis keys the job history is saved under."),
    _option("--runtime-buckets", default=None,
            help="Comma-separated bucket bounds (seconds) of celery_task_runtime_seconds."),
    _option("--queue-wait-buckets", default=None,
            help="Comma-separated bucket bounds (seconds) of celery_task_queue_wait_seconds."),
]


def sidecar_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Attach every sidecar option to a command."""
    for option in reversed(SIDECAR_OPTIONS):
        func = option(func)
    return func


def read_broker_url(url: str | None, url_file: str | None) -> str:
    """The broker URL from the flag, or from the file that holds it."""
    if url and url_file:
        raise ConfigError("--broker-url-file: give either --broker-url or --broker-url-file")
    if url_file:
        try:
            url = Path(url_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"--broker-url-file: cannot read {url_file}: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise ConfigError(f"--broker-url-file: {url_file} is not UTF-8 text") from exc
    return validate_broker_url(url or DEFAULT_BROKER_URL)


def read_secret(flag: str, value: str | None, file_flag: str, path: str | None) -> str | None:
    """A secret from its flag, or from the file its `-file` flag names."""
    if value and path:
        raise ConfigError(f"{file_flag}: give either {flag} or {file_flag}")
    if not path:
        return value
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{file_flag}: cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file_flag}: {path} is not UTF-8 text") from exc


def _auth_values(options: dict[str, Any]) -> dict[str, Any]:
    from exporter.config.auth import keys_from_file, keys_from_flags, metrics_credentials

    keys = keys_from_flags(k for raw in options["api_keys"] for k in raw.split())
    if options["api_keys_file"]:
        keys += keys_from_file(options["api_keys_file"])
    bearer = read_secret("--metrics-bearer-token", options["metrics_bearer_token"],
                         "--metrics-bearer-token-file", options["metrics_bearer_token_file"])
    basic = read_secret("--metrics-basic-auth", options["metrics_basic_auth"],
                        "--metrics-basic-auth-file", options["metrics_basic_auth_file"])
    prefix = options["history_key_prefix"]
    if not prefix or prefix.startswith("_kombu"):
        raise ConfigError("--history-key-prefix: must be non-empty and not a kombu prefix")
    return {
        "auth": options["auth"],
        "api_keys": tuple(keys),
        "api_max_limit": options["api_max_limit"],
        "metrics_credentials": metrics_credentials(bearer, basic),
        "history": options["history"],
        "history_prefix": prefix,
    }


def build_settings(options: dict[str, Any], **overrides: Any) -> Settings:
    """Validate raw option values into Settings; raises ConfigError naming the flag."""
    from exporter.config.settings import DEFAULT_QUEUE_WAIT_BUCKETS, DEFAULT_RUNTIME_BUCKETS

    host, port = parse_listen_address(options["listen_address"])
    queues = tuple(
        dict.fromkeys(q.strip() for raw in options["queues"] for q in raw.split(",") if q.strip())
    )
    values: dict[str, Any] = {
        "broker_url": read_broker_url(options["broker_url"], options["broker_url_file"]),
        "transport": parse_transport_options(options["transport_options"]),
        "queues": queues,
        "refresh_interval": options["refresh_interval"],
        "inspect_timeout": options["inspect_timeout"],
        "discovery_interval": options["discovery_interval"],
        "listen_host": host,
        "listen_port": port,
        "web_workers": options["web_workers"],
        "web_threads": options["web_threads"],
        "http_header_timeout": options["http_header_timeout"],
        "max_connections": options["max_connections"],
        "log_level": options["log_level"],
        "log_format": options["log_format"],
        "events": options["events"],
        "enable_events_interval": options["enable_events_interval"],
        "worker_timeout": options["worker_timeout"],
        "completed_retention": options["completed_retention"],
        "failed_retention": options["failed_retention"],
        "retention_max_age": options["retention_max_age"],
        "max_task_names": options["max_task_names"],
        "max_tracked_jobs": options["max_tracked_jobs"],
        "max_queues": options["max_queues"],
        "max_task_series": options["max_task_series"],
        "max_label_length": options["max_label_length"],
        "max_message_bytes": options["max_message_bytes"],
        "runtime_buckets": parse_buckets("--runtime-buckets", options["runtime_buckets"])
        if options["runtime_buckets"] else DEFAULT_RUNTIME_BUCKETS,
        "queue_wait_buckets": parse_buckets("--queue-wait-buckets", options["queue_wait_buckets"])
        if options["queue_wait_buckets"] else DEFAULT_QUEUE_WAIT_BUCKETS,
    }
    values.update(_auth_values(options))
    values.update(overrides)
    endpoint = parse_endpoint(values["broker_url"])
    if endpoint.is_sentinel and not values["transport"].master_name:
        raise ConfigError(
            "--broker-transport-option: master_name=NAME is required with a sentinel:// broker URL"
        )
    if values["inspect_timeout"] >= values["refresh_interval"] * 2:
        raise ConfigError(
            "--inspect-timeout: must be shorter than twice --refresh-interval "
            f"({values['inspect_timeout']} >= 2 * {values['refresh_interval']})"
        )
    return Settings(**values)


def _config_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ConfigError as exc:
            raise click.UsageError(str(exc)) from exc

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="celery-jobs-exporter")
def cli() -> None:
    """Prometheus exporter and Jobs API sidecar for Celery queues on Redis."""


@cli.command()
@sidecar_options
@_config_errors
def serve(**options: Any) -> None:
    """Serve /metrics for a Celery broker (gunicorn, one refresher per sidecar)."""
    from exporter.config.logs import configure_logging
    from exporter.serving.server import serve as run_server

    settings = build_settings(options)
    configure_logging(settings.log_level, settings.log_format)
    with tempfile.TemporaryDirectory(prefix="celery-jobs-exporter-") as state_dir:
        run_server(Settings(**{**settings.__dict__, "state_dir": state_dir}))


@cli.command()
@click.option("--port", envvar=_env("--demo-port"), show_envvar=True, type=click.IntRange(1, 65535),
              default=9813, show_default=True, help="Port of the exporter on 127.0.0.1.")
@click.option("--redis-port", envvar=_env("--demo-redis-port"), show_envvar=True,
              type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Port of the demo's own Redis (0: any free port).")
@_config_errors
def demo(port: int, redis_port: int) -> None:
    """Start a demo on loopback: its own Redis, a Celery worker, jobs in every status."""
    from exporter.demo.run import run_demo

    run_demo(exporter_port=port, redis_port=redis_port)


def main(argv: list[str] | None = None) -> None:
    """Entry point: one clear line and exit status 2 for any usage or configuration error."""
    try:
        cli.main(args=argv, prog_name="celery-jobs-exporter", standalone_mode=False)
    except click.UsageError as exc:
        click.echo(f"celery-jobs-exporter: error: {exc.format_message()}", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(f"celery-jobs-exporter: error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
