"""The Falcon application factory: an ASGI app, served by gunicorn's asyncio worker.

Everything but a Jobs API page is answered from memory on the event loop; pages run
on a thread pool of `jobs_threads` threads (see `exporter.web.jobs`).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import falcon
import falcon.asgi
from falcon.asgi import Request, Response

from exporter.config.auth import KeyRing, MetricsCredentials
from exporter.web.actions import (
    Action,
    AuditResource,
    CancelResource,
    JobResource,
    PauseResource,
    PurgeResource,
    ResumeResource,
    RetryFailedResource,
    RetryResource,
)
from exporter.web.console import ConsoleResource, GenerationResource, WorkersResource
from exporter.web.errors import install_error_handlers
from exporter.web.headers import SecurityHeadersMiddleware
from exporter.web.health import HealthResource, LandingResource, ReadyResource
from exporter.web.jobs import QueueJobsResource, QueuesResource
from exporter.web.metrics import MetricsResource
from exporter.web.ports import ActionsBackend, JobsBackend, SnapshotProvider
from exporter.web.search import SearchResource
from exporter.web.security import AuthMiddleware

OPENAPI_PATH = Path(__file__).with_name("openapi.json")

AsgiApp = falcon.asgi.App[Request, Response]


class OpenApiResource:
    """The OpenAPI 3.1 document of the HTTP API, as kept in the repository."""

    def __init__(self) -> None:
        self._body = OPENAPI_PATH.read_bytes()

    async def on_get(self, req: Request, resp: Response) -> None:
        resp.content_type = falcon.MEDIA_JSON
        resp.data = self._body


def create_app(
    provider: SnapshotProvider,
    *,
    stale_after: float,
    keys: KeyRing | None = None,
    metrics_credentials: MetricsCredentials | None = None,
    jobs_backend: Callable[[], JobsBackend | None] = lambda: None,
    actions_backend: Callable[[], ActionsBackend | None] = lambda: None,
    read_only: bool = False,
    api_max_limit: int = 100,
    jobs_threads: int = 4,
) -> AsgiApp:
    """Build the ASGI app: /metrics, the Jobs API, health, OpenAPI and a landing page.

    `keys` None means authentication was turned off explicitly; an empty KeyRing
    refuses every Jobs API request.
    """
    app = falcon.asgi.App(
        media_type=falcon.MEDIA_JSON,
        middleware=(SecurityHeadersMiddleware(), AuthMiddleware(keys, metrics_credentials)),
    )
    app.req_options.strip_url_path_trailing_slash = True
    app.req_options.auto_parse_qs_csv = False
    install_error_handlers(app)
    app.add_route("/", LandingResource())
    app.add_route("/metrics", MetricsResource(provider))
    app.add_route("/healthz", HealthResource())
    app.add_route("/readyz", ReadyResource(provider, stale_after=stale_after))
    app.add_route("/openapi.json", OpenApiResource())
    console = ConsoleResource()
    app.add_route("/ui", console)  # /ui/ too: the trailing slash is stripped
    app.add_route("/ui/{asset}", console, suffix="asset")
    queues = QueuesResource(provider, jobs_backend)
    pages = ThreadPoolExecutor(max_workers=jobs_threads, thread_name_prefix="jobs-api")
    queue_jobs = QueueJobsResource(
        provider, jobs_backend, max_limit=api_max_limit, executor=pages
    )
    search = SearchResource(provider, jobs_backend, max_limit=api_max_limit, executor=pages)

    def act(kind: type[Action]) -> Action:
        return kind(actions_backend, read_only=read_only, executor=pages)

    job_path = "/jobs/queues/{queue_name}/jobs/{job_id}"
    queue_path = "/jobs/queues/{queue_name}"
    actions: dict[str, object] = {
        job_path: act(JobResource),
        f"{job_path}/retry": act(RetryResource),
        f"{job_path}/cancel": act(CancelResource),
        f"{queue_path}/pause": act(PauseResource),
        f"{queue_path}/resume": act(ResumeResource),
        f"{queue_path}/retry-failed": act(RetryFailedResource),
        f"{queue_path}/purge": act(PurgeResource),
        "/jobs/audit": AuditResource(actions_backend, max_limit=api_max_limit, executor=pages),
        "/jobs/workers": WorkersResource(provider, jobs_backend),
        "/jobs/generation": GenerationResource(provider, jobs_backend),
    }
    for prefix in ("/v1", "/api/v1"):
        app.add_route(f"{prefix}/jobs/queues", queues)
        app.add_route(f"{prefix}/jobs/queues/{{queue_name}}", queue_jobs)
        app.add_route(f"{prefix}/jobs/search", search)
        for path, resource in actions.items():
            app.add_route(prefix + path, resource)
    return app
