"""Response headers every answer carries, errors included."""

from __future__ import annotations

from typing import Any

from falcon.asgi import Request, Response


class SecurityHeadersMiddleware:
    """`X-Content-Type-Options: nosniff` and `Cache-Control: no-store` on every response.

    Nothing the exporter answers should be kept by a cache or a proxy: Jobs API pages
    hold job arguments and errors, and every other answer is live state. A resource
    may still set its own Cache-Control.
    """

    async def process_response(
        self, req: Request, resp: Response, resource: Any, req_succeeded: bool
    ) -> None:
        resp.set_header("X-Content-Type-Options", "nosniff")
        if resp.get_header("Cache-Control") is None:
            resp.set_header("Cache-Control", "no-store")
