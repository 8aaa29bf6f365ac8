"""API keys and /metrics credentials: only hashes are kept, compared in constant time."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from exporter.config.errors import ConfigError

MANAGE_ALL = "manage:all"
#: Allows the GET routes of the Jobs API (queues, jobs, audit, search), no action.
READ_JOBS = "read:jobs"


def digest(secret: str) -> bytes:
    """The SHA-256 of a secret (what is kept in memory instead of the secret)."""
    return hashlib.sha256(secret.encode("utf-8")).digest()


@dataclass(frozen=True)
class ApiKey:
    """One API key: its hash, a name for logs, and its permissions."""

    name: str
    sha256: bytes
    permissions: frozenset[str]


class KeyRing:
    """Finds the key a request presents, comparing against every known hash."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self._keys = tuple(keys)

    def __len__(self) -> int:
        return len(self._keys)

    def find(self, presented: str) -> ApiKey | None:
        """The key whose hash matches; every stored hash is compared, in constant time."""
        wanted = digest(presented)
        found = None
        for key in self._keys:
            if hmac.compare_digest(key.sha256, wanted):
                found = key
        return found


def keys_from_flags(values: Iterable[str]) -> list[ApiKey]:
    """`--api-key KEY` values: each grants `manage:all`."""
    keys = []
    for index, value in enumerate(values, start=1):
        value = value.strip()
        if len(value) < 16:
            raise ConfigError(f"--api-key: key #{index} is shorter than 16 characters")
        keys.append(ApiKey(f"flag-{index}", digest(value), frozenset({MANAGE_ALL})))
    return keys


def keys_from_file(path: str) -> list[ApiKey]:
    """Keys from a YAML/JSON list of `{name, key | sha256, permissions}` entries."""
    flag = "--api-keys-file"
    try:
        entries: Any = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"{flag}: cannot read {path}: {exc.strerror}") from exc
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{flag}: {path} is not YAML or JSON: {exc}") from exc
    if not isinstance(entries, list):
        raise ConfigError(f"{flag}: {path} must hold a list of {{name, key, permissions}}")
    keys = []
    for index, entry in enumerate(entries, start=1):
        keys.append(_key_entry(flag, index, entry))
    return keys


def _key_entry(flag: str, index: int, entry: Any) -> ApiKey:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{flag}: entry #{index} is not a mapping")
    name = str(entry.get("name") or f"file-{index}")
    permissions = entry.get("permissions", [MANAGE_ALL])
    if not isinstance(permissions, list) or not all(isinstance(p, str) for p in permissions):
        raise ConfigError(f"{flag}: entry {name!r}: permissions must be a list of strings")
    if "sha256" in entry:
        try:
            sha = bytes.fromhex(str(entry["sha256"]))
        except ValueError as exc:
            raise ConfigError(f"{flag}: entry {name!r}: sha256 is not hexadecimal") from exc
        if len(sha) != 32:
            raise ConfigError(f"{flag}: entry {name!r}: sha256 must be 64 hex digits")
    elif isinstance(entry.get("key"), str) and len(entry["key"]) >= 16:
        sha = digest(entry["key"])
    else:
        raise ConfigError(
            f"{flag}: entry {name!r} needs `key` (16+ characters) or `sha256` (its hex digest)"
        )
    return ApiKey(name, sha, frozenset(permissions))


def presented_key(headers: Mapping[str, str | None]) -> str | None:
    """The key in `X-API-KEY`, else in `Authorization: Bearer`."""
    key = headers.get("X-API-KEY")
    if key:
        return key.strip()
    authorization = headers.get("AUTHORIZATION") or ""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


@dataclass(frozen=True)
class MetricsCredentials:
    """What /metrics requires, if anything: a bearer token and/or basic auth."""

    bearer_sha256: bytes | None = None
    basic_user_sha256: bytes | None = None
    basic_password_sha256: bytes | None = None

    @property
    def required(self) -> bool:
        """Whether /metrics is protected."""
        return self.bearer_sha256 is not None or self.basic_user_sha256 is not None

    def accepts(self, authorization: str | None) -> bool:
        """Whether an Authorization header satisfies one of the configured schemes."""
        if not self.required:
            return True
        scheme, _, value = (authorization or "").partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and self.bearer_sha256 is not None:
            return hmac.compare_digest(digest(value.strip()), self.bearer_sha256)
        if scheme == "basic" and self.basic_user_sha256 and self.basic_password_sha256:
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                return False
            user, sep, password = decoded.partition(":")
            user_ok = hmac.compare_digest(digest(user), self.basic_user_sha256)
            password_ok = hmac.compare_digest(digest(password), self.basic_password_sha256)
            return bool(sep) and user_ok and password_ok
        return False


def metrics_credentials(bearer: str | None, basic: str | None) -> MetricsCredentials:
    """Hash the /metrics bearer token and `USER:PASSWORD` basic credentials."""
    basic_user = basic_password = None
    if basic:
        user, sep, password = basic.partition(":")
        if not sep or not user or not password:
            raise ConfigError("--metrics-basic-auth: expected USER:PASSWORD")
        basic_user, basic_password = digest(user), digest(password)
    if bearer is not None and len(bearer.strip()) < 16:
        raise ConfigError("--metrics-bearer-token: the token is shorter than 16 characters")
    return MetricsCredentials(
        bearer_sha256=digest(bearer.strip()) if bearer else None,
        basic_user_sha256=basic_user,
        basic_password_sha256=basic_password,
    )
