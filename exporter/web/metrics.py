"""/metrics: the bytes rendered once per refresh, negotiated by Accept and Accept-Encoding."""

from __future__ import annotations

import falcon
from falcon.asgi import Request, Response

from exporter.prometheus.render import OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE
from exporter.web.ports import SnapshotProvider


def wants_openmetrics(accept: str | None) -> bool:
    """Whether the client asked for OpenMetrics (as Prometheus does when it can)."""
    return bool(accept) and "application/openmetrics-text" in accept  # type: ignore[operator]


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether gzip is acceptable (and not refused with q=0)."""
    if not accept_encoding:
        return False
    for part in accept_encoding.split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


class MetricsResource:
    """Serves the current exposition; 503 before the first snapshot."""

    metrics_credentials = True  # behind --metrics-bearer-token / basic auth when set

    def __init__(self, provider: SnapshotProvider) -> None:
        self._provider = provider

    async def on_get(self, req: Request, resp: Response) -> None:
        rendered = self._provider.rendered
        if rendered is None:
            raise falcon.HTTPServiceUnavailable(
                description="no snapshot yet: the first refresh is pending"
            )
        openmetrics = wants_openmetrics(req.get_header("Accept"))
        compressed = accepts_gzip(req.get_header("Accept-Encoding"))
        resp.content_type = OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE
        if compressed:
            resp.set_header("Content-Encoding", "gzip")
        resp.set_header("Vary", "Accept, Accept-Encoding")
        resp.data = rendered.body(openmetrics=openmetrics, compressed=compressed)

    on_head = on_get  # Falcon sends the headers (Content-Length included) without the body
