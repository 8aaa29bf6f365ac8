"""The action routes over HTTP: permissions, read-only, bodies, and refusals as statuses.

The app is the real Falcon app; the backend records what it was asked, so each test
shows what reaches the actions and what never does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import falcon.testing
import pytest

from exporter.config.auth import MANAGE_ALL, READ_JOBS, ApiKey, KeyRing, digest
from exporter.model.actions import (
    CONFLICT,
    NOT_FOUND,
    UNAVAILABLE,
    ActionRefused,
    Actor,
    AuditEntry,
    BulkRetryDone,
    CancelDone,
    PauseDone,
    RetryDone,
)
from exporter.model.snapshot import Snapshot
from exporter.prometheus.render import RenderedMetrics
from exporter.web.app import create_app
from exporter.web.permissions import NO_AUTH_NAME

ADMIN = "admin-key-0123456789"
READER = "reader-key-0123456789"
KEYS = KeyRing([
    ApiKey("admin-ui", digest(ADMIN), frozenset({MANAGE_ALL})),
    ApiKey("dashboard", digest(READER), frozenset({READ_JOBS})),
])
JOB = "/v1/jobs/queues/emails/jobs/t1"
ACTION_ROUTES = [
    ("POST", f"{JOB}/retry", None),
    ("POST", f"{JOB}/cancel", {"terminate": True}),
    ("DELETE", JOB, None),
    ("POST", "/v1/jobs/queues/emails/pause", None),
    ("POST", "/v1/jobs/queues/emails/resume", None),
    ("POST", "/v1/jobs/queues/emails/retry-failed", {"limit": 5}),
    ("POST", "/v1/jobs/queues/emails/purge", {"confirm": "emails"}),
]


class NoSnapshot:
    """The actions do not read the provider's snapshot; the Jobs API's GETs are not tested here."""

    @property
    def snapshot(self) -> Snapshot | None:
        return None

    @property
    def rendered(self) -> RenderedMetrics | None:
        return None


@dataclass
class Recorder:
    """An actions backend that records every call, optionally refusing them all."""

    refuse: ActionRefused | None = None
    calls: list[tuple[str, str, tuple[Any, ...]]] = field(default_factory=list)

    def _record(self, name: str, actor: Actor, *args: Any) -> None:
        self.calls.append((name, actor.key_name, args))
        if self.refuse is not None:
            raise self.refuse

    def retry(self, actor: Actor, queue: str, task_id: str) -> RetryDone:
        self._record("retry", actor, queue, task_id)
        return RetryDone("new-id", task_id, "app.send", queue, [1, "é", 0.1], {"a": {"b": 2}},
                         "result-backend")

    def cancel(self, actor: Actor, queue: str, task_id: str, *, terminate: bool = False,
               signal: str = "SIGTERM") -> CancelDone:
        self._record("cancel", actor, queue, task_id, terminate, signal)
        return CancelDone(task_id, queue, "active", "revoked")

    def remove(self, actor: Actor, queue: str, task_id: str) -> str:
        self._record("remove", actor, queue, task_id)
        return task_id

    def retry_failed(self, actor: Actor, queue: str, limit: int) -> BulkRetryDone:
        self._record("retry-failed", actor, queue, limit)
        return BulkRetryDone(("n1",), (("old2", "arguments unknown"),))

    def pause(self, actor: Actor, queue: str) -> PauseDone:
        self._record("pause", actor, queue)
        return PauseDone(queue, True, ("celery@a",))

    def resume(self, actor: Actor, queue: str) -> PauseDone:
        self._record("resume", actor, queue)
        return PauseDone(queue, False, ("celery@a",))

    def purge(self, actor: Actor, queue: str, confirm: object) -> int:
        self._record("purge", actor, queue, confirm)
        return 3

    def audit_page(self, offset: int, limit: int) -> tuple[list[AuditEntry], int]:
        entry = AuditEntry("7", 1000, "admin-ui", "purge", "emails", None, {"confirm": "emails"},
                           "ok", "purged 3 messages")
        return [entry], 1


def client(backend: Recorder, *, read_only: bool = False,
           keys: KeyRing | None = KEYS) -> falcon.testing.TestClient:
    app = create_app(NoSnapshot(), stale_after=60, keys=keys, actions_backend=lambda: backend,
                     read_only=read_only)
    return falcon.testing.TestClient(app)


def call(test: falcon.testing.TestClient, method: str, path: str, body: Any,
         key: str | None = ADMIN) -> falcon.testing.Result:
    headers = {"X-API-KEY": key} if key else {}
    return test.simulate_request(method, path, json=body, headers=headers)


@pytest.mark.parametrize(("method", "path", "body"), ACTION_ROUTES)
def test_a_read_jobs_key_reaches_no_action(method: str, path: str, body: Any) -> None:
    backend = Recorder()
    result = call(client(backend), method, path, body, key=READER)
    assert result.status_code == 403
    assert "manage:all" in result.json["message"]
    assert backend.calls == []


@pytest.mark.parametrize(("method", "path", "body"), ACTION_ROUTES)
def test_read_only_refuses_every_action_whatever_the_key(
    method: str, path: str, body: Any
) -> None:
    backend = Recorder()
    result = call(client(backend, read_only=True), method, path, body)
    assert result.status_code == 403
    assert "read-only" in result.json["message"]
    assert backend.calls == []


@pytest.mark.parametrize(("method", "path", "body"), ACTION_ROUTES)
def test_no_key_and_an_unknown_key_are_401(method: str, path: str, body: Any) -> None:
    backend = Recorder()
    assert call(client(backend), method, path, body, key=None).status_code == 401
    assert call(client(backend), method, path, body, key="x" * 20).status_code == 401
    assert backend.calls == []


def test_the_read_jobs_key_reads_the_audit_log() -> None:
    result = call(client(Recorder()), "GET", "/api/v1/jobs/audit", None, key=READER)
    assert result.status_code == 200
    assert result.json["entries"][0]["key"] == "admin-ui"
    assert result.json["pagination"] == {
        "currentPage": 1, "totalPages": 1, "totalJobs": 1, "limit": 10,
    }


def test_the_key_name_reaches_the_action_never_the_key() -> None:
    backend = Recorder()
    result = call(client(backend), "POST", "/v1/jobs/queues/emails/purge", {"confirm": "emails"})
    assert result.status_code == 200
    assert result.json == {"purged": 3}
    assert backend.calls == [("purge", "admin-ui", ("emails", "emails"))]
    assert all(ADMIN not in str(c) for c in backend.calls)


def test_without_authentication_the_audit_name_says_so() -> None:
    backend = Recorder()
    call(client(backend, keys=None), "POST", "/v1/jobs/queues/emails/pause", None, key=None)
    assert backend.calls == [("pause", NO_AUTH_NAME, ("emails",))]


def test_retry_answers_the_new_job_with_its_exact_arguments() -> None:
    result = call(client(Recorder()), "POST", f"{JOB}/retry", None)
    assert result.status_code == 202
    assert result.json["retryOf"] == "t1"
    job = result.json["job"]
    assert (job["id"], job["name"], job["state"]) == ("new-id", "app.send", "waiting")
    assert job["data"] == {"args": [1, "é", 0.1], "kwargs": {"a": {"b": 2}}}


def test_cancel_passes_terminate_and_signal() -> None:
    backend = Recorder()
    result = call(client(backend), "POST", f"{JOB}/cancel",
                  {"terminate": True, "signal": "SIGKILL"})
    assert result.status_code == 202
    assert result.json["job"]["state"] == "revoked"
    assert result.json["previousState"] == "active"
    assert backend.calls == [("cancel", "admin-ui", ("emails", "t1", True, "SIGKILL"))]


@pytest.mark.parametrize(
    ("path", "body", "fragment"),
    [
        (f"{JOB}/cancel", {"terminate": "yes"}, "terminate"),
        (f"{JOB}/cancel", {"signal": 9}, "signal"),
        ("/v1/jobs/queues/emails/retry-failed", {"limit": 0}, "limit"),
        ("/v1/jobs/queues/emails/retry-failed", {"limit": 1001}, "limit"),
        ("/v1/jobs/queues/emails/retry-failed", {"limit": True}, "limit"),
        ("/v1/jobs/queues/emails/retry-failed", {"limit": "5"}, "limit"),
        ("/v1/jobs/queues/emails/purge", [1, 2], "JSON object"),
    ],
)
def test_bad_bodies_are_400_naming_the_field(path: str, body: Any, fragment: str) -> None:
    backend = Recorder()
    result = call(client(backend), "POST", path, body)
    assert result.status_code == 400
    assert fragment in result.json["message"]
    assert backend.calls == []


def test_a_body_that_is_not_json_is_400_and_another_type_is_415() -> None:
    backend = Recorder()
    test = client(backend)
    headers = {"X-API-KEY": ADMIN}
    bad = test.simulate_post("/v1/jobs/queues/emails/purge", body="{",
                             headers={**headers, "Content-Type": "application/json"})
    assert bad.status_code == 400
    form = test.simulate_post("/v1/jobs/queues/emails/purge", body="confirm=emails",
                              headers={**headers,
                                       "Content-Type": "application/x-www-form-urlencoded"})
    assert form.status_code == 415
    assert backend.calls == []


@pytest.mark.parametrize(
    ("reason", "status"), [(NOT_FOUND, 404), (CONFLICT, 409), (UNAVAILABLE, 503)]
)
def test_refusals_are_answered_with_their_status_and_message(reason: str, status: int) -> None:
    backend = Recorder(refuse=ActionRefused(reason, "cannot retry a waiting job"))
    result = call(client(backend), "POST", f"{JOB}/retry", None)
    assert result.status_code == status
    assert result.json == {"message": "cannot retry a waiting job"}


def test_a_process_that_cannot_reach_the_refresher_answers_503_with_retry_after() -> None:
    app = create_app(NoSnapshot(), stale_after=60, keys=KEYS, actions_backend=lambda: None)
    result = call(falcon.testing.TestClient(app), "POST", "/v1/jobs/queues/emails/pause", None)
    assert result.status_code == 503
    assert "runs the refresher" in result.json["message"]
    assert result.headers["retry-after"] == "2"


def test_bulk_retry_reports_what_it_skipped() -> None:
    result = call(client(Recorder()), "POST", "/v1/jobs/queues/emails/retry-failed", None)
    assert result.status_code == 202
    assert result.json == {
        "retried": ["n1"], "skipped": [{"id": "old2", "reason": "arguments unknown"}],
    }
