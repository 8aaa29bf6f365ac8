"""Job actions (docs/jobs-actions.md): check, record in the audit log, carry out, complete.

Every action first finds the job or queue in the current snapshot (404 when unknown,
409 when its status is not one the action applies to), then writes a `pending`
audit entry, then acts, then completes the entry `ok` or `failed`. If the broker is
unreachable the entry cannot be written and nothing is done (503). If the sidecar
dies while acting, the entry stays `pending`: never a false `ok`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import redis

from exporter.actions.audit import AuditLog
from exporter.actions.control import SIGNALS, CeleryControl
from exporter.actions.lists import FoundMessage, QueueLists
from exporter.actions.pauses import PauseBook
from exporter.core.calls import CallBook, ExactCall
from exporter.core.history import JobHistory
from exporter.core.tracker import TaskTracker
from exporter.model.actions import (
    ACTION_OUTCOMES,
    ACTIONS,
    BAD_REQUEST,
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
from exporter.protocol.errors import MalformedMessage
from exporter.sources.results import ResultBackend

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_STATUSES = ("failed", "completed")
CANCEL_STATUSES = ("waiting", "paused", "delayed", "active")
REMOVE_STATUSES = ("waiting", "paused", "completed", "failed")
#: How long a retry of one job blocks another retry of the same job (two admins at once).
RETRY_GUARD_SECONDS = 30
MAX_BULK_RETRY = 1000
HOW_TO_KEEP_ARGUMENTS = (
    "set result_extended = True in the Celery app and start the sidecar with "
    "--result-backend-url pointing at its Redis result backend; the arguments the Jobs "
    "API shows are reprs clipped from events and are never used for a retry"
)


@dataclass(frozen=True)
class Located:
    """Where a job stands now: its status, and its list message when it is in one."""

    status: str
    found: FoundMessage | None = None
    hostname: str | None = None


class ActionCounts:
    """celery_exporter_actions_total: actions by name and outcome, thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = {(a, o): 0 for a in ACTIONS for o in ACTION_OUTCOMES}

    def add(self, action: str, outcome: str) -> None:
        with self._lock:
            self._counts[(action, outcome)] = self._counts.get((action, outcome), 0) + 1

    def snapshot(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._counts)


class JobActions:
    """Carries out the actions of docs/jobs-actions.md against Celery and Redis."""

    def __init__(
        self,
        *,
        snapshot: Callable[[], Snapshot | None],
        tracker: TaskTracker,
        client: redis.Redis,
        prefix: str,
        lists: QueueLists,
        control: CeleryControl,
        audit: AuditLog,
        pauses: PauseBook,
        calls: CallBook,
        history: JobHistory | None = None,
        results: ResultBackend | None = None,
        counts: ActionCounts | None = None,
    ) -> None:
        self._snapshot = snapshot
        self._tracker = tracker
        self._client = client
        self._prefix = prefix
        self._lists = lists
        self._control = control
        self._audit = audit
        self._pauses = pauses
        self._calls = calls
        self._history = history
        self._results = results
        self.counts = counts or ActionCounts()

    # -- job actions ---------------------------------------------------------------

    def retry(self, actor: Actor, queue: str, task_id: str) -> RetryDone:
        """Publish a failed (or completed) job again with its exact arguments."""
        with self._refusals("retry"):
            located = self._locate(queue, task_id)
            _accept("retry", located.status, RETRY_STATUSES)
            call, source = self._exact_call(task_id)
            self._guard_retry(task_id)
        try:
            done = self._audited(
                actor, "retry", queue, task_id, {},
                lambda: self._publish_again(queue, task_id, call, source),
            )
        except ActionRefused:
            self._release_retry_guard(task_id)  # it did not run: the next retry may
            raise
        self._save_retried_links(queue, {task_id: done.task_id})
        return done

    def cancel(
        self, actor: Actor, queue: str, task_id: str, *, terminate: bool = False,
        signal: str = "SIGTERM",
    ) -> CancelDone:
        """Revoke a waiting, paused, delayed or active job (terminate is opt-in)."""
        with self._refusals("cancel"):
            if signal not in SIGNALS:
                raise ActionRefused(
                    BAD_REQUEST, f"invalid `signal`: {signal[:50]!r}; one of {', '.join(SIGNALS)}"
                )
            located = self._locate(queue, task_id)
            _accept("cancel", located.status, CANCEL_STATUSES)
        params = {"terminate": terminate, "signal": signal} if terminate else {}
        return self._audited(
            actor, "cancel", queue, task_id, params,
            lambda: self._cancel(queue, task_id, located, terminate, signal),
        )

    def remove(self, actor: Actor, queue: str, task_id: str) -> str:
        """Take a waiting/paused message out of its list, or a finished job out of history."""
        with self._refusals("remove"):
            located = self._locate(queue, task_id)
            _accept("remove", located.status, REMOVE_STATUSES)
            if located.status in ("waiting", "paused") and located.found is None:
                raise ActionRefused(
                    CONFLICT,
                    f"job {task_id} is waiting in the memory of worker {located.hostname} "
                    "(prefetched), not in the broker's list: cancel it instead",
                )
        return self._audited(
            actor, "remove", queue, task_id, {},
            lambda: self._remove(queue, task_id, located),
        )

    def retry_failed(self, actor: Actor, queue: str, limit: int) -> BulkRetryDone:
        """Retry the newest `limit` failed jobs of `queue` whose exact arguments are known."""
        with self._refusals("retry-failed"):
            if not 1 <= limit <= MAX_BULK_RETRY:
                raise ActionRefused(
                    BAD_REQUEST, f"invalid `limit`: {limit}; expected 1 to {MAX_BULK_RETRY}"
                )
            snapshot = self._current(queue)
            failed = snapshot.retained_jobs.get(queue, ((), ()))[1][:limit]
        return self._audited(
            actor, "retry-failed", queue, None, {"limit": limit},
            lambda: self._retry_each(queue, [job.id for job in failed]),
        )

    # -- queue actions -------------------------------------------------------------

    def pause(self, actor: Actor, queue: str) -> PauseDone:
        """Workers stop consuming `queue`; the pause is kept in Redis with those workers."""
        with self._refusals("pause"):
            snapshot = self._current(queue)
            consumers = tuple(
                sorted(w.hostname for w in snapshot.workers.values() if w.up and queue in w.queues)
            )

        def run() -> tuple[PauseDone, str]:
            pause = self._pauses.pause(queue, consumers)
            confirmed = self._control.cancel_consumer(queue, consumers)
            done = PauseDone(queue, True, pause.workers)
            return done, f"told {len(consumers)} workers to stop; {len(confirmed)} confirmed"

        return self._audited(actor, "pause", queue, None, {}, run)

    def resume(self, actor: Actor, queue: str) -> PauseDone:
        """The workers a pause remembered (those alive) consume `queue` again."""
        with self._refusals("resume"):
            snapshot = self._current(queue)
            alive = {w.hostname for w in snapshot.workers.values() if w.up}

        def run() -> tuple[PauseDone, str]:
            pause = self._pauses.resume(queue)
            remembered = set(pause.workers) if pause else set()
            workers = tuple(sorted(remembered & alive))
            confirmed = self._control.add_consumer(queue, workers)
            detail = (
                f"told {len(workers)} workers to consume again; {len(confirmed)} confirmed"
                if pause else "was not paused"
            )
            return PauseDone(queue, False, workers), detail

        return self._audited(actor, "resume", queue, None, {}, run)

    def purge(self, actor: Actor, queue: str, confirm: object) -> int:
        """Delete every waiting/paused message of `queue`; the body must repeat its name."""
        with self._refusals("purge"):
            if confirm != queue:
                raise ActionRefused(
                    BAD_REQUEST,
                    "purge needs its confirmation: a JSON body {\"confirm\": \"<queue name>\"} "
                    "repeating the queue's name",
                )
            self._current(queue)

        def run() -> tuple[int, str]:
            purged = self._lists.purge(queue)
            return purged, f"purged {purged} messages"

        return self._audited(actor, "purge", queue, None, {"confirm": queue}, run)

    # -- pauses outliving restarts -------------------------------------------------

    def enforce_pauses(self, snapshot: Snapshot) -> None:
        """Tell live workers consuming a paused queue to stop (they came back, or are new)."""
        for queue in self._pauses.all():
            offenders = sorted(
                w.hostname for w in snapshot.workers.values() if w.up and queue in w.queues
            )
            if not offenders:
                continue
            log.info("queue %s is paused: telling %s to stop consuming it", queue, offenders)
            self._pauses.add_workers(queue, offenders)
            self._control.cancel_consumer(queue, offenders)

    # -- the steps ------------------------------------------------------------------

    def _current(self, queue: str) -> Snapshot:
        snapshot = self._snapshot()
        if snapshot is None or not snapshot.broker_ever_read:
            raise ActionRefused(
                UNAVAILABLE, "no snapshot yet: the broker has not been read (is it reachable?)"
            )
        if queue not in snapshot.queues:
            raise ActionRefused(NOT_FOUND, f"unknown queue {queue[:200]!r}")
        return snapshot

    def _locate(self, queue: str, task_id: str) -> Located:
        """The job's status in `queue` now; 404 when the queue or the job is unknown."""
        snapshot = self._current(queue)
        for placement in snapshot.placements:
            if placement.task_id == task_id and placement.queue == queue:
                status = "waiting" if placement.status == "prefetched" else placement.status
                return Located(status, hostname=placement.hostname)
        completed, failed = snapshot.retained_jobs.get(queue, ((), ()))
        if any(job.id == task_id for job in failed):
            return Located("failed")
        if any(job.id == task_id for job in completed):
            return Located("completed")
        try:
            lookup = self._lists.find(queue, task_id)
        except redis.RedisError as exc:
            raise ActionRefused(UNAVAILABLE, f"the broker did not answer: {exc}") from exc
        if lookup.found is not None:
            self._calls.remember(lookup.found.message)
            consumed = snapshot.queues[queue].consumers > 0
            return Located("waiting" if consumed else "paused", found=lookup.found)
        looked = "" if lookup.complete else (
            f" (looked at the first {lookup.scanned} of {lookup.total} messages of its list)"
        )
        raise ActionRefused(NOT_FOUND, f"unknown job {task_id[:200]!r} in queue {queue!r}{looked}")

    def _exact_call(self, task_id: str) -> tuple[ExactCall, str]:
        if self._results is not None:
            try:
                stored = self._results.call_of(task_id)
            except (redis.RedisError, MalformedMessage) as exc:
                log.warning("result backend: cannot read the call of %s: %s", task_id, exc)
                stored = None
            if stored is not None:
                return ExactCall(stored.name, stored.args, stored.kwargs), "result-backend"
        call = self._calls.get(task_id)
        if call is not None:
            return call, "message"
        where = (
            "the result backend holds no extended meta for it"
            if self._results is not None else "no result backend is configured"
        )
        raise ActionRefused(
            CONFLICT,
            f"the exact arguments of job {task_id} are not known ({where}, and the sidecar "
            f"never read its message): {HOW_TO_KEEP_ARGUMENTS}",
        )

    def _guard_retry(self, task_id: str) -> None:
        key = f"{self._prefix}guard:retry:{task_id}"
        try:
            taken = self._client.set(key, b"1", nx=True, ex=RETRY_GUARD_SECONDS)
        except redis.RedisError as exc:
            raise ActionRefused(UNAVAILABLE, f"the broker did not answer: {exc}") from exc
        if not taken:
            raise ActionRefused(
                CONFLICT,
                f"job {task_id} was retried less than {RETRY_GUARD_SECONDS} s ago: see the "
                "audit log before retrying it again",
            )

    def _release_retry_guard(self, task_id: str) -> None:
        with contextlib.suppress(redis.RedisError):  # else it expires by itself
            self._client.delete(f"{self._prefix}guard:retry:{task_id}")

    def _publish_again(
        self, queue: str, task_id: str, call: ExactCall, source: str
    ) -> tuple[RetryDone, str]:
        new_id = self._control.publish_again(call.name, call.args, call.kwargs, queue, task_id)
        self._tracker.mark_retried(queue, task_id, new_id)
        done = RetryDone(new_id, task_id, call.name, queue, call.args, call.kwargs, source)
        return done, f"published as {new_id} (arguments from the {source.replace('-', ' ')})"

    def _save_retried_links(self, queue: str, links: Mapping[str, str]) -> None:
        """Keep `retriedBy` across a restart, for all the jobs one request retried at
        once (one read of each history list); the retries are done either way."""
        if self._history is None or not links:
            return
        try:
            self._history.mark_retried(queue, links)
        except redis.RedisError as exc:
            log.warning("%d jobs were retried, but their links to the new runs were not "
                        "saved: %s", len(links), exc)

    def _retry_each(self, queue: str, task_ids: list[str]) -> tuple[BulkRetryDone, str]:
        retried: dict[str, str] = {}  # old id -> new id
        skipped: list[tuple[str, str]] = []
        for task_id in task_ids:
            try:
                call, source = self._exact_call(task_id)
                self._guard_retry(task_id)
            except ActionRefused as refused:
                skipped.append((task_id, refused.message))
                continue
            done, _ = self._publish_again(queue, task_id, call, source)
            retried[task_id] = done.task_id
        self._save_retried_links(queue, retried)
        result = BulkRetryDone(tuple(retried.values()), tuple(skipped))
        return result, f"retried {len(retried)}, skipped {len(skipped)}"

    def _cancel(
        self, queue: str, task_id: str, located: Located, terminate: bool, signal: str
    ) -> tuple[CancelDone, str]:
        stops = terminate and located.status == "active"
        self._control.revoke(task_id, terminate=stops, signal=signal)
        removed = False
        if located.found is not None:  # in a list: take it out, so nothing pops it
            removed = self._lists.remove(located.found)
        state = "revoked"
        if located.status == "active" and not stops:
            state = "active"  # revoked, but a running task only stops when terminated
        else:
            self._tracker.hide(task_id)
        job = self._tracker.lookup([task_id]).get(task_id)
        done = CancelDone(task_id, queue, located.status, state, removed, job=job)
        detail = f"revoked ({located.status})" + (f", terminated with {signal}" if stops else "")
        return done, detail + (", removed from its list" if removed else "")

    def _remove(self, queue: str, task_id: str, located: Located) -> tuple[str, str]:
        if located.found is not None:
            if not self._lists.remove(located.found):
                raise ActionRefused(
                    CONFLICT, f"job {task_id} left its list meanwhile (a worker took it)"
                )
            return task_id, "removed its message from the list"
        job = self._tracker.remove_retained(queue, task_id)
        saved = self._history.remove(queue, task_id) if self._history is not None else 0
        if job is None and not saved:
            raise ActionRefused(NOT_FOUND, f"job {task_id} is no longer retained")
        return task_id, f"removed from the retained {located.status} jobs"

    def audit_page(self, offset: int, limit: int) -> tuple[list[AuditEntry], int]:
        """A page of the audit log, newest first, and how many entries it holds."""
        try:
            return self._audit.page(offset, limit)
        except redis.RedisError as exc:
            raise ActionRefused(UNAVAILABLE, f"the broker did not answer: {exc}") from exc

    # -- audit and counting ---------------------------------------------------------

    def _refusals(self, action: str) -> _Refusals:
        return _Refusals(self.counts, action)

    def _audited(
        self,
        actor: Actor,
        action: str,
        queue: str | None,
        job: str | None,
        params: Mapping[str, Any],
        run: Callable[[], tuple[T, str]],
    ) -> T:
        try:
            entry = self._audit.begin(
                key=actor.key_name, action=action, queue=queue, job=job, params=params
            )
        except redis.RedisError as exc:
            self.counts.add(action, "refused")
            raise ActionRefused(
                UNAVAILABLE,
                f"the broker is unreachable, so the action could not be recorded in the "
                f"audit log and was not carried out: {exc}",
            ) from exc
        try:
            result, detail = run()
        except ActionRefused as refused:
            self._complete(entry, "failed", refused.message)
            # Found gone or changed once recorded (a repeat, a worker took it): refused,
            # not an action that broke.
            moved = refused.reason in (NOT_FOUND, CONFLICT)
            self.counts.add(action, "refused" if moved else "failed")
            raise
        except Exception as exc:
            self._complete(entry, "failed", f"{type(exc).__name__}: {exc}")
            self.counts.add(action, "failed")
            log.warning("%s on %s failed: %s", action, queue, exc)
            raise ActionRefused(
                UNAVAILABLE, f"{action} failed: {type(exc).__name__}: {exc}"
            ) from exc
        self._complete(entry, "ok", detail)
        self.counts.add(action, "ok")
        log.info("%s by %s on %s %s: %s", action, actor.key_name, queue, job or "", detail)
        return result

    def _complete(self, entry: str, outcome: str, detail: str) -> None:
        try:
            self._audit.complete(entry, outcome, detail)
        except redis.RedisError as exc:  # the entry stays pending: never a false ok
            log.warning("audit entry %s stays pending: %s", entry, exc)


class _Refusals:
    """Counts an ActionRefused raised in its block as a refused action."""

    def __init__(self, counts: ActionCounts, action: str) -> None:
        self._counts = counts
        self._action = action

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, error: object, traceback: object) -> None:
        if isinstance(error, ActionRefused):
            self._counts.add(self._action, "refused")


def _accept(action: str, status: str, accepted: tuple[str, ...]) -> None:
    if status not in accepted:
        raise ActionRefused(
            CONFLICT,
            f"cannot {action} a {status} job: {action} applies to {', '.join(accepted)} jobs",
        )
