"""Celery task messages as a Celery app on the Redis transport writes them."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime
from typing import Any


def task_message(
    task: str,
    queue: str,
    *,
    args: tuple[int, ...] = (1, 2),
    eta: float | None = None,
    delivery_tag: str | None = None,
) -> dict[str, Any]:
    """A small but valid Celery protocol-2 task message: kombu's envelope, as a dict.

    Lists hold it as JSON; the `unacked` hash holds `[message, exchange, routing_key]`.
    """
    task_id = str(uuid.uuid4())
    eta_text = datetime.fromtimestamp(eta, UTC).isoformat() if eta is not None else None
    body = [list(args), {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    return {
        "body": base64.b64encode(json.dumps(body).encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py", "task": task, "id": task_id, "shadow": None, "eta": eta_text,
            "expires": None, "group": None, "group_index": None, "retries": 0,
            "timelimit": [None, None], "root_id": task_id, "parent_id": None,
            "argsrepr": repr(args), "kwargsrepr": "{}", "origin": "gen1@bench",
            "ignore_result": False, "replaced_task_nesting": 0, "stamped_headers": None,
            "stamps": {},
        },
        "properties": {
            "correlation_id": task_id, "reply_to": str(uuid.uuid4()), "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue}, "priority": 0,
            "body_encoding": "base64", "delivery_tag": delivery_tag or str(uuid.uuid4()),
        },
    }
