"""Shared fixtures over the kit (testkit/): a private redis-server per test, app, workers."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from testkit.celery_worker import CeleryWorker, load_app
from testkit.redis_server import RedisServer

if TYPE_CHECKING:
    from celery import Celery

_ENV_KEYS = ("TEST_BROKER_URL", "TEST_BROKER_TRANSPORT_OPTIONS")

#: Fixtures that start real services: a test using one (directly or through another
#: fixture) is end-to-end. Modules that start processes themselves (the sidecar,
#: promtool, Prometheus, pip) mark themselves with `pytest.mark.e2e`.
E2E_FIXTURES = frozenset({"redis_server", "celery_app", "celery_worker_factory"})


UNIT_DIR = Path(__file__).parent / "unit"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs real services `e2e`: `pytest -m "not e2e"` is the unit layer."""
    for item in items:
        if E2E_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)
        if UNIT_DIR in Path(str(item.path)).parents and item.get_closest_marker("e2e"):
            raise pytest.UsageError(
                f"{item.nodeid} needs real services: tests/unit/ is the fast layer, move it out"
            )


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A fresh redis-server on a free loopback port, stopped after the test."""
    server = RedisServer()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def celery_app_env(
    monkeypatch: pytest.MonkeyPatch,
) -> Callable[..., dict[str, str]]:
    """Return ``set_env(server, transport_options=None, db=0)`` for the test app.

    Sets TEST_BROKER_URL / TEST_BROKER_TRANSPORT_OPTIONS in ``os.environ``
    (restored after the test) and returns the two values as a dict.
    """

    def set_env(
        server: RedisServer,
        transport_options: Mapping[str, Any] | None = None,
        db: int = 0,
    ) -> dict[str, str]:
        url = server.url_for_db(db)
        monkeypatch.setenv("TEST_BROKER_URL", url)
        values = {"TEST_BROKER_URL": url}
        if transport_options:
            encoded = json.dumps(dict(transport_options))
            monkeypatch.setenv("TEST_BROKER_TRANSPORT_OPTIONS", encoded)
            values["TEST_BROKER_TRANSPORT_OPTIONS"] = encoded
        else:
            monkeypatch.delenv("TEST_BROKER_TRANSPORT_OPTIONS", raising=False)
        return values

    return set_env


@pytest.fixture
def celery_app(redis_server: RedisServer) -> Iterator[Celery]:
    """The test Celery app bound to ``redis_server`` (default transport options)."""
    saved = {k: os.environ.get(k) for k in _ENV_KEYS}
    app = load_app(redis_server.url)
    try:
        yield app
    finally:
        app.close()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def celery_worker_factory() -> Iterator[Callable[..., CeleryWorker]]:
    """Return ``make(broker_url, **kwargs) -> CeleryWorker`` (started, ready).

    Every worker created is stopped (process group killed) after the test.
    """
    workers: list[CeleryWorker] = []

    def make(broker_url: str, *, ready_timeout: float = 60.0, **kwargs: Any) -> CeleryWorker:
        worker = CeleryWorker(broker_url, **kwargs)
        workers.append(worker)
        worker.wait_ready(ready_timeout)
        return worker

    try:
        yield make
    finally:
        for worker in reversed(workers):
            # Cleanup, not a test of shutdown: a task still running (a long sleep) is
            # not waited for beyond two seconds.
            worker.close(stop_timeout=2.0)
