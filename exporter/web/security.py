"""Authentication: API keys with permissions for the Jobs API, optional credentials for /metrics."""

from __future__ import annotations

import falcon

from exporter.auth import MANAGE_ALL, KeyRing, MetricsCredentials, presented_key

JOBS_PREFIXES = ("/v1/jobs", "/api/v1/jobs")


class AuthMiddleware:
    """Checks credentials before any resource runs; errors are JSON like every other."""

    def __init__(
        self,
        keys: KeyRing | None,
        metrics: MetricsCredentials | None,
    ) -> None:
        self._keys = keys
        self._metrics = metrics

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        path = req.path
        if path.startswith(JOBS_PREFIXES):
            self._require_permission(req, MANAGE_ALL)
        elif (
            path == "/metrics"
            and self._metrics is not None
            and not self._metrics.accepts(req.get_header("Authorization"))
        ):
            raise falcon.HTTPUnauthorized(
                description="credentials required for /metrics",
                challenges=['Bearer realm="metrics"', 'Basic realm="metrics"'],
            )

    def _require_permission(self, req: falcon.Request, permission: str) -> None:
        if self._keys is None:  # authentication turned off explicitly
            return
        presented = presented_key({
            "X-API-KEY": req.get_header("X-API-KEY"),
            "AUTHORIZATION": req.get_header("Authorization"),
        })
        if not presented:
            raise falcon.HTTPUnauthorized(
                description="an API key is required (X-API-KEY or Authorization: Bearer)",
                challenges=['Bearer realm="jobs"'],
            )
        key = self._keys.find(presented)
        if key is None:
            raise falcon.HTTPUnauthorized(
                description="unknown API key", challenges=['Bearer realm="jobs"']
            )
        if permission not in key.permissions:
            raise falcon.HTTPForbidden(
                description=f"this API key lacks the permission {permission!r}"
            )
