"""The demo's Celery app: a few tasks that succeed, fail after retries, run long, take kwargs.

Only the embedded demo (`celery-jobs-exporter demo`) uses it; its worker imports it
with the broker URL in `CELERY_JOBS_EXPORTER_DEMO_BROKER` and its result backend in
`CELERY_JOBS_EXPORTER_DEMO_RESULTS` (results are stored with `result_extended`, so a
retry through the sidecar runs a job's exact arguments).
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

from celery import Celery

app = Celery(
    "demo",
    broker=os.environ.get("CELERY_JOBS_EXPORTER_DEMO_BROKER", "redis://127.0.0.1:6379/0"),
    set_as_current=False,
)
app.conf.update(
    task_send_sent_event=True,
    worker_send_task_events=True,
    task_track_started=True,
    worker_prefetch_multiplier=1,
    task_default_queue="default",
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    task_routes={"demo.report": {"queue": "reports"}},
    result_backend=os.environ.get("CELERY_JOBS_EXPORTER_DEMO_RESULTS") or None,
    result_extended=True,
)


@app.task(name="demo.add")  # type: ignore[untyped-decorator]
def add(x: int, y: int) -> int:
    """Succeeds quickly."""
    time.sleep(random.uniform(0.01, 0.2))
    return x + y


@app.task(name="demo.sleep")  # type: ignore[untyped-decorator]
def sleep(seconds: float) -> float:
    """Runs for a while (the demo's active jobs)."""
    time.sleep(seconds)
    return seconds


@app.task(  # type: ignore[untyped-decorator]
    name="demo.flaky",
    autoretry_for=(ConnectionError,),
    max_retries=2,
    default_retry_delay=0.5,
)
def flaky(url: str) -> None:
    """Fails after two retries, with a real traceback."""
    raise ConnectionError(f"could not reach {url}")


@app.task(name="demo.ingest")  # type: ignore[untyped-decorator]
def ingest(*, ingestionSourceId: str, rows: int = 10) -> dict[str, Any]:
    """Takes the kwargs an ingestion job has."""
    time.sleep(random.uniform(0.01, 0.1))
    return {"source": ingestionSourceId, "rows": rows}


@app.task(name="demo.report")  # type: ignore[untyped-decorator]
def report(name: str) -> str:
    """A slow job on the `reports` queue, whose single slot stays busy."""
    time.sleep(30)
    return f"report {name} done"
