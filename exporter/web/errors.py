"""Every error is JSON `{"message": "..."}`: never HTML, never a stack trace."""

from __future__ import annotations

import logging
from typing import Any

import falcon
import falcon.asgi
from falcon.asgi import Request, Response

log = logging.getLogger(__name__)


def _serialize_error(req: falcon.Request, resp: falcon.Response, error: falcon.HTTPError) -> None:
    message = error.description or error.title or "error"
    resp.media = {"message": message}
    resp.content_type = falcon.MEDIA_JSON


async def _unexpected(req: Request, resp: Response, error: Exception, params: Any) -> None:
    if isinstance(error, falcon.HTTPError):
        raise error
    log.exception("unhandled error serving %s %s", req.method, req.path)
    raise falcon.HTTPInternalServerError(description="internal error")


def install_error_handlers(app: falcon.asgi.App[Request, Response]) -> None:
    """Make Falcon answer every error, expected or not, with a JSON message."""
    app.set_error_serializer(_serialize_error)
    app.add_error_handler(Exception, _unexpected)
    app.add_sink(_not_found, prefix="/")


async def _not_found(req: Request, resp: Response | None, **kwargs: Any) -> None:
    raise falcon.HTTPNotFound(description=f"no route {req.path}")
