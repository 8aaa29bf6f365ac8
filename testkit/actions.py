"""Job actions (docs/jobs-actions.md) through a running sidecar's HTTP API, for the tests.

* `ADMIN` and `READER`: one key with `manage:all`, one with only `read:jobs`, written to
  a keys file by `write_keys_file` (the audit log names them, never the key);
* `ActionsClient`: the action routes, the Jobs API pages and the audit log of a sidecar,
  with one key, under `/v1` or `/api/v1`;
* `redis_state`: every key of a Redis database and its DUMP, to show that nothing
  changed, leaving out the remote-control reply bindings every inspect renews;
* `active_queues`: the queues a worker consumes, as it answers itself.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import redis

from testkit.celery_worker import CeleryWorker
from testkit.exposition import Samples, value
from testkit.redis_server import RedisServer
from testkit.sidecar import Sidecar

if TYPE_CHECKING:
    from celery import Celery

#: Refreshes fast enough for a test to wait on them (inspect replies come in well under).
FAST = ("--refresh-interval", "0.5", "--inspect-timeout", "0.3")
#: Fails while its gate (a Redis key) exists; else records its call (testkit.celery_app).
GATED = "tests.record_unless_gated"
#: kombu's Redis lists of one queue: the queue itself, then one per priority step (3, 6, 9).
PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")
MANAGE_ALL = "manage:all"
READ_JOBS = "read:jobs"


@dataclass(frozen=True)
class Key:
    """An API key as a keys file lists it."""

    name: str
    secret: str
    permissions: tuple[str, ...]


ADMIN = Key("ops-admin", "admin-secret-key-0123456789abcdef", (MANAGE_ALL,))
READER = Key("dash-reader", "reader-secret-key-0123456789abcdef", (READ_JOBS,))

#: Keys Celery's remote control writes on every broadcast that waits for replies (the
#: sidecar's own inspect, each refresh): the reply queue's binding and its deadline; and
#: the lock a kombu consumer holds for a moment while it restores unacked messages.
_REPLY_KEYS = frozenset({
    b"_kombu.binding.reply.celery.pidbox", b"_kombu.binding_deadlines", b"unacked_mutex",
})
_REPLY_SUFFIX = b".reply.celery.pidbox"


def write_keys_file(directory: Path, keys: Iterable[Key] = (ADMIN, READER)) -> Path:
    """A keys file (JSON is YAML) listing `keys`; its path."""
    path = directory / "api-keys.yaml"
    entries = [
        {"name": k.name, "key": k.secret, "permissions": list(k.permissions)} for k in keys
    ]
    path.write_text(json.dumps(entries))
    return path


class ActionsClient:
    """Calls one sidecar with one key."""

    def __init__(self, base_url: str, key: Key | None = ADMIN, prefix: str = "/v1") -> None:
        self.base_url = base_url
        self.key = key
        self.prefix = prefix

    def headers(self) -> dict[str, str]:
        """The key's header (none without a key)."""
        return {} if self.key is None else {"X-API-KEY": self.key.secret}

    def with_key(self, key: Key | None) -> ActionsClient:
        """The same sidecar with another key."""
        return ActionsClient(self.base_url, key, self.prefix)

    def with_prefix(self, prefix: str) -> ActionsClient:
        """The same sidecar and key under another route prefix."""
        return ActionsClient(self.base_url, self.key, prefix)

    def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """`method` on `{prefix}{path}`, with `body` as JSON when given."""
        return httpx.request(
            method, f"{self.base_url}{self.prefix}{path}",
            headers={**self.headers(), **(headers or {})}, json=body, timeout=30.0, **kwargs,
        )

    def get(self, path: str, **params: str | int) -> httpx.Response:
        """A GET of `{prefix}{path}`."""
        return self.request("GET", path, params=params)

    # -- the actions --------------------------------------------------------------

    def retry(self, queue: str, job: str) -> httpx.Response:
        """POST .../jobs/{job}/retry."""
        return self.request("POST", f"/jobs/queues/{queue}/jobs/{job}/retry")

    def cancel(self, queue: str, job: str, body: Mapping[str, Any] | None = None) -> httpx.Response:
        """POST .../jobs/{job}/cancel."""
        return self.request("POST", f"/jobs/queues/{queue}/jobs/{job}/cancel", body)

    def remove(self, queue: str, job: str) -> httpx.Response:
        """DELETE .../jobs/{job}."""
        return self.request("DELETE", f"/jobs/queues/{queue}/jobs/{job}")

    def pause(self, queue: str) -> httpx.Response:
        """POST .../queues/{queue}/pause."""
        return self.request("POST", f"/jobs/queues/{queue}/pause")

    def resume(self, queue: str) -> httpx.Response:
        """POST .../queues/{queue}/resume."""
        return self.request("POST", f"/jobs/queues/{queue}/resume")

    def retry_failed(self, queue: str, body: Mapping[str, Any] | None = None) -> httpx.Response:
        """POST .../queues/{queue}/retry-failed."""
        return self.request("POST", f"/jobs/queues/{queue}/retry-failed", body)

    def purge(self, queue: str, body: Mapping[str, Any] | None = None) -> httpx.Response:
        """POST .../queues/{queue}/purge."""
        return self.request("POST", f"/jobs/queues/{queue}/purge", body)

    # -- what the GET routes show ---------------------------------------------------

    def page(self, queue: str, status: str, limit: int = 100) -> dict[str, Any]:
        """The first page of a queue's jobs in `status` (asserted 200)."""
        response = self.get(f"/jobs/queues/{queue}", status=status, limit=limit)
        assert response.status_code == 200, response.text
        page: dict[str, Any] = response.json()
        return page

    def jobs(self, queue: str, status: str, limit: int = 100) -> list[dict[str, Any]]:
        """The jobs of that first page."""
        jobs: list[dict[str, Any]] = self.page(queue, status, limit)["jobs"]
        return jobs

    def ids(self, queue: str, status: str) -> list[str]:
        """The ids of that first page, in its order."""
        return [job["id"] for job in self.jobs(queue, status)]

    def audit(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest audit entries, newest first (asserted 200)."""
        response = self.get("/jobs/audit", limit=limit)
        assert response.status_code == 200, response.text
        entries: list[dict[str, Any]] = response.json()["entries"]
        return entries


def message(response: httpx.Response) -> str:
    """The `message` of an error answer."""
    text: str = response.json()["message"]
    return text


def redis_state(client: redis.Redis) -> dict[bytes, bytes]:
    """Every key of the client's database and its DUMP (remote-control replies and kombu's
    restore lock left out)."""
    state: dict[bytes, bytes] = {}
    for key in client.scan_iter(count=1000):
        assert isinstance(key, bytes)
        if key in _REPLY_KEYS or key.endswith(_REPLY_SUFFIX):
            continue
        dumped = client.dump(key)
        if dumped is not None:  # gone meanwhile
            assert isinstance(dumped, bytes)
            state[key] = dumped
    return state


def active_queues(app: Celery, hostname: str, timeout: float = 1.0) -> set[str] | None:
    """The queues `hostname` consumes, as it answers; None when it does not answer."""
    replies = app.control.inspect(destination=[hostname], timeout=timeout).active_queues()
    if not replies or hostname not in replies:
        return None
    return {str(queue["name"]) for queue in replies[hostname]}


class Stack:
    """What one test runs against: its redis, its sidecars and the test's Celery app."""

    def __init__(
        self, redis_server: RedisServer, app: Celery, tmp_path: Path,
        make_worker: Callable[..., CeleryWorker],
    ) -> None:
        self.redis = redis_server
        self.app = app
        self.client = redis_server.client()
        self.keys_file = write_keys_file(tmp_path)
        self._make_worker = make_worker
        self.sidecars: list[Sidecar] = []
        self.workers: list[CeleryWorker] = []

    def sidecar(self, *extra: str, ready: bool = True) -> Sidecar:
        """A sidecar with the keys file and fast refreshes (ready unless told otherwise)."""
        car = Sidecar(self.redis.url, *FAST, "--api-keys-file", str(self.keys_file), *extra)
        self.sidecars.append(car)
        if ready:
            car.wait_ready()
        return car

    def worker(self, *queues: str, **kwargs: Any) -> CeleryWorker:
        """A ready worker consuming `queues`."""
        worker = self._make_worker(self.redis.url, queues=queues, **kwargs)
        self.workers.append(worker)
        return worker

    def close(self) -> None:
        """SIGKILL the sidecars and the workers: nothing of theirs is needed any more, and
        their graceful shutdowns would take seconds per test."""
        for car in self.sidecars:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(car.pid, signal.SIGKILL)
            car.process.wait(10)
            car.stop()  # closes its log
        for worker in self.workers:
            worker.kill()

    def start(self, queues: tuple[str, ...], *extra: str, **worker: Any) -> tuple[
        Sidecar, CeleryWorker, ActionsClient
    ]:
        """A sidecar and a worker started side by side; the admin's client of the sidecar.

        Returns once a snapshot shows the worker consuming every queue: the first
        snapshot may be older than the worker, and actions only know queues a snapshot
        holds.
        """
        car = self.sidecar(*extra, ready=False)
        started = self.worker(*queues, **worker)
        car.wait_ready()
        car.wait_for(lambda s: all(
            value(s, "celery_queue_consumers", queue=queue) >= 1 for queue in queues
        ))
        return car, started, ActionsClient(car.base_url, ADMIN)

    def publish(self, queue: str, name: str = GATED, *args: Any, **options: Any) -> str:
        """Publish `name(*args)` to `queue`; its task id."""
        task_id: str = self.app.send_task(name, args=list(args), queue=queue, **options).id
        return task_id

    def close_gate(self, gate: str) -> str:
        """Make `tests.record_unless_gated(gate, ...)` fail until the gate is opened."""
        self.client.set(gate, b"closed")
        return gate

    def open_gates(self, *gates: str) -> None:
        """Let `tests.record_unless_gated` run (and record) under these gates."""
        self.client.delete(*gates)

    def calls(self, gate: str) -> list[Any]:
        """The calls `tests.record_unless_gated` recorded under `gate`, decoded."""
        raws = self.client.lrange(f"{gate}:calls", 0, -1)
        assert isinstance(raws, list)
        return [json.loads(raw) for raw in raws]

    def llen(self, queue: str) -> int:
        """Messages in all of the queue's lists (every priority step)."""
        return sum(int(self.client.llen(queue + s)) for s in PRIORITY_SUFFIXES)

    def list_messages(self, queue: str) -> list[dict[str, Any]]:
        """The queue's messages (main list), head first: task id and args of each."""
        raws = self.client.lrange(queue, 0, -1)
        assert isinstance(raws, list)
        found = []
        for raw in raws:
            envelope = json.loads(raw)
            body = json.loads(base64.b64decode(envelope["body"]))
            found.append({"id": envelope["headers"]["id"], "args": body[0]})
        return found


def counted(samples: Samples, action: str, outcome: str) -> float:
    """celery_exporter_actions_total of one action and outcome."""
    return value(samples, "celery_exporter_actions_total", action=action, outcome=outcome)


def tasks(samples: Samples, queue: str, outcome: str, task: str = GATED) -> float:
    """celery_tasks_total of one task of `queue` (0 before the series exists)."""
    try:
        return value(samples, "celery_tasks_total", queue=queue, task=task, outcome=outcome)
    except KeyError:
        return 0


def entries_of(api: ActionsClient, action: str, job: str | None = None) -> list[dict[str, Any]]:
    """The audit entries of `action` (on `job`, when given), newest first."""
    return [
        e for e in api.audit() if e["action"] == action and (job is None or e["job"] == job)
    ]


def assert_audited_ok(api: ActionsClient, action: str, queue: str, job: str | None) -> dict[
    str, Any
]:
    """Exactly one entry of this action on this job: by the admin's key NAME, outcome ok."""
    found = [e for e in entries_of(api, action, job) if e["queue"] == queue]
    assert len(found) == 1, found
    [entry] = found
    assert (entry["key"], entry["outcome"]) == (ADMIN.name, "ok"), entry
    assert ADMIN.secret not in json.dumps(entry)
    return entry
