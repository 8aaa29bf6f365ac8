"""Worker pool sizes and queue capacity, as real workers report them."""

from __future__ import annotations

import pytest

from testkit.celery_worker import CeleryWorker
from testkit.exposition import Samples, sample_key, value
from testkit.redis_server import RedisServer
from testkit.sidecar import Sidecar

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

FAST = ("--refresh-interval", "0.5", "--inspect-timeout", "0.3", "--no-auth")


def test_concurrency_is_each_workers_c_and_capacity_their_sum(redis_server: RedisServer) -> None:
    with (
        CeleryWorker(redis_server.url, queues=["cap", "solo"], concurrency=2) as two,
        CeleryWorker(redis_server.url, queues=["cap"], concurrency=3) as three,
        Sidecar(redis_server.url, *FAST, "--queue", "cap", "--queue", "idle") as sidecar,
    ):
        two.wait_ready()
        three.wait_ready()
        sidecar.wait_ready()

        def reported(samples: Samples) -> bool:
            return value(samples, "celery_queue_capacity", queue="cap") == 5

        samples = sidecar.wait_for(reported, timeout=30)
        assert value(samples, "celery_worker_concurrency", worker=two.hostname) == 2
        assert value(samples, "celery_worker_concurrency", worker=three.hostname) == 3
        assert value(samples, "celery_queue_capacity", queue="solo") == 2
        assert value(samples, "celery_queue_capacity", queue="idle") == 0

        three.stop()  # a clean stop: its pool no longer counts
        samples = sidecar.wait_for(
            lambda s: value(s, "celery_queue_capacity", queue="cap") == 2, timeout=30
        )
        assert sample_key("celery_worker_concurrency", worker=three.hostname) not in samples
        assert value(samples, "celery_worker_concurrency", worker=two.hostname) == 2
