"""HTTP hardening, against the real sidecar: secrets in logs, slow clients, response
headers, query parameters, HEAD; and unit tests of the pure parts."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import falcon.testing
import httpx
import pytest
from pythonjsonlogger.json import JsonFormatter

from exporter.cli import serve
from exporter.config.load import build_settings
from exporter.config.logs import TEXT_FORMAT, RedactingFilter
from exporter.config.settings import Settings, redact_url
from exporter.web.app import create_app
from testkit import REPO_ROOT
from testkit.net import find_free_port
from testkit.redis_server import RedisServer
from testkit.sidecar import Sidecar
from testkit.wait import wait_until

pytestmark = pytest.mark.e2e

SECRET = "Qu3ry-s3cr3t-pw"
KEY = "hardening-test-key-0123456789"
FAST = ("--refresh-interval", "0.5", "--inspect-timeout", "0.5", "--no-events")
PARTIAL_REQUEST = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
CLOSING_REQUEST = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
SOFTWARE_NAMES = ("gunicorn", "uvicorn", "falcon", "python", "uvloop")


# -- 1. secrets in logs -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("redis://host:6379/0?password=s3cr3t", "redis://host:6379/0?password=***"),
        ("unix:///path/redis.sock?db=0&password=s3cr3t",
         "unix:///path/redis.sock?db=0&password=***"),
        ("unix:///path/redis.sock?password=s3cr3t&db=0",
         "unix:///path/redis.sock?password=***&db=0"),
        ("rediss://:s3cr3t@h:6380/1?ssl_cert_reqs=required&password=s3cr3t#x",
         "rediss://:***@h:6380/1?ssl_cert_reqs=required&password=***#x"),
        ("sentinel://h1:26379?password=s3cr3t;sentinel://h2:26379?password=s3cr3t",
         "sentinel://h1:26379?password=***;sentinel://h2:26379?password=***"),
        ("sentinel://h1:26379?sentinel_password=s3cr3t; sentinel://u:s3cr3t@h2:26379",
         "sentinel://h1:26379?sentinel_password=***; sentinel://u:***@h2:26379"),
        ("amqp://h//?PASSWORD=s3cr3t&heartbeat=5", "amqp://h//?PASSWORD=***&heartbeat=5"),
        # The value runs to whitespace: what sticks to it is hidden too.
        ("Cannot connect to 'redis://h:1/0?password=s3cr3t': refused\nnext line",
         "Cannot connect to 'redis://h:1/0?password=*** refused\nnext line"),
        ("redis://h/0?password=s3;cr3t", "redis://h/0?password=***"),
        ("redis://h:1/0?db=2&passwords_are_fine=no", "redis://h:1/0?db=2&passwords_are_fine=no"),
        ("redis://h:1/0?db=0", "redis://h:1/0?db=0"),
    ],
)
def test_redact_url_hides_query_passwords(text: str, expected: str) -> None:
    assert redact_url(text) == expected
    assert "s3cr3t" not in redact_url(text)
    assert "cr3t" not in redact_url(text)


def _emit(formatter: logging.Formatter, emit: Any) -> str:
    """What one handler (with the redacting filter) writes when `emit(logger)` logs."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger(f"test.redaction.{id(stream)}")
    logger.propagate = False
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG)
    emit(logger)
    return stream.getvalue()


FORMATTERS: dict[str, Callable[[], logging.Formatter]] = {
    "text": lambda: logging.Formatter(TEXT_FORMAT),
    "json": lambda: JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"),
}


@pytest.mark.parametrize("fmt", FORMATTERS)
def test_tracebacks_stacks_and_extras_are_redacted(fmt: str) -> None:
    url = f"redis://user:{SECRET}@h:1/0?password={SECRET}"

    def with_exception(logger: logging.Logger) -> None:
        try:
            raise ConnectionError(f"Error connecting to {url}")
        except ConnectionError:
            logger.exception("refresh failed for %s", url)

    def with_stack_and_extra(logger: logging.Logger) -> None:
        record = logger.makeRecord(
            logger.name, logging.WARNING, __file__, 1, "plain message", (), None,
            sinfo=f"Stack (most recent call last):\n  connect({url!r})",
            extra={"broker": url},
        )
        logger.handle(record)

    out = _emit(FORMATTERS[fmt](), with_exception)
    assert SECRET not in out
    assert "Traceback (most recent call last)" in out
    assert "ConnectionError: Error connecting to redis://user:***@h:1/0?password=***" in (
        out if fmt == "text" else json.loads(out)["exc_info"]
    )
    out = _emit(FORMATTERS[fmt](), with_stack_and_extra)
    assert SECRET not in out
    assert "connect('redis://user:***@h:1/0?password=***" in out
    if fmt == "json":
        assert json.loads(out)["broker"] == "redis://user:***@h:1/0?password=***"


LOGGING_SCRIPT = textwrap.dedent("""
    import logging, sys, threading
    from exporter.config.logs import configure_logging

    configure_logging("debug", sys.argv[1])
    url = sys.argv[2]
    log = logging.getLogger("exporter.test")
    log.info("connecting to %s", url)
    try:
        raise OSError("cannot reach " + url)
    except OSError:
        log.exception("failed")
    logging.getLogger("gunicorn.error").warning("gunicorn says %s", url)
    def crash():
        raise RuntimeError("thread died on " + url)
    thread = threading.Thread(target=crash, name="crasher")
    thread.start()
    thread.join()
    raise ValueError("uncaught: " + url)
""")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_process_never_writes_the_password_to_stderr(fmt: str) -> None:
    """Logged and uncaught exceptions (main thread and others) go out redacted."""
    url = f"unix:///run/redis.sock?db=0&password={SECRET}"
    result = subprocess.run(
        [sys.executable, "-c", LOGGING_SCRIPT, fmt, url], capture_output=True, text=True,
        timeout=60, cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert result.returncode == 1
    assert SECRET not in result.stderr + result.stdout
    for expected in ("connecting to", "cannot reach", "gunicorn says", "thread died on",
                     "uncaught: "):
        assert f"{expected}" in result.stderr, result.stderr
    assert result.stderr.count("password=***") >= 5
    assert result.stderr.count("Traceback (most recent call last)") == 3
    if fmt == "json":
        lines = result.stderr.splitlines()
        assert len(lines) == 5
        assert all(isinstance(json.loads(line), dict) for line in lines)


@pytest.mark.parametrize(
    ("url", "fmt"),
    [
        ("redis://127.0.0.1:{port}/0?password={secret}", "text"),
        ("redis://127.0.0.1:{port}/0?password={secret}", "json"),
        ("unix://{tmp}/no-redis.sock?db=0&password={secret}", "text"),
        ("sentinel://127.0.0.1:{port}?password={secret};sentinel://127.0.0.1:{port}", "json"),
    ],
)
def test_sidecar_never_logs_a_query_password(url: str, fmt: str, tmp_path: Path) -> None:
    """A sidecar on an unreachable broker logs its failures, never the password."""
    broker = url.format(port=find_free_port(), secret=SECRET, tmp=tmp_path)
    args = [*FAST, "--log-level", "debug", "--log-format", fmt]
    if broker.startswith("sentinel"):
        args += ["--broker-transport-option", "master_name=mymaster"]
    with Sidecar(broker, *args) as sidecar:
        assert wait_until(lambda: "password=***" in sidecar.log()
                          and "broker source failed" in sidecar.log(), timeout=30), sidecar.log()
        assert sidecar.get("/healthz").status_code == 200
        assert sidecar.get("/readyz").status_code == 503
        sidecar.stop()
        log = sidecar.log()
    assert SECRET not in log
    assert "Listening at" in log  # gunicorn's own lines go through the same handler
    if fmt == "json":
        assert all(isinstance(json.loads(line), dict) for line in log.splitlines() if line)


# -- 2. slow clients --------------------------------------------------------------------------


class Conn:
    """A raw client connection, polled without blocking."""

    def __init__(self, port: int, payload: bytes = PARTIAL_REQUEST) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.opened = time.monotonic()
        if payload:
            self.sock.sendall(payload)
        self.sock.setblocking(False)
        self.data = b""
        self.closed_at: float | None = None

    def closed(self) -> bool:
        """Read what arrived; whether the server closed the connection."""
        while self.closed_at is None:
            try:
                chunk = self.sock.recv(65536)
            except BlockingIOError:
                return False
            except OSError:
                chunk = b""
            if not chunk:
                self.closed_at = time.monotonic()
            self.data += chunk
        return True

    def send(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            self.sock.send(data)

    @property
    def lifetime(self) -> float:
        assert self.closed_at is not None
        return self.closed_at - self.opened

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def connections(port: int, count: int, payload: bytes = PARTIAL_REQUEST) -> Iterator[list[Conn]]:
    conns: list[Conn] = []
    try:
        for _ in range(count):
            conns.append(Conn(port, payload))
        yield conns
    finally:
        for conn in conns:
            conn.close()


def status_of(sidecar: Sidecar, path: str = "/metrics") -> int | None:
    try:
        return sidecar.get(path).status_code
    except httpx.HTTPError:
        return None


def test_partial_headers_are_closed_after_the_header_timeout(redis_server: RedisServer) -> None:
    """45 clients sending part of their headers, 5 sending nothing: all closed after
    --http-header-timeout, while /metrics keeps answering."""
    with Sidecar(redis_server.url, *FAST, "--http-header-timeout", "1") as sidecar:
        sidecar.wait_ready()
        with connections(sidecar.port, 45) as slow, connections(sidecar.port, 5, b"") as idle:
            conns = slow + idle
            assert sidecar.get("/metrics").status_code == 200
            assert wait_until(lambda: all(c.closed() for c in conns), timeout=8), (
                f"{sum(not c.closed() for c in conns)} connections still open"
            )
            assert all(c.data == b"" for c in conns)  # closed, never answered
            assert min(c.lifetime for c in conns) >= 0.9
            assert max(c.lifetime for c in conns) < 5
            assert sidecar.get("/metrics").status_code == 200
        assert sidecar.process.poll() is None


def test_trickled_headers_are_closed_too(redis_server: RedisServer) -> None:
    """A client sending one header byte at a time still has to finish in time."""
    with Sidecar(redis_server.url, *FAST, "--http-header-timeout", "1") as sidecar:
        sidecar.wait_ready()
        with connections(sidecar.port, 5) as conns:

            def trickle() -> bool:
                for conn in conns:
                    if not conn.closed():
                        conn.send(b"x")
                return all(c.closed() for c in conns)

            assert wait_until(trickle, timeout=8, interval=0.2)
            assert 0.9 <= min(c.lifetime for c in conns) <= max(c.lifetime for c in conns) < 5
        assert sidecar.get("/metrics").status_code == 200


def test_next_request_on_a_kept_alive_connection_has_the_same_deadline(
    redis_server: RedisServer,
) -> None:
    """After a full request, the next one's partial headers are cut at the header timeout,
    well before the 15 s keep-alive."""
    with Sidecar(redis_server.url, *FAST, "--http-header-timeout", "1") as sidecar:
        sidecar.wait_ready()
        with connections(sidecar.port, 1, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n") as (conn,):
            assert wait_until(lambda: conn.closed() or conn.data.endswith(b'{"status": "ok"}'))
            assert conn.data.startswith(b"HTTP/1.1 200")
            started = time.monotonic()
            conn.send(PARTIAL_REQUEST)
            assert wait_until(conn.closed, timeout=8)
            assert conn.closed_at is not None and 0.9 <= conn.closed_at - started < 5


def test_connections_beyond_max_connections_are_refused(redis_server: RedisServer) -> None:
    """With 20 connections open, a 21st is answered 503 (JSON) and closed; the held ones
    are not served meanwhile; once they go, the sidecar answers again."""
    with Sidecar(redis_server.url, *FAST, "--max-connections", "20",
                 "--http-header-timeout", "60") as sidecar:
        sidecar.wait_ready()
        # A request the server closes itself: once answered, earlier connections are gone.
        with connections(sidecar.port, 1, CLOSING_REQUEST) as (check,):
            assert wait_until(check.closed, timeout=8)
            assert check.data.startswith(b"HTTP/1.1 200")
        with connections(sidecar.port, 20) as held:
            with connections(sidecar.port, 1, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n") as (
                extra,
            ):
                assert wait_until(extra.closed, timeout=8)
            head, _, body = extra.data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 503"), extra.data
            assert b"content-type: application/json" in head.lower()
            assert set(json.loads(body)) == {"message"}
            assert status_of(sidecar) in (503, None)  # httpx: refused as well
            assert not any(c.closed() for c in held)  # held open, never answered
            assert sidecar.process.poll() is None
        assert wait_until(lambda: status_of(sidecar) == 200, timeout=10)
        assert sidecar.get("/healthz").status_code == 200
        assert "refused" in sidecar.log() and "--max-connections" in sidecar.log()


def test_header_timeout_and_max_connections_flags() -> None:
    """Defaults, flags and environment variables reach the settings."""

    def settings(*args: str, env: dict[str, str] | None = None) -> Settings:
        saved = dict(os.environ)
        os.environ.update(env or {})
        try:
            with serve.make_context("serve", list(args)) as ctx:
                return build_settings(ctx.params)
        finally:
            os.environ.clear()
            os.environ.update(saved)

    defaults = settings()
    assert (defaults.http_header_timeout, defaults.max_connections) == (10.0, 1000)
    given = settings("--http-header-timeout", "2.5", "--max-connections", "50")
    assert (given.http_header_timeout, given.max_connections) == (2.5, 50)
    from_env = settings(env={"CELERY_EXPORTER_HTTP_HEADER_TIMEOUT": "3",
                             "CELERY_EXPORTER_MAX_CONNECTIONS": "7"})
    assert (from_env.http_header_timeout, from_env.max_connections) == (3.0, 7)
    for bad in (["--http-header-timeout", "0"], ["--max-connections", "0"]):
        with pytest.raises(click.BadParameter):
            settings(*bad)


# -- 3. response headers, 4. query parameters, 5. HEAD: in-process --------------------------


class NoSnapshot:
    snapshot = None
    rendered = None


@pytest.fixture
def client() -> falcon.testing.TestClient:
    app = create_app(NoSnapshot(), stale_after=10, keys=None,
                     jobs_backend=lambda: NoSnapshot())  # type: ignore[arg-type,return-value]
    return falcon.testing.TestClient(app)


@pytest.mark.parametrize("prefix", ["/v1", "/api/v1"])
@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("page=\u0661", "page"),  # ARABIC-INDIC DIGIT ONE
        ("page=\uff11", "page"),  # FULLWIDTH DIGIT ONE
        ("limit=\u0967\u0966", "limit"),  # DEVANAGARI 10
        ("page=%D9%A1", "page"),
        ("page=1&page=2", "page"),
        ("status=failed&status=active", "status"),
        ("limit=5&limit=5", "limit"),
        ("page=&page=1", "page"),
        ("status=failed&page=1&limit=3&limit=4", "limit"),
    ],
)
def test_bad_query_parameters_get_400_naming_them(
    client: falcon.testing.TestClient, prefix: str, query: str, named: str
) -> None:
    result = client.simulate_get(f"{prefix}/jobs/queues/work", query_string=query)
    assert result.status_code == 400, result.text
    assert set(result.json) == {"message"}
    assert result.json["message"].startswith(f"invalid `{named}`")
    assert result.headers["cache-control"] == "no-store"
    assert result.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("query", ["page=1", "page=+2&limit=%2010%20", "limit=7", ""])
def test_ascii_numbers_pass_validation(client: falcon.testing.TestClient, query: str) -> None:
    """Valid parameters get past validation (here to the 503 of a missing snapshot)."""
    result = client.simulate_get("/v1/jobs/queues/work", query_string=query)
    assert result.status_code == 503
    assert "snapshot" in result.json["message"]


@pytest.mark.parametrize("path", ["/metrics", "/healthz", "/readyz", "/", "/openapi.json",
                                  "/v1/jobs/queues", "/api/v1/jobs/queues/x", "/nothing"])
def test_every_answer_carries_the_security_headers(
    client: falcon.testing.TestClient, path: str
) -> None:
    for method in ("GET", "HEAD", "POST"):
        result = client.simulate_request(method, path)
        assert result.headers["x-content-type-options"] == "nosniff", (method, path)
        assert result.headers["cache-control"] == "no-store", (method, path)
        assert "server" not in result.headers


# -- 3, 4, 5 against the real sidecar ---------------------------------------------------------


@pytest.fixture
def sidecar(redis_server: RedisServer) -> Iterator[Sidecar]:
    """A ready sidecar with an API key and a configured queue; one refresh a minute, so the
    exposition does not change during a test."""
    with Sidecar(redis_server.url, "--refresh-interval", "60", "--inspect-timeout", "0.5",
                 "--no-events", "--api-key", KEY, "--queue", "work") as running:
        running.wait_ready()
        yield running


def assert_hardened_headers(response: httpx.Response) -> None:
    assert response.headers.get("cache-control") == "no-store", response.request.url
    assert response.headers.get("x-content-type-options") == "nosniff", response.request.url
    assert "server" not in response.headers, response.headers
    advertised = " ".join(f"{k}: {v}" for k, v in response.headers.items()).lower()
    assert not any(name in advertised for name in SOFTWARE_NAMES), advertised


def test_jobs_api_answers_and_errors_carry_the_headers(sidecar: Sidecar) -> None:
    auth = {"X-API-KEY": KEY}
    expected = {
        ("/v1/jobs/queues", True): 200,
        ("/api/v1/jobs/queues", True): 200,
        ("/v1/jobs/queues/work?status=waiting", True): 200,
        ("/api/v1/jobs/queues/work?page=2&limit=5", True): 200,
        ("/v1/jobs/queues/nope", True): 404,
        ("/api/v1/jobs/queues/work?status=bogus", True): 400,
        ("/v1/jobs/queues/work?page=1&page=2", True): 400,
        ("/v1/jobs/queues", False): 401,
        ("/api/v1/jobs/queues/work", False): 401,
        ("/v1/jobs/nothing-here", True): 404,
    }
    for (path, with_key), status in expected.items():
        response = sidecar.get(path, headers=auth if with_key else {})
        assert response.status_code == status, (path, response.text)
        assert_hardened_headers(response)
        if status != 200:
            assert list(response.json()) == ["message"]
    post = httpx.post(sidecar.base_url + "/v1/jobs/queues", headers=auth)
    assert post.status_code == 405
    assert_hardened_headers(post)
    for path in ("/metrics", "/healthz", "/readyz", "/", "/openapi.json"):
        assert_hardened_headers(sidecar.get(path))


def test_gunicorn_own_answers_do_not_advertise_it(sidecar: Sidecar) -> None:
    """A request gunicorn refuses before the app (a malformed request line)."""
    with connections(sidecar.port, 1, b"NOT A REQUEST\r\n\r\n") as (conn,):
        assert wait_until(conn.closed, timeout=8)
    assert conn.data.startswith(b"HTTP/1.1 400"), conn.data
    assert b"server:" not in conn.data.lower()
    assert not any(name.encode() in conn.data.lower() for name in SOFTWARE_NAMES)


@pytest.mark.parametrize(
    ("query", "named"),
    [("page=\u0661", "page"), ("page=\uff12", "page"), ("limit=\uff15", "limit"),
     ("page=1&page=2", "page"), ("status=failed&status=active", "status"),
     ("limit=1&limit=2", "limit")],
)
def test_sidecar_refuses_non_ascii_and_repeated_parameters(
    sidecar: Sidecar, query: str, named: str
) -> None:
    response = sidecar.get(f"/api/v1/jobs/queues/work?{query}", headers={"X-API-KEY": KEY})
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    assert list(response.json()) == ["message"]
    assert response.json()["message"].startswith(f"invalid `{named}`"), response.text
    ok = sidecar.get("/v1/jobs/queues/work?page=2&limit=3&status=failed",
                     headers={"X-API-KEY": KEY})
    assert ok.status_code == 200
    assert ok.json()["pagination"]["currentPage"] == 2


@pytest.mark.parametrize(
    "headers",
    [{}, {"Accept-Encoding": "gzip"}, {"Accept": "application/openmetrics-text"}],
)
def test_head_metrics_answers_like_get_without_a_body(
    sidecar: Sidecar, headers: dict[str, str]
) -> None:
    generation = sidecar.get("/readyz").json()["generation"]
    with httpx.Client(base_url=sidecar.base_url, timeout=10) as http:
        head = http.head("/metrics", headers=headers)
        get = http.get("/metrics", headers=headers)
    assert sidecar.get("/readyz").json()["generation"] == generation  # the same exposition
    assert head.status_code == get.status_code == 200
    assert head.content == b""
    for name in ("content-type", "content-encoding", "vary", "content-length",
                 "cache-control", "x-content-type-options"):
        assert head.headers.get(name) == get.headers.get(name), name
    assert int(head.headers["content-length"]) == get.num_bytes_downloaded > 0


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_head_health_answers_like_get(sidecar: Sidecar, path: str) -> None:
    head = httpx.head(sidecar.base_url + path, timeout=10)
    get = sidecar.get(path)
    assert head.status_code == get.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]
    assert int(head.headers["content-length"]) > 0
    if path == "/healthz":
        assert int(head.headers["content-length"]) == len(get.content)


def test_head_before_the_broker_was_read_is_503_like_get() -> None:
    with Sidecar(f"redis://127.0.0.1:{find_free_port()}/0", *FAST) as unready:
        assert wait_until(lambda: status_of(unready, "/healthz") == 200, timeout=30)
        head = httpx.head(unready.base_url + "/readyz", timeout=10)
        get = unready.get("/readyz")
        assert head.status_code == get.status_code == 503
        assert head.content == b""
        assert head.headers["content-type"] == get.headers["content-type"]
        assert_hardened_headers(head)
