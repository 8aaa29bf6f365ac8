"""Smoke tests for the test-support helpers (real redis-server, real worker)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from celery import Celery

from tests.support.celery_worker import CeleryWorker
from tests.support.redis_server import RedisServer, find_free_port
from tests.support.wait import wait_until


def test_find_free_port_is_bindable() -> None:
    """find_free_port returns a usable non-privileged port."""
    port = find_free_port()
    assert 1024 < port < 65536


def test_redis_server_basics(redis_server: RedisServer) -> None:
    """The server answers on its own port, never the shared 6379."""
    assert redis_server.port != 6379
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    assert redis_server.url_for_db(3).endswith(f":{redis_server.port}/3")
    client = redis_server.client()
    try:
        assert client.ping()
        client.set("k", "v")
        assert client.get("k") == b"v"
        assert client.config_get("save")["save"] == ""
        assert client.config_get("appendonly")["appendonly"] == "no"
    finally:
        client.close()


def test_redis_server_kill_and_restart_same_port(redis_server: RedisServer) -> None:
    """kill() drops the server; start() brings it back on the same port, empty."""
    port = redis_server.port
    client = redis_server.client()
    try:
        client.set("before", "1")
        redis_server.kill()
        assert not redis_server.running
        with pytest.raises(Exception):  # noqa: B017 - any connection error
            client.ping()
        redis_server.start()
        assert redis_server.running
        assert redis_server.port == port
        assert client.ping()  # redis-py reconnects transparently
        assert client.get("before") is None  # no persistence
    finally:
        client.close()


def test_redis_server_context_manager() -> None:
    """The context manager starts and stops the process."""
    with RedisServer() as server:
        pid = server.pid
        assert pid is not None
        assert server.client().ping()
    assert not server.running


@pytest.mark.timeout(120)
def test_worker_consumes_add_task(
    redis_server: RedisServer,
    celery_app: Celery,
    celery_worker_factory: Callable[..., CeleryWorker],
) -> None:
    """A real worker answers ping and drains the ``celery`` list."""
    worker = celery_worker_factory(redis_server.url, queues=["celery"], concurrency=1)
    replies = celery_app.control.ping(destination=[worker.hostname], timeout=2.0)
    assert any(worker.hostname in reply for reply in replies)

    client = redis_server.client()
    try:
        for i in range(5):
            celery_app.send_task("tests.add", args=(2, i), queue="celery")
        assert wait_until(lambda: client.llen("celery") == 0, timeout=30)
        assert wait_until(lambda: worker.log().count("succeeded in") == 5, timeout=30)
    finally:
        client.close()

    assert "tests.add[" in worker.log()
    worker.stop()
    assert not worker.running
