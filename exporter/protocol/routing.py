"""Which queue a message came from, given kombu's exchange bindings."""

from __future__ import annotations

from collections.abc import Mapping


def resolve_queue(
    exchange: str | None,
    routing_key: str | None,
    bound_queues: Mapping[tuple[str, str], tuple[str, ...]],
) -> str:
    """The queue a message was delivered from, given its exchange and routing key."""
    routing_key = routing_key or ""
    if exchange:
        queues = bound_queues.get((exchange, routing_key))
        if queues:
            return queues[0]
    return routing_key or "celery"
