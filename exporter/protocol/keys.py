"""Where kombu's Redis transport keeps Celery's data: queue lists, unacked hash, channels."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_PRIORITY_STEPS: tuple[int, ...] = (0, 3, 6, 9)
DEFAULT_SEP = "\x06\x16"


def glob_escape(text: str) -> str:
    """`text` as a Redis glob pattern that matches only itself (SCAN MATCH, PSUBSCRIBE)."""
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)


@dataclass(frozen=True)
class TransportOptions:
    """The kombu Redis transport options that decide where Celery keeps its data."""

    sep: str = DEFAULT_SEP
    priority_steps: tuple[int, ...] = DEFAULT_PRIORITY_STEPS
    global_keyprefix: str = ""
    visibility_timeout: float = 3600.0
    unacked_key: str = "unacked"
    fanout_prefix: bool | str = True
    fanout_patterns: bool = True
    master_name: str | None = None
    sentinel_kwargs: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def as_kombu_options(self) -> dict[str, Any]:
        """These options as Celery's `broker_transport_options` mapping."""
        options: dict[str, Any] = dict(self.extra)
        options.update(
            sep=self.sep,
            priority_steps=list(self.priority_steps),
            global_keyprefix=self.global_keyprefix,
            visibility_timeout=self.visibility_timeout,
            unacked_key=self.unacked_key,
            fanout_prefix=self.fanout_prefix,
            fanout_patterns=self.fanout_patterns,
        )
        if self.master_name:
            options["master_name"] = self.master_name
        if self.sentinel_kwargs:
            options["sentinel_kwargs"] = dict(self.sentinel_kwargs)
        return options

    def queue_key(self, queue: str, step: int) -> str:
        """The Redis list holding `queue`'s messages of priority step `step` (prefix included)."""
        name = queue if step == 0 else f"{queue}{self.sep}{step}"
        return self.global_keyprefix + name

    def queue_keys(self, queue: str) -> list[str]:
        """Every priority sub-list of `queue`, in the order workers pop them."""
        return [self.queue_key(queue, step) for step in self.priority_steps]

    def event_channel_pattern(self, db: int, exchange: str = "celeryev") -> str:
        """The PSUBSCRIBE pattern of Celery's event exchange on this broker."""
        if self.fanout_prefix is True:
            prefix = f"/{db}."
        elif isinstance(self.fanout_prefix, str) and self.fanout_prefix:
            prefix = self.fanout_prefix.format(db=db)
        else:
            prefix = ""
        suffix = "/*" if self.fanout_patterns else ""
        return glob_escape(f"{self.global_keyprefix}{prefix}{exchange}") + suffix
