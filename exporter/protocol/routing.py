"""Which queue a message came from, given kombu's exchange bindings.

Direct bindings are looked up by exact routing key. A binding key holding `*` or `#`
belongs to a topic exchange and is matched as kombu's virtual transport matches it:
words split on dots, `*` is exactly one word, `#` any run of characters.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping

_WILDCARDS = {"*": r"[^.]+", "#": r".*?"}


@functools.lru_cache(maxsize=1024)
def _topic_pattern(binding_key: str) -> re.Pattern[str]:
    words = (_WILDCARDS.get(word, re.escape(word)) for word in binding_key.split("."))
    return re.compile("^" + r"\.".join(words) + "$")


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
        matched = sorted(
            queue
            for (bound_exchange, key), names in bound_queues.items()
            if bound_exchange == exchange and ("*" in key or "#" in key)
            and _topic_pattern(key).match(routing_key)
            for queue in names
        )
        if matched:
            return matched[0]
    return routing_key or "celery"
