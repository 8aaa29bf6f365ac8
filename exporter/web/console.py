"""The web console (docs/console.md): static pages under /ui/, and two small reads it polls.

The console is three static files shipped in the package (exporter/web/ui/). Only those
names are served, from memory: no path from a request ever reaches the file system. Every
/ui answer carries a Content-Security-Policy that allows scripts, styles and requests from
this origin only, so API data the page shows can never run as code.

`GET /v1/jobs/workers` lists the snapshot's workers, each queue's consumers and its
finished executions;
`GET /v1/jobs/generation` answers the snapshot's generation, which the console polls to
re-fetch a view only when the snapshot changed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import falcon
from falcon.asgi import Request, Response

from exporter.web.jobs import current_snapshot
from exporter.web.permissions import READ
from exporter.web.ports import JobsBackend, SnapshotProvider

UI_DIR = Path(__file__).with_name("ui")
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
#: The files the console is made of, and the type each is served with.
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}


def _console_headers(resp: Response) -> None:
    resp.set_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    resp.set_header("Referrer-Policy", "no-referrer")
    resp.set_header("X-Frame-Options", "DENY")
    resp.set_header("Cross-Origin-Opener-Policy", "same-origin")


class ConsoleResource:
    """GET /ui/ (the page) and GET /ui/{asset} (its script and style), from memory."""

    def __init__(self, directory: Path = UI_DIR) -> None:
        self._files = {name: (directory / name).read_bytes() for name in ASSETS}

    async def on_get(self, req: Request, resp: Response) -> None:
        self._serve(resp, "index.html")

    async def on_get_asset(self, req: Request, resp: Response, asset: str) -> None:
        self._serve(resp, asset)

    on_head = on_get
    on_head_asset = on_get_asset

    def _serve(self, resp: Response, name: str) -> None:
        _console_headers(resp)
        body = self._files.get(name)
        if body is None:
            raise falcon.HTTPNotFound(description=f"no console file {name[:100]!r}")
        resp.content_type = ASSETS[name]
        resp.data = body


class WorkersResource:
    """GET /v1/jobs/workers: every worker of the snapshot, and each queue's consumers."""

    required_permission = READ

    def __init__(
        self, provider: SnapshotProvider, backend: Callable[[], JobsBackend | None]
    ) -> None:
        self._provider = provider
        self._backend = backend

    async def on_get(self, req: Request, resp: Response) -> None:
        snapshot = current_snapshot(self._provider, self._backend())
        workers: list[dict[str, Any]] = [
            {
                "hostname": w.hostname,
                "up": w.up,
                "queues": list(w.queues),
                "active": w.active,
                "concurrency": w.concurrency,
                "lastSeen": round(w.last_seen * 1000) if w.last_seen is not None else None,
            }
            for w in sorted(snapshot.workers.values(), key=lambda w: w.hostname)
        ]
        resp.media = {
            "workers": workers,
            "consumers": {q.name: q.consumers for q in snapshot.queues.values()},
            "finished": finished_totals(snapshot.stats.outcomes, snapshot.queues),
            "generation": snapshot.generation,
        }


def finished_totals(
    outcomes: Mapping[tuple[str, str, str], int], queues: Iterable[str]
) -> dict[str, dict[str, int]]:
    """Executions that succeeded or failed per queue since the sidecar started.

    The sums over task names of `celery_tasks_total{outcome="succeeded"|"failed"}`:
    monotonic, unlike the retained `completed`/`failed` counts, so the console's
    rates stay true once a queue's retention is full.
    """
    totals = {queue: {"succeeded": 0, "failed": 0} for queue in queues}
    for (queue, _task, outcome), count in outcomes.items():
        if outcome in ("succeeded", "failed") and queue in totals:
            totals[queue][outcome] += count
    return totals


class GenerationResource:
    """GET /v1/jobs/generation: `{"generation": n}`, a new n for each new snapshot."""

    required_permission = READ

    def __init__(
        self, provider: SnapshotProvider, backend: Callable[[], JobsBackend | None]
    ) -> None:
        self._provider = provider
        self._backend = backend

    async def on_get(self, req: Request, resp: Response) -> None:
        snapshot = current_snapshot(self._provider, self._backend())
        resp.media = {"generation": snapshot.generation}
