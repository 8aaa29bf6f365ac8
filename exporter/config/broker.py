"""The broker URL: where it comes from, which schemes are accepted, what it points at."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from exporter.config.errors import ConfigError
from exporter.config.redaction import redact_userinfo
from exporter.config.secrets import secret_value
from exporter.protocol.keys import TransportOptions

DEFAULT_BROKER_URL = "redis://localhost:6379/0"
SUPPORTED_SCHEMES = ("redis", "rediss", "sentinel", "unix")


def read_broker_url(url: str | None, url_file: str | None) -> str:
    """The broker URL from `--broker-url`, or from the `--broker-url-file`; validated.

    Neither given (or an empty one) means DEFAULT_BROKER_URL.
    """
    value = secret_value("--broker-url", url, "--broker-url-file", url_file)
    return validate_broker_url(value or DEFAULT_BROKER_URL)


def validate_broker_url(url: str) -> str:
    """Check the broker URL's scheme(s); returns it unchanged or raises ConfigError."""
    if not url:
        raise ConfigError("--broker-url: must not be empty (e.g. redis://localhost:6379/0)")
    for part in url.split(";"):
        scheme = urlsplit(part.strip()).scheme.lower()
        if scheme not in SUPPORTED_SCHEMES:
            raise ConfigError(
                f"--broker-url: scheme {scheme or '(none)'!r} of {redact_userinfo(part)!r} is not "
                f"supported; use one of {', '.join(s + '://' for s in SUPPORTED_SCHEMES)}"
            )
    return url


RESULT_BACKEND_SCHEMES = ("redis", "rediss", "unix")


def validate_result_backend_url(url: str | None) -> str | None:
    """Check --result-backend-url: a Redis URL, or None/empty for none."""
    if not url:
        return None
    scheme = urlsplit(url.strip()).scheme.lower()
    if scheme not in RESULT_BACKEND_SCHEMES:
        raise ConfigError(
            f"--result-backend-url: scheme {scheme or '(none)'!r} of {redact_userinfo(url)!r} "
            f"is not supported; use one of {', '.join(s + '://' for s in RESULT_BACKEND_SCHEMES)}"
        )
    return url.strip()


@dataclass(frozen=True)
class BrokerEndpoint:
    """Where the broker is and how to reach it, decoded from the broker URL."""

    url: str
    db: int
    sentinel_hosts: tuple[tuple[str, int], ...] = ()
    password: str | None = None
    username: str | None = None

    @property
    def is_sentinel(self) -> bool:
        """Whether the master is found through Redis Sentinel."""
        return bool(self.sentinel_hosts)


def parse_endpoint(url: str) -> BrokerEndpoint:
    """Decode a redis://, rediss://, unix:// or sentinel:// (`;`-separated) broker URL."""
    parts = [p.strip() for p in url.split(";") if p.strip()]
    first = urlsplit(parts[0])
    if first.scheme == "sentinel":
        hosts = []
        for part in parts:
            split = urlsplit(part)
            hosts.append((split.hostname or "localhost", split.port or 26379))
        return BrokerEndpoint(
            url=url,
            db=_db_from_path(first.path),
            sentinel_hosts=tuple(hosts),
            password=unquote(first.password) if first.password else None,
            username=unquote(first.username) if first.username else None,
        )
    if first.scheme == "unix":
        query_db = dict(q.split("=", 1) for q in first.query.split("&") if "=" in q).get("db", "0")
        return BrokerEndpoint(url=parts[0], db=int(query_db) if query_db.isdigit() else 0)
    return BrokerEndpoint(url=parts[0], db=_db_from_path(first.path))


def _db_from_path(path: str) -> int:
    text = path.strip("/")
    if not text:
        return 0
    if not text.isdigit():
        raise ConfigError(f"--broker-url: database {text!r} is not a number")
    return int(text)


def require_master_name(transport: TransportOptions) -> str:
    """The Sentinel master's name, which a sentinel:// broker URL requires."""
    if not transport.master_name:
        raise ConfigError(
            "--broker-transport-option: master_name=NAME is required with a sentinel:// broker URL"
        )
    return transport.master_name
