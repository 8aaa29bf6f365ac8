"""Broker URL forms redis-py reads but kombu does not: every source still works.

The sidecar reads lists with redis-py and asks the workers through kombu. A password
given as a `?password=` query parameter, and a `unix://` socket URL, used to leave the
workers source down for good (kombu has no `unix` transport and fails on the query
parameter); the inspect app now gets the same broker in kombu's words.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from exporter.sources.redis import kombu_url
from testkit.celery_worker import CeleryWorker
from testkit.exposition import Samples, value
from testkit.redis_server import RedisServer
from testkit.sidecar import Sidecar

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

SECRET = "s3cr3t-broker-pw"
FAST = ("--refresh-interval", "0.5", "--inspect-timeout", "0.5", "--no-auth")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://h:1/2?password=p%40ss&x=1", "redis://:p%40ss@h:1/2?x=1"),
        ("redis://u@h:1/0?password=pw", "redis://u:pw@h:1/0"),
        ("unix:///run/r.sock?db=3&password=x", "redis+socket://:x@/run/r.sock?virtual_host=3"),
        ("unix://:pw@/run/r.sock", "redis+socket://:pw@/run/r.sock"),
        ("rediss://u:p@h:6380/0", "rediss://u:p@h:6380/0"),
        ("sentinel://a:1/0;sentinel://b:2/0", "sentinel://a:1/0;sentinel://b:2/0"),
    ],
)
def test_kombu_url(url: str, expected: str) -> None:
    assert kombu_url(url) == expected


def all_sources_up(samples: Samples) -> bool:
    return all(
        value(samples, "celery_exporter_source_up", source=source) == 1
        for source in ("broker", "workers", "events")
    )


@pytest.mark.parametrize("form", ["query-password", "unix-socket"])
def test_every_source_is_up_with_either_url_form(
    form: str, celery_worker_factory: Callable[..., CeleryWorker]
) -> None:
    socket_dir = Path(tempfile.mkdtemp(prefix="redis-sock-"))
    socket_path = socket_dir / "redis.sock"
    server = RedisServer(extra_args=["--unixsocket", str(socket_path), "--unixsocketperm", "700"])
    try:
        admin = server.client()
        admin.config_set("requirepass", SECRET)  # after start: the fixture pings without one
        admin.close()
        tcp = f"redis://:{SECRET}@127.0.0.1:{server.port}/0"
        celery_worker_factory(tcp, queues=("forms",), extra_args=("-E",))
        url = (
            f"redis://127.0.0.1:{server.port}/0?password={SECRET}" if form == "query-password"
            else f"unix://{socket_path}?db=0&password={SECRET}"
        )
        with Sidecar(url, *FAST) as sidecar:
            sidecar.wait_ready()
            samples = sidecar.wait_for(all_sources_up, timeout=30)
            assert value(samples, "celery_queue_consumers", queue="forms") == 1
            assert SECRET not in sidecar.log()
    finally:
        server.cleanup()
