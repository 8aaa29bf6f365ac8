"""The real command line, run as a subprocess: bad configs, --help, --version, a real start."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from importlib.metadata import version
from pathlib import Path

import click
import httpx
import pytest

import exporter
from exporter.cli import serve
from testkit.net import find_free_port
from testkit.procs import process_group_gone
from testkit.redis_server import RedisServer
from testkit.wait import wait_until

pytestmark = pytest.mark.e2e

CLI = Path(sys.executable).with_name("celery-jobs-exporter")
ERROR_PREFIX = "celery-jobs-exporter: error: "
SECRET = "s3cr3t-Pa55"

#: Every flag of `serve` (the documented interface), with the environment variable it reads.
EXPECTED_OPTIONS: dict[str, str] = {
    "--broker-url": "CELERY_EXPORTER_BROKER_URL",
    "--broker-url-file": "CELERY_EXPORTER_BROKER_URL_FILE",
    "--broker-transport-option": "CELERY_EXPORTER_BROKER_TRANSPORT_OPTION",
    "--queue": "CELERY_EXPORTER_QUEUE",
    "--refresh-interval": "CELERY_EXPORTER_REFRESH_INTERVAL",
    "--inspect-timeout": "CELERY_EXPORTER_INSPECT_TIMEOUT",
    "--discovery-interval": "CELERY_EXPORTER_DISCOVERY_INTERVAL",
    "--listen-address": "CELERY_EXPORTER_LISTEN_ADDRESS",
    "--web-workers": "CELERY_EXPORTER_WEB_WORKERS",
    "--web-threads": "CELERY_EXPORTER_WEB_THREADS",
    "--http-header-timeout": "CELERY_EXPORTER_HTTP_HEADER_TIMEOUT",
    "--max-connections": "CELERY_EXPORTER_MAX_CONNECTIONS",
    "--log-level": "CELERY_EXPORTER_LOG_LEVEL",
    "--log-format": "CELERY_EXPORTER_LOG_FORMAT",
    "--events": "CELERY_EXPORTER_EVENTS",
    "--enable-events-interval": "CELERY_EXPORTER_ENABLE_EVENTS_INTERVAL",
    "--worker-timeout": "CELERY_EXPORTER_WORKER_TIMEOUT",
    "--completed-retention": "CELERY_EXPORTER_COMPLETED_RETENTION",
    "--failed-retention": "CELERY_EXPORTER_FAILED_RETENTION",
    "--retention-max-age": "CELERY_EXPORTER_RETENTION_MAX_AGE",
    "--max-task-names": "CELERY_EXPORTER_MAX_TASK_NAMES",
    "--max-exception-types": "CELERY_EXPORTER_MAX_EXCEPTION_TYPES",
    "--max-tracked-jobs": "CELERY_EXPORTER_MAX_TRACKED_JOBS",
    "--max-queues": "CELERY_EXPORTER_MAX_QUEUES",
    "--max-task-series": "CELERY_EXPORTER_MAX_TASK_SERIES",
    "--max-label-length": "CELERY_EXPORTER_MAX_LABEL_LENGTH",
    "--max-message-bytes": "CELERY_EXPORTER_MAX_MESSAGE_BYTES",
    "--runtime-buckets": "CELERY_EXPORTER_RUNTIME_BUCKETS",
    "--queue-wait-buckets": "CELERY_EXPORTER_QUEUE_WAIT_BUCKETS",
    "--auth": "CELERY_EXPORTER_AUTH",
    "--read-only": "CELERY_EXPORTER_READ_ONLY",
    "--result-backend-url": "CELERY_EXPORTER_RESULT_BACKEND_URL",
    "--api-key": "CELERY_EXPORTER_API_KEY",
    "--api-keys-file": "CELERY_EXPORTER_API_KEYS_FILE",
    "--api-max-limit": "CELERY_EXPORTER_API_MAX_LIMIT",
    "--metrics-bearer-token": "CELERY_EXPORTER_METRICS_BEARER_TOKEN",
    "--metrics-bearer-token-file": "CELERY_EXPORTER_METRICS_BEARER_TOKEN_FILE",
    "--metrics-basic-auth": "CELERY_EXPORTER_METRICS_BASIC_AUTH",
    "--metrics-basic-auth-file": "CELERY_EXPORTER_METRICS_BASIC_AUTH_FILE",
    "--history": "CELERY_EXPORTER_HISTORY",
    "--history-key-prefix": "CELERY_EXPORTER_HISTORY_KEY_PREFIX",
}


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test process's environment without any CELERY_EXPORTER_ variable, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELERY_EXPORTER_")}
    env.update(extra or {})
    return env


def run_cli(
    args: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run the installed console script; kill it if it outlives `timeout`."""
    assert CLI.exists(), f"console script not installed at {CLI}"
    try:
        return subprocess.run(
            [str(CLI), *args],
            env=clean_env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{args} still running after {timeout}s (a bad config must exit): {exc}")


def assert_one_line_error(
    result: subprocess.CompletedProcess[str], *names: str, hidden: Sequence[str] = ()
) -> str:
    """Exit status 2, nothing on stdout, exactly one stderr line naming each of `names`."""
    stderr_lines = result.stderr.splitlines()
    assert result.returncode == 2, (
        f"exit status {result.returncode}, expected 2; stderr:\n{result.stderr[-3000:]}"
    )
    assert len(stderr_lines) == 1, f"expected one stderr line, got:\n{result.stderr[-3000:]}"
    assert result.stdout == ""
    line = stderr_lines[0]
    assert line.startswith(ERROR_PREFIX)
    for name in names:
        assert name in line, f"{name!r} not named in {line!r}"
    for secret in hidden:
        assert secret not in result.stderr + result.stdout
    return line


def safe_broker_url() -> str:
    """A broker URL on a loopback port where nothing listens (never the shared 6379)."""
    return f"redis://127.0.0.1:{find_free_port()}/0"


@pytest.fixture
def listen() -> list[str]:
    """A listen address on a free loopback port (in case a bad config did start a server)."""
    return ["--listen-address", f"127.0.0.1:{find_free_port()}"]


@pytest.fixture
def base(listen: list[str]) -> list[str]:
    """Safe defaults that a case's own flags override (click keeps the last value)."""
    return [*listen, "--broker-url", safe_broker_url()]


# -- bad configurations ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--refresh-interval", "abc"], ["--refresh-interval"]),
        (["--refresh-interval", "0"], ["--refresh-interval"]),
        (["--refresh-interval", "-1"], ["--refresh-interval"]),
        (["--inspect-timeout", "10", "--refresh-interval", "5"], ["--inspect-timeout"]),
        (["--inspect-timeout", "2", "--refresh-interval", "1"], ["--inspect-timeout"]),
        (["--broker-transport-option", "priority_steps=[1,2]"], ["--broker-transport-option"]),
        (["--broker-transport-option", "priority_steps=[0,300]"], ["--broker-transport-option"]),
        (["--broker-transport-option", "no-equals-sign"], ["--broker-transport-option"]),
        (["--broker-transport-option", "sep="], ["--broker-transport-option", "sep"]),
        (["--listen-address", "127.0.0.1"], ["--listen-address"]),
        (["--listen-address", "[::1]"], ["--listen-address"]),
        (["--listen-address", "localhost:99999"], ["--listen-address"]),
        (["--runtime-buckets", "3,2"], ["--runtime-buckets"]),
        (["--queue-wait-buckets", "fast,slow"], ["--queue-wait-buckets"]),
        (["--web-workers", "0"], ["--web-workers"]),
        (["--max-tracked-jobs", "5"], ["--max-tracked-jobs"]),
        (["--max-queues", "0"], ["--max-queues"]),
        (["--max-task-series", "-1"], ["--max-task-series"]),
        (["--max-label-length", "8"], ["--max-label-length"]),
        (["--max-message-bytes", "12"], ["--max-message-bytes"]),
        (["--log-level", "loud"], ["--log-level"]),
        (["--no-such-flag"], ["--no-such-flag"]),
    ],
)
def test_bad_option_exits_2_with_one_line(
    base: list[str], args: list[str], names: list[str]
) -> None:
    """Each bad value exits with status 2 and one stderr line naming the flag."""
    assert_one_line_error(run_cli(["serve", *base, *args]), *names)


@pytest.mark.parametrize(
    "url",
    [
        f"amqp://guest:{SECRET}@rabbit:5672//",
        f"http://admin:{SECRET}@redis:6379/0",
        f"redis://:{SECRET}@h1:6379/0;memcached://:{SECRET}@h2:11211",
        # The scheme forgotten: the password must stay hidden all the same.
        f"//:{SECRET}@h1:6379/0",
        f"default:{SECRET}@redis.internal:6379/0",
    ],
)
def test_bad_broker_url_scheme(listen: list[str], url: str) -> None:
    """An unsupported scheme is refused naming --broker-url, never printing the password."""
    result = run_cli(["serve", *listen, "--broker-url", url])
    assert_one_line_error(result, "--broker-url", hidden=[SECRET])


def test_password_of_refused_url_is_redacted(listen: list[str]) -> None:
    """The refused URL is shown with `***` where its password was."""
    result = run_cli(["serve", *listen, "--broker-url", f"amqp://guest:{SECRET}@rabbit//"])
    line = assert_one_line_error(result, "--broker-url", hidden=[SECRET])
    assert "amqp://guest:***@rabbit//" in line


def test_broker_url_database_must_be_a_number(listen: list[str]) -> None:
    """A non-numeric database is a configuration error, reported before anything starts."""
    result = run_cli(
        ["serve", *listen, "--broker-url", f"redis://:{SECRET}@127.0.0.1:1/not-a-db"]
    )
    assert_one_line_error(result, "--broker-url", hidden=[SECRET])


def test_sentinel_url_requires_master_name(listen: list[str]) -> None:
    """sentinel:// without master_name is a configuration error, reported up front."""
    result = run_cli(["serve", *listen, "--broker-url", f"sentinel://:{SECRET}@127.0.0.1:1"])
    assert_one_line_error(result, "--broker-transport-option", "master_name", hidden=[SECRET])


def test_missing_broker_url_file(listen: list[str], tmp_path: Path) -> None:
    """An unreadable (missing) URL file names --broker-url-file and the path."""
    missing = tmp_path / "no-such-secret"
    line = assert_one_line_error(
        run_cli(["serve", *listen, "--broker-url-file", str(missing)]), "--broker-url-file"
    )
    assert str(missing) in line


def test_broker_url_file_is_a_directory(listen: list[str], tmp_path: Path) -> None:
    """A directory is not a URL file."""
    assert_one_line_error(
        run_cli(["serve", *listen, "--broker-url-file", str(tmp_path)]), "--broker-url-file"
    )


def test_broker_url_file_not_text(listen: list[str], tmp_path: Path) -> None:
    """A URL file that is not UTF-8 text is an unreadable file, not a crash."""
    secret_file = tmp_path / "broker-url"
    secret_file.write_bytes(b"redis://:\xff\xfe" + SECRET.encode() + b"@127.0.0.1:1/0\n")
    assert_one_line_error(
        run_cli(["serve", *listen, "--broker-url-file", str(secret_file)]),
        "--broker-url-file",
        hidden=[SECRET],
    )


def test_broker_url_file_with_bad_scheme_hides_password(
    listen: list[str], tmp_path: Path
) -> None:
    """A URL read from a file is validated like the flag, its password never shown."""
    secret_file = tmp_path / "broker-url"
    secret_file.write_text(f"amqp://u:{SECRET}@rabbit//\n")
    assert_one_line_error(
        run_cli(["serve", *listen, "--broker-url-file", str(secret_file)]),
        "--broker-url",
        hidden=[SECRET],
    )


def test_broker_url_and_file_together(listen: list[str], tmp_path: Path) -> None:
    """Giving both the URL and the URL file is refused."""
    secret_file = tmp_path / "broker-url"
    secret_file.write_text("redis://127.0.0.1:1/0")
    result = run_cli(
        ["serve", *listen, "--broker-url", "redis://127.0.0.1:1/0",
         "--broker-url-file", str(secret_file)]
    )
    assert_one_line_error(result, "--broker-url-file")


@pytest.mark.parametrize(
    ("variable", "value", "flag"),
    [
        ("CELERY_EXPORTER_REFRESH_INTERVAL", "abc", "--refresh-interval"),
        ("CELERY_EXPORTER_INSPECT_TIMEOUT", "-3", "--inspect-timeout"),
        ("CELERY_EXPORTER_LISTEN_ADDRESS", "nowhere", "--listen-address"),
        ("CELERY_EXPORTER_BROKER_URL", f"amqp://u:{SECRET}@h//", "--broker-url"),
        ("CELERY_EXPORTER_BROKER_TRANSPORT_OPTION", "sep=: priority_steps=[2]",
         "--broker-transport-option"),
        ("CELERY_EXPORTER_RUNTIME_BUCKETS", "0,1", "--runtime-buckets"),
        ("CELERY_EXPORTER_WEB_WORKERS", "many", "--web-workers"),
        ("CELERY_EXPORTER_LOG_FORMAT", "xml", "--log-format"),
    ],
)
def test_bad_environment_variable(variable: str, value: str, flag: str) -> None:
    """A bad value in an environment variable is reported like the flag it stands for."""
    env = {
        "CELERY_EXPORTER_LISTEN_ADDRESS": f"127.0.0.1:{find_free_port()}",
        "CELERY_EXPORTER_BROKER_URL": safe_broker_url(),
        variable: value,
    }
    assert_one_line_error(run_cli(["serve"], env=env), flag, hidden=[SECRET])


def test_env_var_error_names_the_variable() -> None:
    """When the bad value came from the environment, the variable is named too."""
    env = {
        "CELERY_EXPORTER_REFRESH_INTERVAL": "abc",
        "CELERY_EXPORTER_BROKER_URL": safe_broker_url(),
    }
    line = assert_one_line_error(run_cli(["serve"], env=env), "--refresh-interval")
    assert "CELERY_EXPORTER_REFRESH_INTERVAL" in line
    assert "'abc'" in line


def test_flag_overrides_environment(base: list[str]) -> None:
    """A flag wins over its environment variable (the env value alone would be valid)."""
    result = run_cli(
        ["serve", *base, "--refresh-interval", "nope"],
        env={"CELERY_EXPORTER_REFRESH_INTERVAL": "5"},
    )
    line = assert_one_line_error(result, "--refresh-interval")
    assert "'nope'" in line


# -- help and version --------------------------------------------------------------------


def _help_blocks(text: str) -> dict[str, str]:
    """Split `--help` output into one whitespace-normalized block per option."""
    blocks: dict[str, str] = {}
    current: str | None = None
    for line in text.splitlines():
        match = re.match(r"^  (-\w, )?(--[\w-]+)", line)
        if match:
            current = match.group(2)
            blocks[current] = line
        elif current is not None and line.startswith("      "):
            blocks[current] += " " + line.strip()
        else:
            current = None
    return {flag: " ".join(block.split()) for flag, block in blocks.items()}


def test_serve_options_are_the_documented_ones() -> None:
    """The command's options are exactly the documented set (plus --help)."""
    flags = {
        param.opts[0]
        for param in serve.params
        if isinstance(param, click.Option) and param.opts[0] != "--help"
    }
    assert flags == set(EXPECTED_OPTIONS)


def test_help_lists_every_option_with_its_env_var() -> None:
    """`serve --help` shows each option and the environment variable it reads."""
    result = run_cli(["serve", "--help"])
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    blocks = _help_blocks(result.stdout)
    for flag, variable in EXPECTED_OPTIONS.items():
        assert flag in blocks, f"{flag} missing from --help:\n{result.stdout}"
        assert f"env var: {variable}" in blocks[flag], f"{flag}: {blocks[flag]!r}"
    assert "--no-events" in blocks["--events"]
    assert re.search(r"^\s+-h, --help\s", result.stdout, re.M)


def test_top_level_help_lists_commands() -> None:
    """The top-level help names both commands."""
    result = run_cli(["--help"])
    assert result.returncode == 0, result.stderr
    assert re.search(r"^\s+serve\s", result.stdout, re.M)
    assert re.search(r"^\s+demo\s", result.stdout, re.M)


def test_version() -> None:
    """--version prints the package version and exits 0."""
    result = run_cli(["--version"])
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert exporter.__version__ == version("celery-jobs-exporter")
    assert result.stdout.strip() == f"celery-jobs-exporter, version {exporter.__version__}"


# -- a good configuration starts ---------------------------------------------------------


@pytest.fixture
def protected_redis() -> Iterator[RedisServer]:
    """A private redis-server that requires a password (set after it started)."""
    server = RedisServer()
    client = server.client()
    client.config_set("requirepass", SECRET)
    client.close()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.mark.timeout(120)
def test_good_config_serves_and_never_logs_the_password(
    protected_redis: RedisServer, tmp_path: Path
) -> None:
    """Valid flags (at the inspect-timeout boundary) start a server that reads the broker."""
    port = find_free_port()
    url_file = tmp_path / "broker-url"
    url_file.write_text(f"redis://:{SECRET}@127.0.0.1:{protected_redis.port}/0\n")
    args = [
        str(CLI), "serve",
        "--broker-url-file", str(url_file),
        "--listen-address", f"127.0.0.1:{port}",
        "--refresh-interval", "0.5",
        "--inspect-timeout", "0.99",
        "--queue", "alpha,beta",
        "--queue", "gamma",
        "--log-level", "debug",
    ]
    log_path = tmp_path / "stderr.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            args, env=clean_env(), stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
    try:
        base = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            if proc.poll() is not None:
                return True
            try:
                return httpx.get(f"{base}/readyz", timeout=1.0).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_until(ready, timeout=60, interval=0.2)
        assert proc.poll() is None, log_path.read_text(errors="replace")[-3000:]
        metrics = httpx.get(f"{base}/metrics", timeout=5.0).text
        for queue in ("alpha", "beta", "gamma"):
            assert f'celery_queue_jobs{{queue="{queue}",status="paused"}} 0.0' in metrics
        assert "celery_exporter_up 1.0" in metrics
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    # The log is complete once nothing in the session (gunicorn workers included) runs.
    assert wait_until(lambda: process_group_gone(proc.pid), timeout=15)
    output = log_path.read_text(errors="replace")
    assert proc.returncode == 0, output[-3000:]
    assert f"redis://:***@127.0.0.1:{protected_redis.port}/0" in output
    assert SECRET not in output
