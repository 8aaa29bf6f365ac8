"""Broker URL kinds beyond plain redis://: Sentinel, TLS, a password (never shown)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import redis

from testkit.exposition import queue_counts, value
from testkit.net import find_free_port
from testkit.redis_server import RedisServer
from testkit.sidecar import Sidecar
from testkit.wait import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

FAST = ("--refresh-interval", "0.5", "--inspect-timeout", "0.5", "--no-events")


def _wait_ping(client: redis.Redis, timeout: float = 10) -> None:
    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    if not wait_until(answers, timeout=timeout, interval=0.1):
        raise TimeoutError("server did not answer PING")


def test_sentinel_url_finds_the_master(redis_server: RedisServer) -> None:
    """sentinel://… with master_name: the exporter asks Sentinel where the master is."""
    workdir = Path(tempfile.mkdtemp(prefix="sentinel-"))
    port = find_free_port()
    config = workdir / "sentinel.conf"
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {workdir}\n"
        f"sentinel monitor primary 127.0.0.1 {redis_server.port} 1\n"
    )
    sentinel = subprocess.Popen(
        ["redis-server", str(config), "--sentinel"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        _wait_ping(redis.Redis(port=port))
        redis_server.client().lpush("via_sentinel", b"{}", b"{}", b"{}")
        url = f"sentinel://127.0.0.1:{port}/0;sentinel://127.0.0.1:{find_free_port()}/0"
        with Sidecar(url, *FAST, "--broker-transport-option", "master_name=primary",
                     "--queue", "via_sentinel") as sidecar:
            sidecar.wait_ready()
            samples = sidecar.wait_for(
                lambda s: queue_counts(s, "via_sentinel")["paused"] == 3, timeout=20
            )
            assert value(samples, "celery_exporter_source_up", source="workers") == 1
    finally:
        sentinel.terminate()
        sentinel.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def _make_certificates(directory: Path) -> None:
    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
            "-keyout", "ca.key", "-out", "ca.crt")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", "server.key", "-out", "server.csr")
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "1", "-extfile", "san.ext", "-out", "server.crt")


def test_tls_broker_with_password_never_shows_the_password() -> None:
    """rediss:// with a CA bundle and a password: it reads the broker, and no log or
    metric contains the password."""
    password = "Sup3r-s3cret-pw"
    workdir = Path(tempfile.mkdtemp(prefix="tls-"))
    _make_certificates(workdir)
    port = find_free_port()
    server = subprocess.Popen([
        "redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
        "--tls-cert-file", str(workdir / "server.crt"),
        "--tls-key-file", str(workdir / "server.key"),
        "--tls-ca-cert-file", str(workdir / "ca.crt"), "--tls-auth-clients", "no",
        "--requirepass", password, "--save", "", "--appendonly", "no", "--dir", str(workdir),
    ], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(
            host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(workdir / "ca.crt"),
            password=password,
        )
        _wait_ping(client)
        client.lpush("secure", b"{}")
        url = (f"rediss://:{password}@127.0.0.1:{port}/0"
               f"?ssl_cert_reqs=required&ssl_ca_certs={workdir / 'ca.crt'}")
        with Sidecar(url, *FAST, "--queue", "secure", "--log-level", "debug") as sidecar:
            sidecar.wait_ready()
            sidecar.wait_for(lambda s: queue_counts(s, "secure")["paused"] == 1, timeout=20)
            body = sidecar.get("/metrics").text
            server.terminate()  # errors mentioning the URL must stay redacted too
            sidecar.wait_for(lambda s: value(s, "celery_exporter_up") == 0, timeout=20)
            log = sidecar.log()
        assert password not in body
        assert password not in log
        assert f"rediss://:***@127.0.0.1:{port}/0" in log  # the start-up line, redacted
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
