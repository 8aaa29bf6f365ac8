"""Real Celery app for tests and benchmarks, configured from the environment.

Workers run it as ``celery -A testkit.celery_app worker``; its tasks keep the names
``tests.*`` (``tests.add``, ``tests.sleep``, ...), which the tests send by name.

Environment:
    TEST_BROKER_URL: broker URL (required), e.g. ``redis://127.0.0.1:PORT/0``.
    TEST_BROKER_TRANSPORT_OPTIONS: optional JSON object of kombu transport
        options, e.g. ``{"priority_steps": [0, 1, 2], "global_keyprefix": "pfx:"}``.
    TEST_RESULT_BACKEND: optional result backend URL; when set, results are stored
        there with ``result_extended`` (the task's name, args, kwargs and queue).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

from celery import Celery

BROKER_URL_ENV = "TEST_BROKER_URL"
TRANSPORT_OPTIONS_ENV = "TEST_BROKER_TRANSPORT_OPTIONS"


def _transport_options() -> dict[str, Any]:
    """Parse TEST_BROKER_TRANSPORT_OPTIONS (a JSON object) or return {}."""
    raw = os.environ.get(TRANSPORT_OPTIONS_ENV, "").strip()
    if not raw:
        return {}
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError(f"{TRANSPORT_OPTIONS_ENV} must be a JSON object, got {raw!r}")
    return value


def _broker_url() -> str:
    """Return TEST_BROKER_URL or fail loudly."""
    url = os.environ.get(BROKER_URL_ENV)
    if not url:
        raise RuntimeError(f"{BROKER_URL_ENV} must be set to use testkit.celery_app")
    return url


app = Celery("tests", broker=_broker_url())
app.conf.update(
    broker_transport_options=_transport_options(),
    result_backend=os.environ.get("TEST_RESULT_BACKEND") or None,
    result_extended=bool(os.environ.get("TEST_RESULT_BACKEND")),
    task_send_sent_event=True,
    # TEST_TASK_EVENTS=0 starts workers without task events (only worker heartbeats).
    worker_send_task_events=os.environ.get("TEST_TASK_EVENTS", "1") == "1",
    task_track_started=True,
    worker_prefetch_multiplier=1,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    event_serializer="json",
    broker_connection_retry_on_startup=True,
    task_default_queue="celery",
)

TaskDecorator = Callable[[Callable[..., Any]], Any]


def task(**options: Any) -> TaskDecorator:
    """Typed wrapper around ``app.task`` (celery ships no type hints)."""
    decorator: TaskDecorator = app.task(**options)
    return decorator


@task(name="tests.add")
def add(x: int, y: int) -> int:
    """Return x + y."""
    return x + y


@task(name="tests.sleep")
def sleep(seconds: float) -> float:
    """Sleep ``seconds`` then return it."""
    time.sleep(seconds)
    return seconds


@task(name="tests.sleep_late", acks_late=True)
def sleep_late(seconds: float) -> float:
    """``sleep`` acknowledged only when it ends (its message stays unacked meanwhile)."""
    time.sleep(seconds)
    return seconds


@task(name="tests.fail")
def fail(message: str) -> None:
    """Always raise ValueError(message)."""
    raise ValueError(message)


@task(
    name="tests.flaky_fail",
    autoretry_for=(ValueError,),
    max_retries=2,
    default_retry_delay=0.2,
)
def flaky_fail(message: str) -> None:
    """Raise ValueError; autoretry twice, then fail for good."""
    raise ValueError(message)


@task(name="tests.ingest")
def ingest(*, ingestionSourceId: str, payload: Any = None) -> dict[str, Any]:
    """Return {"ok": True, "source": ingestionSourceId}."""
    return {"ok": True, "source": ingestionSourceId}


@task(name="tests.record_unless_gated")
def record_unless_gated(gate: str, *args: Any, **kwargs: Any) -> int:
    """Fail while the Redis key `gate` exists; else append [args, kwargs] (JSON) to
    `<gate>:calls` and return how many calls were recorded: a retry's exact arguments
    can be compared with the first call's."""
    import redis

    client = redis.Redis.from_url(_broker_url())
    if client.exists(gate):
        raise RuntimeError(f"gate {gate} is closed")
    return int(client.rpush(f"{gate}:calls", json.dumps([list(args), kwargs])))


@task(name="tests.raise_exception")
def raise_exception(kind: str, message: str = "") -> None:
    """Raise a builtin exception class by name (ValueError, KeyError, ...)."""
    import builtins

    error = getattr(builtins, kind)
    if not (isinstance(error, type) and issubclass(error, Exception)):
        raise TypeError(f"{kind} is not an exception class")
    raise error(message)
