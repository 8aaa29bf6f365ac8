"""The one error a bad setting raises."""

from __future__ import annotations


class ConfigError(ValueError):
    """A setting is invalid; the message names the flag and what is allowed."""
