"""What a resource may require of the key a request presents, and who presented it."""

from __future__ import annotations

from falcon.asgi import Request

from exporter.config.auth import MANAGE_ALL, READ_JOBS

#: What a resource may require: reading jobs (GET routes) or managing them (actions).
READ = frozenset({READ_JOBS, MANAGE_ALL})
MANAGE = frozenset({MANAGE_ALL})
#: The name recorded for requests when authentication is turned off (--no-auth).
NO_AUTH_NAME = "no-auth"


def key_name(req: Request) -> str:
    """The name of the key the request presented (set by AuthMiddleware), never the key."""
    return str(getattr(req.context, "key_name", NO_AUTH_NAME))
