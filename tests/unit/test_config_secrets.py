"""The one reader of secrets given as a flag or in a file: exporter.config.secrets."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from exporter.config.errors import ConfigError
from exporter.config.secrets import read_secret_file, secret_value

SECRET = "s3cr3t-t0ken-value-0123"
FLAG, FILE_FLAG = "--metrics-bearer-token", "--metrics-bearer-token-file"


def secret_file(tmp_path: Path, content: bytes) -> str:
    path = tmp_path / "secret"
    path.write_bytes(content)
    return str(path)


@pytest.mark.parametrize(
    "content",
    [
        SECRET.encode(),
        SECRET.encode() + b"\n",
        SECRET.encode() + b"\r\n",
        b"  " + SECRET.encode() + b"\n\n",
    ],
)
def test_surrounding_whitespace_and_trailing_newline_are_dropped(
    tmp_path: Path, content: bytes
) -> None:
    assert read_secret_file(FILE_FLAG, secret_file(tmp_path, content)) == SECRET


def test_inner_whitespace_is_kept(tmp_path: Path) -> None:
    path = secret_file(tmp_path, b"user:pass word\n")
    assert read_secret_file(FILE_FLAG, path) == "user:pass word"


@pytest.mark.parametrize("content", [b"", b"\n", b"  \n"])
def test_empty_file_reads_as_empty_text(tmp_path: Path, content: bytes) -> None:
    """An empty file is read as "": what it means is decided by the setting that uses it."""
    assert read_secret_file(FILE_FLAG, secret_file(tmp_path, content)) == ""


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-file"
    with pytest.raises(ConfigError) as raised:
        read_secret_file(FILE_FLAG, str(missing))
    assert str(raised.value) == f"{FILE_FLAG}: cannot read {missing}: No such file or directory"


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        read_secret_file(FILE_FLAG, str(tmp_path))
    assert str(raised.value) == f"{FILE_FLAG}: cannot read {tmp_path}: Is a directory"


def test_permission_denied_is_reported_with_the_system_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any OSError (here EACCES, whoever runs the test) names the flag, path and reason."""
    path = secret_file(tmp_path, SECRET.encode())

    def refuse(self: Path, *args: object, **kwargs: object) -> str:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))

    monkeypatch.setattr(Path, "read_text", refuse)
    with pytest.raises(ConfigError) as raised:
        read_secret_file(FILE_FLAG, path)
    assert str(raised.value) == (
        f"{FILE_FLAG}: cannot read {path}: {os.strerror(errno.EACCES)}"
    )


def test_not_utf8_text_never_shows_the_content(tmp_path: Path) -> None:
    path = secret_file(tmp_path, b"\xff\xfe" + SECRET.encode())
    with pytest.raises(ConfigError) as raised:
        read_secret_file(FILE_FLAG, path)
    assert str(raised.value) == f"{FILE_FLAG}: {path} is not UTF-8 text"
    assert SECRET not in str(raised.value)


def test_value_from_the_flag() -> None:
    assert secret_value(FLAG, SECRET, FILE_FLAG, None) == SECRET


def test_value_from_the_file(tmp_path: Path) -> None:
    path = secret_file(tmp_path, SECRET.encode() + b"\n")
    assert secret_value(FLAG, None, FILE_FLAG, path) == SECRET


@pytest.mark.parametrize("value", [None, ""])
def test_neither_given(value: str | None) -> None:
    assert secret_value(FLAG, value, FILE_FLAG, None) == value


def test_flag_and_file_together_are_refused(tmp_path: Path) -> None:
    path = secret_file(tmp_path, SECRET.encode())
    with pytest.raises(ConfigError) as raised:
        secret_value(FLAG, "other-secret-0123456", FILE_FLAG, path)
    assert str(raised.value) == f"{FILE_FLAG}: give either {FLAG} or {FILE_FLAG}"


def test_empty_flag_value_with_a_file_reads_the_file(tmp_path: Path) -> None:
    path = secret_file(tmp_path, SECRET.encode())
    assert secret_value(FLAG, "", FILE_FLAG, path) == SECRET
