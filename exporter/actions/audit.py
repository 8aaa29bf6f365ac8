"""The audit log of job actions, kept in Redis under the sidecar's key prefix.

An entry is written (outcome `pending`) before its action runs and completed after,
so an action interrupted by a crash or a lost broker stays visible as `pending`,
never as a false `ok`. Keys, with `{prefix}` the --history-key-prefix:

- ``{prefix}audit:seq``: the last entry id (INCR);
- ``{prefix}audit:index``: a sorted set of entry ids, scored by id (newest last);
- ``{prefix}audit:entries``: id -> the request (JSON);
- ``{prefix}audit:outcomes``: id -> the outcome and detail (JSON), once completed.

Appending and trimming to the newest `max_entries` run in one Lua script, so two
sidecars appending at once never leave an entry half written or the log unbounded.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson
import redis

from exporter.model.actions import AuditEntry
from exporter.protocol.errors import MalformedMessage

DEFAULT_MAX_ENTRIES = 10_000
OUTCOMES = ("pending", "ok", "failed")
#: Longest `detail` text kept; a longer one (a long error) is cut.
MAX_DETAIL = 2_000

_APPEND = """
local id = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[3], id, ARGV[1])
redis.call('ZADD', KEYS[2], id, id)
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[2])
if excess > 0 then
  local old = redis.call('ZPOPMIN', KEYS[2], excess)
  for i = 1, #old, 2 do
    redis.call('HDEL', KEYS[3], old[i])
    redis.call('HDEL', KEYS[4], old[i])
  end
end
return id
"""

#: Completes an entry only if it is still in the log (it may have been trimmed).
_COMPLETE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  return 1
end
return 0
"""


class AuditLog:
    """Appends, completes and pages audit entries; every call raises redis errors."""

    def __init__(
        self, client: redis.Redis, prefix: str, max_entries: int = DEFAULT_MAX_ENTRIES
    ) -> None:
        self._client = client
        self._keys = [f"{prefix}audit:{name}" for name in ("seq", "index", "entries", "outcomes")]
        self._max_entries = max_entries
        self._append = client.register_script(_APPEND)
        self._complete = client.register_script(_COMPLETE)

    def begin(
        self,
        *,
        key: str,
        action: str,
        queue: str | None,
        job: str | None,
        params: Mapping[str, Any],
    ) -> str:
        """Write a `pending` entry before the action runs; its id."""
        request = {
            "at": int(time.time() * 1000),
            "key": key,
            "action": action,
            "queue": queue,
            "job": job,
            "params": dict(params),
        }
        entry_id = self._append(keys=self._keys, args=[orjson.dumps(request), self._max_entries])
        return str(int(entry_id))

    def complete(self, entry_id: str, outcome: str, detail: str | None = None) -> bool:
        """Record how an action ended; False if the entry was trimmed meanwhile."""
        if outcome not in OUTCOMES[1:]:
            raise ValueError(f"an action ends ok or failed, not {outcome!r}")
        if detail is not None and len(detail) > MAX_DETAIL:
            detail = detail[: MAX_DETAIL - 3] + "..."
        body = orjson.dumps({"outcome": outcome, "detail": detail})
        done = self._complete(keys=[self._keys[2], self._keys[3]], args=[entry_id, body])
        return bool(done)

    def page(self, offset: int, limit: int) -> tuple[list[AuditEntry], int]:
        """Up to `limit` entries from `offset`, newest first, and how many there are."""
        index, entries, outcomes = self._keys[1], self._keys[2], self._keys[3]
        pipe = self._client.pipeline(transaction=True)
        pipe.zcard(index)
        pipe.zrevrange(index, offset, offset + limit - 1)
        total, ids = pipe.execute()
        if not ids:
            return [], int(total)
        pipe = self._client.pipeline(transaction=True)
        pipe.hmget(entries, ids)
        pipe.hmget(outcomes, ids)
        requests, results = pipe.execute()
        page = []
        for raw_id, request, result in zip(ids, requests, results, strict=True):
            entry = _entry(raw_id, request, result)
            if entry is not None:
                page.append(entry)
        return page, int(total)


def _entry(raw_id: bytes, request: bytes | None, result: bytes | None) -> AuditEntry | None:
    """An entry from its stored parts; None for one trimmed meanwhile or not readable."""
    if request is None:
        return None
    try:
        asked = orjson.loads(request)
        ended = orjson.loads(result) if result is not None else {}
        if not isinstance(asked, dict) or not isinstance(ended, dict):
            raise MalformedMessage("not a JSON object")
        params = asked.get("params")
        return AuditEntry(
            id=raw_id.decode("ascii"),
            at_ms=int(asked["at"]),
            key=str(asked["key"]),
            action=str(asked["action"]),
            queue=_text_or_none(asked.get("queue")),
            job=_text_or_none(asked.get("job")),
            params=params if isinstance(params, dict) else {},
            outcome=str(ended.get("outcome", "pending")),
            detail=_text_or_none(ended.get("detail")),
        )
    except (orjson.JSONDecodeError, MalformedMessage, KeyError, TypeError, ValueError,
            UnicodeDecodeError):
        return None


def _text_or_none(value: object) -> str | None:
    return None if value is None else str(value)
