"""Property: no value read from Redis, of any JSON type in any field, stops a refresh.

Hypothesis puts arbitrary JSON values (lone surrogates, huge integers, deep nesting
included) into each field of each event type, list message, `unacked` entry, inspect
reply and saved history entry. They go through the real path: the boundary's
decoders, the tracker, the refresher's snapshot build and the exposition writer. The
invariant: no exception escapes, the refresh completes, the exposition passes
`promtool check metrics`, and a Jobs API object of a list message is valid JSON.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import json
import subprocess
from collections.abc import Iterable
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.config.settings import Settings
from exporter.core.history import dump_job
from exporter.core.refresher import Refresher
from exporter.core.saved import load_saved_job
from exporter.model.jobs import Job
from exporter.model.readings import BrokerReading, UnackedTask, WorkersReading
from exporter.prometheus.render import render
from exporter.protocol.errors import MalformedMessage
from exporter.protocol.events import decode_batch, decode_event_message, events_from
from exporter.protocol.messages import load_envelope, parse_task_message, parse_unacked_entry
from exporter.protocol.replies import COMMANDS, assemble_replies
from exporter.protocol.routing import resolve_queue
from exporter.serving.runtime import make_tracker
from exporter.web import jobformat
from testkit.payloads import load_payloads

TEXT = st.text(
    alphabet=st.characters(codec=None, exclude_categories=()), max_size=30
)  # surrogates included: JSON escapes can carry them
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)
PROPERTY = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def captured_events() -> dict[str, dict[str, Any]]:
    """One real event of each type a worker published (as plain mappings)."""
    found: dict[str, dict[str, Any]] = {}
    for payload in load_payloads():
        for event in decode_event_message(payload.raw):
            found.setdefault(event.type, {
                k: v for k, v in msgspec.structs.asdict(event).items() if v is not None
            })
    return found


EVENTS = captured_events()
EVENT_FIELDS = sorted({f for event in EVENTS.values() for f in event} | {"queue", "eta"})
MESSAGE = {
    "body": base64.b64encode(b"[[1, 2], {\"k\": \"v\"}, {}]").decode(),
    "content-encoding": "utf-8",
    "content-type": "application/json",
    "headers": {"lang": "py", "task": "tests.add", "id": "m-1", "eta": None, "retries": 0},
    "properties": {"body_encoding": "base64", "priority": 0,
                   "delivery_info": {"exchange": "", "routing_key": "work"}},
}
SAVED = {"id": "s-1", "name": "tests.add", "queue": "saved", "state": "failed",
         "finished_at": 1_700_000_000.0, "attempts": 2,
         "failures": [["ValueError('x')", "Traceback ..."]], "result": None}
REPLY = {
    "active": [{"id": "a-1", "name": "tests.sleep", "time_start": 1_700_000_000.0,
                "delivery_info": {"exchange": "", "routing_key": "work"}}],
    "reserved": [{"id": "r-1", "name": "tests.add",
                  "delivery_info": {"exchange": "", "routing_key": "work"}}],
    "scheduled": [{"eta": "2100-01-01T00:00:00", "request": {"id": "d-1", "name": "tests.add"}}],
    "active_queues": [{"name": "work"}],
    "stats": {"pool": {"max-concurrency": 4}},
}


def dumps(value: Any) -> bytes:
    """JSON as Python writes it: lone surrogates escaped (orjson would refuse them)."""
    return json.dumps(value).encode()


def replaced(base: Any, path: tuple[Any, ...], value: Any) -> Any:
    """A deep copy of `base` with the item at `path` set to `value` (if it is still there)."""
    copied = copy.deepcopy(base)
    target = copied
    try:
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    except (KeyError, IndexError, TypeError):
        pass  # an earlier replacement took this path away
    return copied


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to an item inside nested mappings and lists."""
    found = []
    items: Iterable[tuple[Any, Any]] = (
        value.items() if isinstance(value, dict)
        else enumerate(value) if isinstance(value, list) else ()
    )
    for key, item in items:
        found.append((*prefix, key))
        found += paths(item, (*prefix, key))
    return found


MESSAGE_PATHS = paths(MESSAGE)
REPLY_PATHS = paths(REPLY)
SAVED_PATHS = paths(SAVED)


class StaticBroker:
    """The broker source's reading, built from decoded `unacked` entries."""

    def __init__(self, unacked: list[UnackedTask]) -> None:
        self.unacked = unacked

    def read(self, extra_queues: Iterable[str] = ()) -> BrokerReading:
        return BrokerReading(
            queues=frozenset({"work", *extra_queues}), waiting_in_lists={"work": 3},
            unacked=tuple(self.unacked), new_malformed=0, round_trips=2, read_at=0.0,
        )


class StaticWorkers:
    """The workers source's reading, built from decoded inspect replies."""

    def __init__(self, bodies: dict[str, dict[str, Any]]) -> None:
        self.bodies = bodies

    def read(self, expected: Iterable[str] = ()) -> WorkersReading:
        replies, malformed = assemble_replies(self.bodies)
        return WorkersReading(replies=replies, read_at=0.0, duration=0.0, malformed=malformed)


def promtool_check(exposition: bytes) -> None:
    result = subprocess.run(
        ["promtool", "check", "metrics"], input=exposition, capture_output=True, timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]


@st.composite
def hostile_inputs(draw: st.DrawFn) -> dict[str, Any]:
    """One of each kind of input, each with some fields replaced by arbitrary values."""
    events = []
    for kind in draw(st.lists(st.sampled_from(sorted(EVENTS)), min_size=1, max_size=6)):
        event = dict(EVENTS[kind])
        for field in draw(st.lists(st.sampled_from(EVENT_FIELDS), max_size=3)):
            event[field] = draw(VALUES)
        events.append(event)
    message = MESSAGE
    for path in draw(st.lists(st.sampled_from(MESSAGE_PATHS), max_size=2)):
        message = replaced(message, path, draw(VALUES))
    reply = REPLY
    for path in draw(st.lists(st.sampled_from(REPLY_PATHS), max_size=2)):
        reply = replaced(reply, path, draw(VALUES))
    saved = SAVED
    for path in draw(st.lists(st.sampled_from(SAVED_PATHS), max_size=2)):
        saved = replaced(saved, path, draw(VALUES))
    return {
        "events": events,
        "message": message,
        "unacked": [message, draw(SCALARS), draw(SCALARS)],
        "reply": reply,
        "hostname": draw(TEXT | st.just("worker@host")),
        "saved": saved,
    }


@pytest.mark.e2e  # promtool checks every exposition
@PROPERTY
@given(hostile_inputs())
def test_no_input_stops_the_refresh_and_the_output_stays_valid(inputs: dict[str, Any]) -> None:
    settings_ = Settings(broker_url="redis://127.0.0.1:1/0", refresh_interval=1.0,
                         inspect_timeout=0.5, queues=("work",))
    tracker = make_tracker(settings_)

    # Events, as the stream hands them over: one payload per event, kombu's envelope.
    payloads = [
        dumps({"body": base64.b64encode(dumps(event)).decode(),
               "content-type": "application/json", "properties": {"body_encoding": "base64"}})
        for event in inputs["events"]
    ]
    events, undecodable = decode_batch(payloads)
    tracker.apply_batch(events, undecodable)

    # A saved history entry.
    with contextlib.suppress(MalformedMessage):
        tracker.restore([load_saved_job(dumps(inputs["saved"]), "failed")])

    # An unacked entry and a list message.
    unacked: list[UnackedTask] = []
    try:
        message = parse_unacked_entry(dumps(inputs["unacked"]))
        queue = resolve_queue(message.exchange, message.routing_key, {})
        unacked.append(UnackedTask("tag", message.task_id, message.name, queue, message.eta))
    except MalformedMessage:
        pass
    try:
        parsed = parse_task_message(load_envelope(dumps(inputs["message"])), with_body=True)
        orjson.dumps(jobformat.from_message(parsed, "waiting"))
    except MalformedMessage:
        pass

    # Inspect replies of one worker.
    bodies = {command: {inputs["hostname"]: inputs["reply"].get(command)} for command in COMMANDS}
    refresher = Refresher(
        settings_, StaticBroker(unacked), StaticWorkers(bodies), tracker,  # type: ignore[arg-type]
    )
    try:
        snapshot = refresher.refresh_once()
    finally:
        refresher.stop()
    assert snapshot.broker_up
    assert snapshot.sources["workers"].up
    for completed, failed in snapshot.retained_jobs.values():
        for job in (*completed, *failed):
            orjson.dumps(jobformat.from_job(job, job.state))
            dump_job(job)  # the history can save it
    promtool_check(render(snapshot).text)


@pytest.mark.parametrize(
    "body",
    [
        b"[" * 5000 + b"]" * 5000,
        b'{"type": "task-sent", "uuid": "' + b"x" * 2000 + b'", "timestamp": 1}',
        b'{"type": "task-sent", "uuid": "u", "timestamp": 1e400}',
        b'{"type": "task-sent", "uuid": "u", "timestamp": 1, "eta": "tomorrow"}',
        b'{"type": "task-sent", "uuid": "u", "timestamp": 1, "runtime": -1}',
        b'{"type": "worker-heartbeat", "hostname": "h", "active": 99999999999999999999999}',
    ],
    ids=["deep", "long-uuid", "infinite-time", "bad-eta", "negative-runtime", "huge-int"],
)
def test_events_outside_their_bounds_are_refused_or_counted(body: bytes) -> None:
    """Values past the boundary's bounds never reach the tracker's state."""
    tracker = make_tracker(Settings(broker_url="redis://127.0.0.1:1/0"))
    payload = dumps({"body": base64.b64encode(body).decode(),
                     "properties": {"body_encoding": "base64"}})
    events, undecodable = decode_batch([payload])
    tracker.apply_batch(events, undecodable)
    view = tracker.view()
    assert view.events_undecodable == 1
    assert not view.active and not view.queues_seen


def test_a_job_never_keeps_more_than_its_bound_of_failures() -> None:
    """A task retried without end keeps its newest failures only, and so does its page."""
    tracker = make_tracker(Settings(broker_url="redis://127.0.0.1:1/0"))
    retried = [{"type": "task-retried", "uuid": "r", "timestamp": float(i),
                "exception": f"E({i})", "traceback": f"tb {i}"} for i in range(500)]
    tracker.apply_batch(events_from(retried))
    [job] = tracker.lookup(["r"]).values()
    assert job.failures is not None and len(job.failures) == 50
    assert job.failure_texts()[-1] == ("E(499)", "tb 499")
    shown = jobformat.from_job(job, "active")["stacktrace"]
    assert shown == [f"tb {i}" for i in range(490, 500)]


def test_a_page_object_is_bounded_whatever_the_arguments() -> None:
    """50 x 50 x 50 strings of 1,000 characters: the job's data stays under 40 KB."""
    wide = [[["x" * 1000] * 50] * 50] * 50
    data = jobformat.job_data(wide, {"k": wide})
    assert len(orjson.dumps(data)) < 40_000
    job = Job("j")
    job.result = repr(wide)[:2048]
    assert len(orjson.dumps(jobformat.from_job(job, "completed"))) < 40_000
