"""Redis connections to the Celery broker: plain, TLS, unix socket and Sentinel URLs."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import Sentinel

# The broker URL is decoded in exporter.config (it is checked there); sources import it here.
from exporter.config.broker import BrokerEndpoint as BrokerEndpoint
from exporter.config.broker import parse_endpoint as parse_endpoint
from exporter.config.broker import require_master_name
from exporter.protocol.keys import TransportOptions

DEFAULT_SOCKET_TIMEOUT = 5.0


def kombu_url(url: str) -> str:
    """The broker URL as kombu reads it, for the inspect app (redis-py reads the original).

    kombu has no `unix://` transport (its name is `redis+socket://`, the database a
    `virtual_host` parameter), and it fails with a TypeError on a `password` (or
    `username`) query parameter, which redis-py accepts: both are rewritten into forms
    kombu reads, with the same socket, database and credentials.
    """
    parts = [p.strip() for p in url.split(";") if p.strip()]
    return ";".join(_kombu_part(part) for part in parts)


def _kombu_part(url: str) -> str:
    split = urlsplit(url)
    query = parse_qsl(split.query, keep_blank_values=True)
    credentials = {k: v for k, v in query if k in ("username", "password")}
    if not credentials and split.scheme != "unix":
        return url
    rest = [(k, v) for k, v in query if k not in ("username", "password")]
    username = credentials.get("username", unquote(split.username or ""))
    password = credentials.get("password", unquote(split.password or ""))
    userinfo = ""
    if username or password:
        userinfo = quote(username, safe="") + (":" + quote(password, safe="") if password else "")
        userinfo += "@"
    if split.scheme == "unix":
        rest = [("virtual_host", v) if k == "db" else (k, v) for k, v in rest]
        return urlunsplit(("redis+socket", userinfo, split.path, urlencode(rest), ""))
    host = split.hostname or ""
    host = f"[{host}]" if ":" in host else host
    netloc = userinfo + host + (f":{split.port}" if split.port else "")
    return urlunsplit((split.scheme, netloc, split.path, urlencode(rest), split.fragment))


def connect(
    endpoint: BrokerEndpoint,
    transport: TransportOptions,
    *,
    socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
) -> redis.Redis:
    """A Redis client on the broker (master, for Sentinel); connects lazily."""
    common: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": min(socket_timeout, 5.0),
        "health_check_interval": 30,
        # One immediate retry (a pooled connection may be stale after a Redis restart),
        # not redis-py's default of three with backoff: a dead broker must show up in
        # the next refresh, not seconds later.
        "retry": Retry(NoBackoff(), 1),
    }
    if endpoint.is_sentinel:
        master_name = require_master_name(transport)
        # redis-py leaves Sentinel untyped; the master client it returns is a plain Redis.
        sentinel: Any = Sentinel(  # type: ignore[no-untyped-call]
            list(endpoint.sentinel_hosts),
            sentinel_kwargs=dict(transport.sentinel_kwargs) or None,
            password=endpoint.password,
            username=endpoint.username,
            db=endpoint.db,
            **common,
        )
        master: redis.Redis = sentinel.master_for(master_name, redis_class=redis.Redis)
        return master
    return redis.Redis.from_url(endpoint.url, **common)


def as_text(reply: object) -> str:
    """A Redis reply as text: bytes decoded leniently (invalid UTF-8 replaced), else str()."""
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
