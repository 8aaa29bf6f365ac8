"""New event messages made from the captured ones, as raw Redis PUBLISH commands.

A benchmark publishing at tens of thousands of events per second cannot afford
redis-py per message: it renders the captured kombu envelope with new holes filled
and writes ready-made RESP commands on a raw socket.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import ClassVar

from testkit.payloads import Payload, load_payloads


class Envelope:
    """A captured kombu envelope (JSON text) with body, hostname and delivery tag as holes."""

    _HOLES: ClassVar[dict[str, str]] = {
        "body": "@@BODY@@", "hostname": "@@HOST@@", "tag": "@@TAG@@",
    }

    def __init__(self, raw: str) -> None:
        envelope = json.loads(raw)
        envelope["body"] = self._HOLES["body"]
        envelope["headers"]["hostname"] = self._HOLES["hostname"]
        envelope["properties"]["delivery_tag"] = self._HOLES["tag"]
        parts = re.split("(@@[A-Z]+@@)", json.dumps(envelope))
        self._parts = parts
        self._slots = {hole: i for i, hole in enumerate(parts) if hole.startswith("@@")}

    def render(self, body: str, hostname: str, tag: str) -> str:
        """The envelope text with its holes filled (the same text kombu would write)."""
        parts = list(self._parts)
        parts[self._slots[self._HOLES["body"]]] = body
        parts[self._slots[self._HOLES["hostname"]]] = hostname
        parts[self._slots[self._HOLES["tag"]]] = tag
        return "".join(parts)


def envelopes(payloads: Iterable[Payload] | None = None) -> dict[str, Envelope]:
    """The first captured envelope of each routing key (`task.sent`, `task.multi`...)."""
    found: dict[str, Envelope] = {}
    for payload in load_payloads() if payloads is None else payloads:
        if payload.routing_key not in found:
            found[payload.routing_key] = Envelope(payload.data)
    return found


def resp_publish(channel: bytes, data: bytes) -> bytes:
    """One PUBLISH command in RESP."""
    return b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (
        len(channel), channel, len(data), data,
    )
