"""Paused queues, remembered in Redis so that a pause outlives worker and sidecar restarts.

``{prefix}paused`` is a hash: queue name -> JSON ``{"at": ms, "workers": [...]}``,
the workers that consumed the queue when it was paused, plus any worker that came
online consuming it while paused and was told to stop. A resume asks exactly those
(the ones still alive) to consume it again.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import orjson
import redis

#: Workers remembered per paused queue (a bound against a broker full of hostnames).
MAX_WORKERS = 1_000

#: Adds hostnames to a pause only if the queue is still paused (a resume may race).
_ADD_WORKERS = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


@dataclass(frozen=True)
class Pause:
    """One paused queue: since when, and the workers to give it back to."""

    queue: str
    at_ms: int
    workers: tuple[str, ...]


class PauseBook:
    """Reads and writes the paused queues; every call raises redis errors."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._client = client
        self._key = f"{prefix}paused"

    def all(self) -> dict[str, Pause]:
        """Every paused queue (entries that cannot be read are skipped)."""
        raw: dict[bytes, bytes] = self._client.hgetall(self._key)  # type: ignore[assignment]
        pauses = {}
        for name, value in raw.items():
            pause = _load(name, value)
            if pause is not None:
                pauses[pause.queue] = pause
        return pauses

    def get(self, queue: str) -> Pause | None:
        """The pause of `queue`, if it is paused."""
        value = self._client.hget(self._key, queue)
        return None if value is None else _load(queue.encode(), value)  # type: ignore[arg-type]

    def pause(self, queue: str, workers: Iterable[str]) -> Pause:
        """Remember `queue` as paused, adding `workers` to those of an existing pause."""
        existing = self.get(queue)
        at_ms = existing.at_ms if existing else int(time.time() * 1000)
        known = set(existing.workers) if existing else set()
        pause = Pause(queue, at_ms, tuple(sorted(known | set(workers)))[:MAX_WORKERS])
        self._client.hset(self._key, queue, _dump(pause))
        return pause

    def add_workers(self, queue: str, workers: Iterable[str]) -> None:
        """Remember more workers of a paused queue (no effect once it is resumed)."""
        existing = self.get(queue)
        if existing is None:
            return
        merged = tuple(sorted(set(existing.workers) | set(workers)))[:MAX_WORKERS]
        if merged != existing.workers:
            self._client.eval(
                _ADD_WORKERS, 1, self._key, queue, _dump(Pause(queue, existing.at_ms, merged))
            )

    def resume(self, queue: str) -> Pause | None:
        """Forget the pause of `queue`; the pause it was, or None if it was not paused."""
        pipe = self._client.pipeline(transaction=True)
        pipe.hget(self._key, queue)
        pipe.hdel(self._key, queue)
        value, _ = pipe.execute()
        return None if value is None else _load(queue.encode(), value)


def _dump(pause: Pause) -> bytes:
    return orjson.dumps({"at": pause.at_ms, "workers": list(pause.workers)})


def _load(name: bytes, value: bytes) -> Pause | None:
    try:
        data = orjson.loads(value)
        queue = name.decode("utf-8")
        workers = data["workers"]
        if not isinstance(workers, list):
            return None
        return Pause(queue, int(data["at"]), tuple(str(w) for w in workers[:MAX_WORKERS]))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, UnicodeDecodeError):
        return None
