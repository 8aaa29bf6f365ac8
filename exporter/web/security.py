"""Authentication: API keys with permissions for the Jobs API, optional credentials for /metrics.

What a request needs is decided by the resource the router picked, never by the raw
path: `//v1/jobs/queues` or `/%2Fv1/jobs/queues` reach the same resource and need
the same key. A resource declares `required_permission` (an API key permission) or
`metrics_credentials = True` (the optional /metrics bearer token or basic auth).
"""

from __future__ import annotations

from typing import Any

import falcon
from falcon.asgi import Request, Response

from exporter.config.auth import KeyRing, MetricsCredentials, presented_key
from exporter.web.permissions import NO_AUTH_NAME


class AuthMiddleware:
    """Checks credentials before any resource runs; errors are JSON like every other."""

    def __init__(
        self,
        keys: KeyRing | None,
        metrics: MetricsCredentials | None,
    ) -> None:
        self._keys = keys
        self._metrics = metrics

    async def process_resource(
        self, req: Request, resp: Response, resource: Any, params: dict[str, Any]
    ) -> None:
        if resource is None:  # no route: the 404 handler answers
            return
        permission = getattr(resource, "required_permission", None)
        if permission is not None:
            self._require_permission(req, permission)
        elif getattr(resource, "metrics_credentials", False):
            self._require_metrics_credentials(req)

    def _require_metrics_credentials(self, req: Request) -> None:
        if self._metrics is None or self._metrics.accepts(req.get_header("Authorization")):
            return
        raise falcon.HTTPUnauthorized(
            description="credentials required for /metrics",
            challenges=['Bearer realm="metrics"', 'Basic realm="metrics"'],
        )

    def _require_permission(self, req: Request, permission: frozenset[str]) -> None:
        if self._keys is None:  # authentication turned off explicitly
            req.context.key_name = NO_AUTH_NAME
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
        if not permission & key.permissions:
            wanted = " or ".join(repr(p) for p in sorted(permission))
            raise falcon.HTTPForbidden(description=f"this API key lacks the permission {wanted}")
        req.context.key_name = key.name
