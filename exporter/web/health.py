"""Liveness, readiness and the landing page."""

from __future__ import annotations

import time

import falcon
from falcon.asgi import Request, Response

from exporter import __version__
from exporter.web.ports import SnapshotProvider

LANDING = """<!doctype html>
<html><head><meta charset="utf-8"><title>celery-jobs-exporter</title></head>
<body><h1>celery-jobs-exporter {version}</h1>
<ul>
<li><a href="/ui/">/ui/</a>: the web console (API key required)</li>
<li><a href="/metrics">/metrics</a>: Prometheus metrics</li>
<li><a href="/v1/jobs/queues">/v1/jobs/queues</a>: the Jobs API (API key required)</li>
<li><a href="/openapi.json">/openapi.json</a>: the OpenAPI document</li>
<li><a href="/healthz">/healthz</a>: the process is alive</li>
<li><a href="/readyz">/readyz</a>: a fresh snapshot exists</li>
</ul></body></html>
"""


class LandingResource:
    """A small HTML page linking the endpoints."""

    async def on_get(self, req: Request, resp: Response) -> None:
        resp.content_type = falcon.MEDIA_HTML
        resp.text = LANDING.format(version=__version__)


class HealthResource:
    """200 while the process can answer."""

    async def on_get(self, req: Request, resp: Response) -> None:
        resp.media = {"status": "ok"}

    on_head = on_get


class ReadyResource:
    """200 when a snapshot exists and the broker was read recently; else 503 and why."""

    def __init__(self, provider: SnapshotProvider, *, stale_after: float) -> None:
        self._provider = provider
        self._stale_after = stale_after

    async def on_get(self, req: Request, resp: Response) -> None:
        snapshot = self._provider.snapshot
        if snapshot is None:
            raise falcon.HTTPServiceUnavailable(description="no snapshot yet")
        age = time.time() - snapshot.last_success if snapshot.last_success else None
        if age is None or age > self._stale_after:
            broker = snapshot.sources.get("broker")
            reason = broker.last_error if broker and broker.last_error else "never read"
            raise falcon.HTTPServiceUnavailable(
                description=f"snapshot is stale: broker not read for "
                f"{'ever' if age is None else f'{age:.0f}s'} ({reason})"
            )
        resp.media = {
            "status": "ready",
            "generation": snapshot.generation,
            "age_seconds": round(age, 3),
        }

    on_head = on_get
