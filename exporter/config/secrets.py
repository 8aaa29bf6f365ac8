"""Secrets given either as a flag's value or in a file its `-file` flag names."""

from __future__ import annotations

from pathlib import Path

from exporter.config.errors import ConfigError


def read_secret_file(file_flag: str, path: str) -> str:
    """The text of a secret file, without surrounding whitespace (the trailing newline).

    An unreadable file (missing, no permission, a directory) or one that is not UTF-8
    text is a ConfigError naming `file_flag` and the path, never the file's content.
    """
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{file_flag}: cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file_flag}: {path} is not UTF-8 text") from exc


def secret_value(flag: str, value: str | None, file_flag: str, path: str | None) -> str | None:
    """A secret from its flag, or from the file its `-file` flag names; not both."""
    if value and path:
        raise ConfigError(f"{file_flag}: give either {flag} or {file_flag}")
    if not path:
        return value
    return read_secret_file(file_flag, path)
