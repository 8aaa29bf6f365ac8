"""The one error the boundary raises for data it will not pass on."""

from __future__ import annotations


class MalformedMessage(ValueError):
    """The bytes are not a Celery message, event, reply or saved job this sidecar can read."""
