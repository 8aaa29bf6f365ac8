"""The Falcon application factory."""

from __future__ import annotations

import logging
from typing import Protocol

import falcon

from exporter.render import RenderedMetrics
from exporter.snapshot import Snapshot
from exporter.web.errors import install_error_handlers
from exporter.web.health import HealthResource, LandingResource, ReadyResource
from exporter.web.metrics import MetricsResource

log = logging.getLogger(__name__)


class SnapshotProvider(Protocol):
    """Where the web layer finds the current snapshot and its rendered exposition."""

    @property
    def snapshot(self) -> Snapshot | None: ...

    @property
    def rendered(self) -> RenderedMetrics | None: ...


WsgiApp = falcon.App[falcon.Request, falcon.Response]


def create_app(provider: SnapshotProvider, *, stale_after: float) -> WsgiApp:
    """Build the WSGI app serving /metrics, /healthz, /readyz and the landing page."""
    app = falcon.App(media_type=falcon.MEDIA_JSON)
    app.req_options.strip_url_path_trailing_slash = True
    install_error_handlers(app)
    app.add_route("/", LandingResource())
    app.add_route("/metrics", MetricsResource(provider))
    app.add_route("/healthz", HealthResource())
    app.add_route("/readyz", ReadyResource(provider, stale_after=stale_after))
    return app
