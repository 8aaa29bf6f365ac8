"""Wires the sources, the tracker and the refresher together for one sidecar process."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace

from exporter.actions.audit import AuditLog
from exporter.actions.control import CeleryControl
from exporter.actions.lists import QueueLists
from exporter.actions.pauses import PauseBook
from exporter.actions.service import JobActions
from exporter.config.settings import Settings
from exporter.core.calls import CallBook
from exporter.core.history import JobHistory
from exporter.core.refresher import Refresher
from exporter.core.search import JobSearch
from exporter.core.taskstats import TaskStats
from exporter.core.tracker import TaskTracker
from exporter.core.waiting import WaitingPages
from exporter.model.jobs import Job
from exporter.model.readings import WaitingMessage
from exporter.model.search import SearchQuery, SearchResult
from exporter.model.snapshot import Snapshot
from exporter.prometheus.render import RenderedMetrics, render
from exporter.protocol.cardinality import QueueAdmission
from exporter.protocol.keys import TransportOptions
from exporter.sources.broker import BrokerSource, QueuePager
from exporter.sources.events import EventStream
from exporter.sources.redis import connect, parse_endpoint
from exporter.sources.results import ResultBackend
from exporter.sources.workers import WorkersSource, make_inspect_app
from exporter.web.jobformat import failed_reason

log = logging.getLogger(__name__)


def make_tracker(settings: Settings) -> TaskTracker:
    """The tracker with the configured retention, label limits and histogram buckets."""
    return TaskTracker(
        limits=settings.retention,
        stats=TaskStats(
            max_task_names=settings.max_task_names,
            max_exception_types=settings.max_exception_types,
            max_task_series=settings.max_task_series,
            runtime_buckets=settings.runtime_buckets,
            queue_wait_buckets=settings.queue_wait_buckets,
        ),
        max_tracked_jobs=settings.max_tracked_jobs,
        queues=QueueAdmission(settings.max_queues, settings.queues),
    )


class Runtime:
    """The running sidecar core: event stream, refresher, and the current snapshot."""

    def __init__(
        self,
        settings: Settings,
        *,
        on_rendered: Callable[[Snapshot, RenderedMetrics], None] | None = None,
    ) -> None:
        self.settings = settings
        self._on_rendered = on_rendered
        endpoint = parse_endpoint(settings.broker_url)
        transport = settings.transport
        self._client = connect(endpoint, transport)
        self.tracker = make_tracker(settings)
        #: Exact calls of the messages this sidecar decoded, for retries.
        self.calls = CallBook()
        history = (
            JobHistory(self._client, settings.history_prefix, settings.retention,
                       settings.input_limits)
            if settings.history else None
        )
        self._waiting = WaitingPages(
            QueuePager(self._client, transport), settings.input_limits, self.tracker.lookup,
            on_message=self.calls.remember,
        )
        self._search = JobSearch(
            QueuePager(self._client, transport), failed_reason=failed_reason,
            limits=settings.input_limits, lookup=self.tracker.lookup,
            on_message=self.calls.remember,
        )
        self._inspect_app = make_inspect_app(settings.broker_url, transport.as_kombu_options())
        self.refresher = Refresher(
            settings,
            BrokerSource(
                self._client,
                transport,
                configured_queues=settings.queues,
                discovery_interval=settings.discovery_interval,
                admission=self.tracker.queues,
                limits=settings.input_limits,
                on_message=self.calls.remember,
            ),
            WorkersSource(self._inspect_app, settings.inspect_timeout),
            self.tracker,
            events_enabled=settings.events,
            on_snapshot=self._publish,
            history=history,
        )
        self.events: EventStream | None = None
        if settings.events:
            self.events = EventStream(
                connect(endpoint, transport, socket_timeout=30.0),
                transport.event_channel_pattern(endpoint.db),
                self.tracker.apply_batch,
                on_state=lambda connected, again: self.tracker.mark_stream(
                    connected, reconnected=again
                ),
                limits=settings.input_limits,
            )
        self.actions = self._make_actions(settings, history)
        self._enforcer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pauses")
        self._enforcing: Future[None] | None = None
        self._rendered: RenderedMetrics | None = None
        self._enabler: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def snapshot(self) -> Snapshot | None:
        """The newest snapshot, or None before the first refresh."""
        return self.refresher.snapshot

    @property
    def rendered(self) -> RenderedMetrics | None:
        """The newest snapshot's exposition bytes."""
        return self._rendered

    def waiting_page(self, queue: str, offset: int, limit: int) -> list[WaitingMessage]:
        """A page of a queue's waiting messages, next to run first (reads the broker)."""
        return self._waiting.page(queue, offset, limit)

    def search(self, query: SearchQuery) -> SearchResult:
        """Jobs matching a search: the snapshot's, then a bounded scan of the lists."""
        snapshot = self.refresher.snapshot
        if snapshot is None:
            return SearchResult((), 0)
        return self._search.search(snapshot, query)

    def lookup(self, task_ids: Iterable[str]) -> Mapping[str, Job]:
        """What the events told about in-flight jobs."""
        return self.tracker.lookup(task_ids)

    def _make_actions(self, settings: Settings, history: JobHistory | None) -> JobActions:
        results = None
        if settings.result_backend_url:
            backend = connect(parse_endpoint(settings.result_backend_url), TransportOptions())
            results = ResultBackend(backend, settings.input_limits)
        prefix = settings.history_prefix
        return JobActions(
            snapshot=lambda: self.refresher.snapshot,
            tracker=self.tracker,
            client=self._client,
            prefix=prefix,
            lists=QueueLists(self._client, settings.transport, settings.input_limits),
            control=CeleryControl(self._inspect_app, settings.inspect_timeout),
            audit=AuditLog(self._client, prefix),
            pauses=PauseBook(self._client, prefix),
            calls=self.calls,
            history=history,
            results=results,
        )

    def actions_backend(self) -> JobActions:
        """The job actions of this sidecar."""
        return self.actions

    def _enforce_pauses(self, snapshot: Snapshot) -> None:
        """Keep paused queues paused, off the refresher's thread (a broadcast waits)."""
        if self._enforcing is not None and not self._enforcing.done():
            return
        if not snapshot.broker_up or self.settings.read_only:
            return  # a read-only sidecar changes nothing, not even to keep a pause

        def run() -> None:
            try:
                self.actions.enforce_pauses(snapshot)
            except Exception as exc:  # the broker went away: next refresh tries again
                log.warning("could not check paused queues: %s", exc)

        self._enforcing = self._enforcer.submit(run)

    def _publish(self, snapshot: Snapshot) -> None:
        snapshot = replace(
            snapshot,
            counters=replace(snapshot.counters, actions=self.actions.counts.snapshot()),
        )
        self._enforce_pauses(snapshot)
        rendered = render(snapshot)
        self._rendered = rendered
        if self._on_rendered is not None:
            self._on_rendered(snapshot, rendered)

    def start(self) -> None:
        """Start the event stream, the refresher and (if asked) the events enabler."""
        log.info(
            "watching broker %s every %.1fs", self.settings.redacted_broker_url,
            self.settings.refresh_interval,
        )
        if self.events is not None:
            self.events.start()
        self.refresher.start()
        if self.settings.enable_events_interval > 0:
            self._enabler = threading.Thread(
                target=self._enable_events_loop, name="enable-events", daemon=True
            )
            self._enabler.start()

    def stop(self) -> None:
        """Stop every thread this runtime started."""
        self._stop.set()
        self.refresher.stop()
        self._enforcer.shutdown(wait=False, cancel_futures=True)
        if self.events is not None:
            self.events.stop()

    def _enable_events_loop(self) -> None:
        """Ask every worker to send task events, now and then (workers started without -E)."""
        while not self._stop.is_set():
            try:
                self._inspect_app.control.enable_events()
            except Exception as exc:  # a broker hiccup must not end the loop
                log.warning("could not broadcast enable_events: %s", exc)
            self._stop.wait(self.settings.enable_events_interval)
