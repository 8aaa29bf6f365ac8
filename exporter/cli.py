"""Command line: the flags of `serve` and `demo`, and starting them.

Here are the flags, their help and their click types (numbers, ranges and choices are
checked by click). Their defaults, the parsing of their values, the rules between them
and the Settings they make are in exporter.config (`build_settings`).

Every flag has an environment variable, `CELERY_EXPORTER_` + the flag's name in upper
case with `-` as `_` (e.g. `--refresh-interval` ↔ `CELERY_EXPORTER_REFRESH_INTERVAL`).
"""

from __future__ import annotations

import functools
import sys
import tempfile
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import click

from exporter import __version__
from exporter.config.broker import DEFAULT_BROKER_URL
from exporter.config.errors import ConfigError
from exporter.config.load import RAW_DEFAULTS, build_settings
from exporter.config.settings import LOG_FORMATS, LOG_LEVELS

ENV_PREFIX = "CELERY_EXPORTER_"


def _env(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def _option(flag: str, *names: str, **kwargs: Any) -> Decorator:
    """A sidecar option: its environment variable, and its default from exporter.config."""
    env_flag = flag.split("/")[0]
    name = names[0] if names else env_flag.lstrip("-").replace("-", "_")
    return click.option(
        flag, *names, envvar=_env(env_flag), show_envvar=True, default=RAW_DEFAULTS[name],
        **kwargs,
    )


_POSITIVE = click.FloatRange(min=0.0, min_open=True)
_NON_NEGATIVE = click.FloatRange(min=0.0)

SIDECAR_OPTIONS: list[Decorator] = [
    _option("--broker-url",
            help=f"Celery broker URL: redis://, rediss://, unix:// or sentinel:// "
            f"(default {DEFAULT_BROKER_URL}). The password is never logged."),
    _option("--broker-url-file", type=click.Path(dir_okay=False),
            help="Read the broker URL from this file instead (for secrets)."),
    _option("--broker-transport-option", "transport_options", multiple=True, metavar="KEY=VALUE",
            help="A kombu Redis transport option, repeatable; a VALUE that parses as JSON is "
            "JSON (priority_steps=[0,3,6,9], sep=:, global_keyprefix=app:, master_name=...)."),
    _option("--queue", "queues", multiple=True, metavar="NAME",
            help="A queue to always report, even empty or not yet seen; repeatable."),
    _option("--refresh-interval", type=_POSITIVE, show_default=True,
            help="Seconds between two refreshes of the snapshot."),
    _option("--inspect-timeout", type=_POSITIVE, show_default=True,
            help="Seconds to wait for workers' inspect replies in each refresh."),
    _option("--discovery-interval", type=_NON_NEGATIVE, show_default=True,
            help="Seconds between two SCANs for kombu binding tables (new queues)."),
    _option("--listen-address", show_default=True, help="HOST:PORT to serve HTTP on."),
    _option("--web-workers", type=click.IntRange(1, 64), show_default=True,
            help="Gunicorn worker processes; one refresher serves them all."),
    _option("--web-threads", type=click.IntRange(1, 256), show_default=True,
            help="Threads per gunicorn worker that build Jobs API pages (they may read "
                 "the broker); everything else is answered on the event loop."),
    _option("--http-header-timeout", type=click.FloatRange(0.1, 3600.0), show_default=True,
            metavar="SECONDS",
            help="Close a connection whose request headers are not complete this many "
                 "seconds after it opened (or, kept alive, after the request began)."),
    _option("--max-connections", type=click.IntRange(1, 1_000_000),
            show_default=True, metavar="N",
            help="Open connections per web worker process; one more is answered 503 and "
                 "closed."),
    _option("--log-level", type=click.Choice(LOG_LEVELS), show_default=True, help="Log level."),
    _option("--log-format", type=click.Choice(LOG_FORMATS), show_default=True,
            help="Log lines as text or JSON."),
    _option("--events/--no-events", show_default=True,
            help="Consume the Celery event stream (task counters, histograms, job history)."),
    _option("--enable-events-interval", type=_NON_NEGATIVE, show_default=True,
            help="Every N seconds, ask workers to send task events (0: never)."),
    _option("--worker-timeout", type=_POSITIVE, show_default=True,
            help="A worker silent (no inspect reply, no heartbeat) this long is down."),
    _option("--completed-retention", type=click.IntRange(0), show_default=True,
            help="Completed jobs kept per queue."),
    _option("--failed-retention", type=click.IntRange(0), show_default=True,
            help="Failed jobs kept per queue."),
    _option("--retention-max-age", type=_NON_NEGATIVE, show_default=True,
            help="Forget finished jobs older than this many seconds (0: no age limit)."),
    _option("--max-task-names", type=click.IntRange(1), show_default=True,
            help="Distinct task names used as label values; later ones fold into 'other'."),
    _option("--max-tracked-jobs", type=click.IntRange(100), show_default=True,
            help="In-flight jobs tracked from events at most (oldest forgotten first)."),
    _option("--max-queues", type=click.IntRange(1), show_default=True,
            help="Queues reported at most (configured ones always); later queue names are "
            "not reported and are counted in celery_exporter_dropped_queue_names."),
    _option("--max-task-series", type=click.IntRange(1), show_default=True,
            help="(queue, task) pairs with task counters and runtime histograms of their "
            "own; later pairs are reported as task='other' of their queue."),
    _option("--max-exception-types", type=click.IntRange(1, 10_000), show_default=True,
            help="Distinct exception classes with series of their own in "
            "celery_task_failures_total; later ones are reported as exception='other'."),
    _option("--max-label-length", type=click.IntRange(16, 4096), show_default=True,
            help="Longest label value in /metrics; longer queue, task or worker names are "
            "cut and end with ~ and 8 hex digits of their hash."),
    _option("--max-message-bytes", type=click.IntRange(1024), show_default=True,
            help="Largest task message or event body decoded (after base64 and "
            "decompression); larger ones are skipped and counted."),
    _option("--auth/--no-auth", show_default=True,
            help="Require an API key for the Jobs API: read:jobs or manage:all for its GET "
            "routes, manage:all for job actions. --no-auth turns it off (a warning is "
            "logged)."),
    _option("--read-only/--no-read-only", show_default=True,
            help="Turn every job action off (403), whatever the keys allow; the GET routes "
            "keep working."),
    _option("--result-backend-url", metavar="URL",
            help="Celery's Redis result backend (redis://, rediss://, unix://). With "
            "result_extended = True in the Celery app, a retry reads the job's exact "
            "arguments there."),
    _option("--api-key", "api_keys", multiple=True, metavar="KEY",
            help="An API key (16+ characters) granting manage:all; repeatable. Only its "
            "SHA-256 is kept; it is never logged."),
    _option("--api-keys-file", type=click.Path(dir_okay=False),
            help="YAML/JSON list of {name, key or sha256, permissions} entries."),
    _option("--api-max-limit", type=click.IntRange(1, 10_000), show_default=True,
            help="Largest `limit` the Jobs API accepts."),
    _option("--metrics-bearer-token", metavar="TOKEN",
            help="Require this bearer token on /metrics."),
    _option("--metrics-bearer-token-file", type=click.Path(dir_okay=False),
            help="Read the /metrics bearer token from a file."),
    _option("--metrics-basic-auth", metavar="USER:PASSWORD",
            help="Require HTTP basic auth on /metrics."),
    _option("--metrics-basic-auth-file", type=click.Path(dir_okay=False),
            help="Read USER:PASSWORD for /metrics from a file."),
    _option("--history/--no-history", show_default=True,
            help="Keep finished jobs across restarts, in the broker's Redis under "
            "--history-key-prefix (trimmed to the retention limits)."),
    _option("--history-key-prefix", show_default=True,
            help="Prefix of the Redis keys the job history is saved under."),
    _option("--runtime-buckets",
            help="Comma-separated bucket bounds (seconds) of celery_task_runtime_seconds."),
    _option("--queue-wait-buckets",
            help="Comma-separated bucket bounds (seconds) of celery_task_queue_wait_seconds."),
]


def sidecar_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Attach every sidecar option to a command."""
    for option in reversed(SIDECAR_OPTIONS):
        func = option(func)
    return func


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
        run_server(replace(settings, state_dir=state_dir))


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
