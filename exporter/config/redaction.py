"""Passwords out of text that holds URLs: what every log line and error message goes through."""

from __future__ import annotations

import re

#: The user-info password: `scheme://user:PASSWORD@host`, up to the `@` before the host.
_PASSWORD_IN_URL = re.compile(
    r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@;]*:)(?P<pw>[^;]*?)(?=@[^@;\s/]*(?:[/;\s?]|$))", re.I
)


#: A password given as a query parameter (`?password=…`, `&sentinel_password=…`), any
#: scheme: the value ends at `&`, `#`, whitespace, or a `;` that starts the next URL.
_PASSWORD_IN_QUERY = re.compile(
    r"(?P<head>[?&;][^=&;#?\s]*password=)(?P<pw>.*?)"
    r"(?=[&#\s]|;\s*[a-z][a-z0-9+.-]*://|$)",
    re.I,
)


def redact_url(url: str) -> str:
    """Replace every password in text holding URLs (several `;`-separated ones too) by `***`.

    Both the user-info password (`scheme://user:PASSWORD@host`) and password query
    parameters (`?password=PASSWORD`, `&sentinel_password=…`) are replaced; this is
    the one function every log line, traceback and error message goes through.
    """
    text = _PASSWORD_IN_URL.sub(lambda m: m.group("head") + "***", url)
    return _PASSWORD_IN_QUERY.sub(lambda m: m.group("head") + "***", text)


def redact_userinfo(text: str) -> str:
    """For text that may be a URL without a scheme: hide everything before its last `@`."""
    if "://" in text:
        return redact_url(text)
    return "***@" + text.rsplit("@", 1)[1] if "@" in text else text
