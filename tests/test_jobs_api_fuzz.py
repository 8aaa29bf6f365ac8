"""Property-based tests of the Jobs API and the job actions: generated and malformed
requests never break them, and no action runs without `manage:all`.

The app is the real Falcon app (`create_app`) over a real `Runtime` (event stream,
refresher, broker pager, job actions) watching a private redis-server, where a real
Celery worker ran real tasks and queues nobody consumes hold JSON, msgpack, YAML and
pickle messages and a garbage entry. Requests go through ASGI in-process: schemathesis
generates them from the OpenAPI document (positive and negative, often aimed at jobs
and queues that exist), and hand-written Hypothesis strategies throw raw query
strings, paths and request bodies at it. The actions really run for an admin key: the
only 5xx allowed is a 503 the document lists. A second, untouched world shows that
without `manage:all` (no key, a `read:jobs` key, an unknown key, or `--read-only`)
no action changes a single Redis key or writes the audit log. Every run is bounded
and derandomized.
"""

from __future__ import annotations

import contextlib
import json
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import falcon.testing
import jsonschema
import pytest
import redis as redis_py
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from exporter.actions.control import SIGNALS
from exporter.config.auth import READ_JOBS, ApiKey, KeyRing, digest, keys_from_flags
from exporter.config.settings import Settings
from exporter.model.actions import ACTIONS
from exporter.serving.runtime import Runtime
from exporter.serving.sharing import LocalProvider
from exporter.web.app import OPENAPI_PATH, AsgiApp, create_app
from testkit.celery_worker import CeleryWorker, load_app
from testkit.redis_server import RedisServer
from testkit.wait import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

KEY = "fuzz-admin-key-0123456789abcdef"
READER_KEY = "fuzz-reader-key-0123456789abcdef"
JOBS_READER_KEY = "fuzz-jobs-reader-key-0123456789abcdef"
STATUSES = ("active", "completed", "failed", "delayed", "waiting", "paused")
#: `spare` has no consumer either: the actions aimed at real jobs take its messages,
#: so `fuzz` keeps its odd ones for the GET routes.
QUEUES = ("fuzz", "done", "empty", "spare")
MAX_LIMIT = 100
MAX_BODY_BYTES = 64 * 1024
DOCUMENT: dict[str, Any] = json.loads(OPENAPI_PATH.read_text())
OPEN_PATHS = ("/metrics", "/healthz", "/readyz", "/openapi.json", "/")
HISTORY_PREFIX = "celery-jobs-exporter:"
#: Keys kombu rewrites at every refresh: the bindings of the reply queues of the
#: sidecar's own `inspect` broadcasts (a new reply queue each time) and their deadlines.
#: Nothing an action does is seen only there: every action writes the audit log first.
KOMBU_REPLY_BINDINGS = (b"_kombu.binding.reply.", b"_kombu.binding_deadlines")
#: `<uuid>.reply.celery.pidbox`: the reply list of the sidecar's own inspect round,
#: filled by the workers' answers and emptied every refresh, whatever the requests do.
KOMBU_REPLY_QUEUE = b".reply.celery.pidbox"

FUZZ_SETTINGS = settings(
    max_examples=500,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


@dataclass
class Api:
    """The in-process app, what it watches, and real jobs by `queue:status`."""

    app: AsgiApp
    client: falcon.testing.TestClient
    runtime: Runtime
    redis: RedisServer
    ids: dict[str, list[str]] = field(default_factory=dict)

    def real_jobs(self) -> list[tuple[str, str]]:
        """(queue, job id) of every job the world was given, but those kept for a 409."""
        return sorted(
            (where.split(":")[0], job) for where, jobs in self.ids.items() for job in jobs
            if not where.startswith("keep")
        )

    def kept_job(self, path: str) -> tuple[str, str]:
        """A job that stays in a status the action on `path` refuses (409): no other action
        is aimed at it. A completed job cannot be cancelled, a delayed one not removed or
        retried."""
        kept = "keep:completed" if path.endswith("/cancel") else "keep:delayed"
        return ("done", self.ids[kept][0])


def strict_json(text: str) -> Any:
    """Parse JSON as RFC 8259 has it: NaN and Infinity are not JSON."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def assert_sane(
    status: int, content_type: str | None, text: str, path: str, *, allow_503: bool = False
) -> Any:
    """No 5xx (but a 503 where allowed); errors are JSON `{"message": str}`, never HTML or
    a traceback."""
    assert status < 500 or (allow_503 and status == 503), (status, path, text[:500])
    media = (content_type or "").split(";")[0].strip()
    if status >= 400:
        assert media == "application/json", (status, path, content_type)
        body = strict_json(text)
        assert isinstance(body, dict) and set(body) == {"message"}, body
        assert isinstance(body["message"], str) and body["message"]
        assert "Traceback" not in body["message"] and "<html" not in body["message"].lower()
        assert 'File "' not in body["message"]
        return body
    if media == "application/json":
        return strict_json(text)
    return None


@pytest.fixture(scope="module")
def api() -> Iterator[Api]:
    """A real worker ran jobs on `done`; `fuzz` has no consumer and holds odd messages."""
    with contextlib.ExitStack() as stack:
        redis = RedisServer()
        stack.callback(redis.cleanup)
        # With result_extended, a retry of a `done` job knows its exact arguments: it runs.
        worker = CeleryWorker(redis.url, queues=("done",), concurrency=2, name="fuzz",
                              extra_env={"TEST_RESULT_BACKEND": redis.url})
        stack.callback(worker.close)
        stack.callback(worker.kill)
        config = Settings(
            broker_url=redis.url, queues=QUEUES, refresh_interval=0.5, inspect_timeout=0.4,
            api_keys=tuple(fuzz_keys()), api_max_limit=MAX_LIMIT, result_backend_url=redis.url,
        )
        runtime = Runtime(config)
        runtime.start()
        stack.callback(runtime.stop)
        app = sidecar_app(runtime)
        client = falcon.testing.TestClient(app, headers={"X-API-KEY": KEY})
        celery = load_app(redis.url)
        ids: dict[str, list[str]] = {"fuzz:paused": [], "spare:paused": []}
        for i in range(12):
            ids["fuzz:paused"].append(celery.send_task(
                "tests.ingest", kwargs={"ingestionSourceId": f"src-{i}", "payload": [i] * i},
                queue="fuzz", priority=i % 10,
            ).id)
        for serializer, args in (("msgpack", (1.5, 2)), ("yaml", ("ünï", None)),
                                 ("pickle", ({"a": 1},))):
            ids["fuzz:paused"].append(
                celery.send_task("tests.add", args=args, queue="fuzz", serializer=serializer).id
            )
        redis.client().lpush("fuzz", b"\xff\x00 not a message")
        for i in range(24):
            ids["spare:paused"].append(celery.send_task(
                "tests.add", args=(i, [i] * (i % 4)), queue="spare", priority=i % 10,
                serializer=("json", "msgpack", "yaml", "pickle")[i % 4],
            ).id)
        worker.wait_ready(60)
        for i in range(6):
            ids.setdefault("done:completed", []).append(
                celery.send_task("tests.add", args=(i, i), queue="done").id
            )
            ids.setdefault("done:failed", []).append(
                celery.send_task("tests.fail", args=(f"boom {i}",), queue="done").id
            )
        ids["keep:completed"] = [ids["done:completed"].pop()]
        ids["done:delayed"] = [
            celery.send_task("tests.add", args=(0, 0), queue="done", countdown=900).id
        ]
        ids["keep:delayed"] = [
            celery.send_task("tests.add", args=(1, 1), queue="done", countdown=900).id
        ]
        ids["done:active"] = [celery.send_task("tests.sleep", args=(120,), queue="done").id]
        counts: dict[str, int] = {}

        def settled() -> bool:
            nonlocal counts
            result = client.simulate_get("/v1/jobs/queues")
            if result.status_code != 200:
                return False
            listed = {q["name"]: q["counts"] for q in result.json["queues"]}
            counts = listed.get("done", {})
            return (counts.get("completed"), counts.get("failed"), counts.get("active"),
                    counts.get("delayed")) == (6, 6, 1, 2) and listed["fuzz"]["paused"] == 16 \
                and listed["spare"]["paused"] == 24

        if not wait_until(settled, timeout=60, interval=0.2):
            raise AssertionError(f"the jobs did not settle: {counts}")
        yield Api(app, client, runtime, redis, ids)


def fuzz_keys() -> list[ApiKey]:
    """An admin key (`flag-1`), a `read:metrics` key and a `read:jobs` key."""
    return [
        *keys_from_flags([KEY]),
        ApiKey("reader", digest(READER_KEY), frozenset({"read:metrics"})),
        ApiKey("jobs-reader", digest(JOBS_READER_KEY), frozenset({READ_JOBS})),
    ]


def sidecar_app(runtime: Runtime, *, read_only: bool = False) -> AsgiApp:
    """The app `serve` builds over a runtime: Jobs API, job actions, search."""
    config = runtime.settings
    provider = LocalProvider(runtime)
    return create_app(
        provider, stale_after=config.stale_after, keys=KeyRing(config.api_keys),
        jobs_backend=provider.jobs_backend, actions_backend=provider.actions_backend,
        read_only=read_only, api_max_limit=config.api_max_limit,
    )


# -- schemathesis: generated from the document -------------------------------------------------


def header_values() -> st.SearchStrategy[str]:
    """Header values a client can send: printable latin-1, maybe empty, no leading space."""
    return st.text(
        alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
        max_size=60,
    ).map(str.lstrip)


CREDENTIALS: st.SearchStrategy[dict[str, str]] = st.one_of(
    st.sampled_from([
        {"X-API-KEY": KEY},
        {"Authorization": f"Bearer {KEY}"},
        {"X-API-KEY": KEY, "Authorization": "Bearer nonsense"},
        {"X-API-KEY": READER_KEY},
        {"X-API-KEY": JOBS_READER_KEY},
        {"Authorization": f"Bearer {JOBS_READER_KEY}"},
        {},
        {"Authorization": "Basic Zm9vOmJhcg=="},
    ]),
    header_values().map(lambda v: {"X-API-KEY": v}),
    header_values().map(lambda v: {"Authorization": v}),
    header_values().map(lambda v: {"Authorization": "Bearer " + v}),
)
#: Every way to present no `manage:all`: nothing, a key that lacks it, an unknown key.
WITHOUT_MANAGE_ALL: st.SearchStrategy[dict[str, str]] = st.one_of(
    st.sampled_from([
        {},
        {"X-API-KEY": JOBS_READER_KEY},
        {"Authorization": f"Bearer {JOBS_READER_KEY}"},
        {"X-API-KEY": READER_KEY},
        {"X-API-KEY": JOBS_READER_KEY, "Authorization": f"Bearer {KEY}"},
        {"X-API-KEY": KEY[:-1]},
        {"Authorization": f"Bearer {KEY.upper()}"},
        {"Authorization": "Basic Zm9vOmJhcg=="},
    ]),
    header_values().map(lambda v: {"X-API-KEY": v}),
    header_values().map(lambda v: {"Authorization": "Bearer " + v}),
)


@pytest.fixture(scope="module")
def schema(api: Api) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", api.app)


def operations() -> list[str]:
    return [
        f"{method.upper()} {path}"
        for path, item in DOCUMENT["paths"].items()
        for method in item
    ]


def is_action(label: str) -> bool:
    return label.split(" ", 1)[0] in ("POST", "DELETE")


#: Examples of an action (each one that runs talks to Redis and the worker) or a search.
ACTION_EXAMPLES = 250
#: The share of examples of an /api/v1 twin: the same resource as its /v1 operation.
TWIN_SHARE = 5


def is_twin(label: str) -> bool:
    return " /api/v1/" in label


def examples(label: str) -> int:
    """Examples for one operation: fewer for an action or a search (each reads Redis),
    fewer still for an /api/v1 twin."""
    costly = is_action(label) or label.endswith("/jobs/search")
    base = ACTION_EXAMPLES if costly else FUZZ_SETTINGS.max_examples
    return base // TWIN_SHARE if is_twin(label) else base


def case_strategy(schema: Any, label: str, api: Api) -> st.SearchStrategy[Any]:
    """Positive and negative cases of one operation: for a queue, often one that exists;
    for a job, often a real job of any status (an action may then really run)."""
    method, path = label.split(" ", 1)
    operation = schema[path][method]
    parameters = DOCUMENT["paths"][path][method.lower()].get("parameters", [])
    names = {p["name"] for p in parameters}
    body = "requestBody" in DOCUMENT["paths"][path][method.lower()]
    strategies = [operation.as_strategy(generation_mode=GenerationMode.POSITIVE)]
    if parameters or body:
        strategies.append(operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))

    if "queueName" in names and "jobId" not in names:
        for queue in QUEUES:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                strategies.append(operation.as_strategy(
                    generation_mode=mode, path_parameters={"queueName": queue},
                ))
    elif "jobId" in names:
        def on_job(mode: GenerationMode) -> Any:
            return lambda job: operation.as_strategy(
                generation_mode=mode, path_parameters={"queueName": job[0], "jobId": job[1]},
            )

        jobs = st.sampled_from(api.real_jobs())
        strategies += [jobs.flatmap(on_job(GenerationMode.POSITIVE)),
                       jobs.flatmap(on_job(GenerationMode.NEGATIVE)),
                       st.just(api.kept_job(path)).flatmap(on_job(GenerationMode.POSITIVE))]
    if path.endswith("/purge"):  # a confirmation that matches: a purge that runs
        strategies.append(operation.as_strategy(
            path_parameters={"queueName": "empty"}, body={"confirm": "empty"},
        ))
    if path.endswith("/retry"):  # a job that can be retried: each of them runs once
        retryable = sorted(api.ids["done:failed"] + api.ids["done:completed"])
        strategies.append(st.sampled_from(retryable).flatmap(
            lambda job: operation.as_strategy(
                path_parameters={"queueName": "done", "jobId": job}, body={},
            )
        ))
    if path.endswith("/cancel"):  # stop the running job, with every signal
        strategies.append(st.sampled_from(SIGNALS).flatmap(
            lambda sig: operation.as_strategy(
                path_parameters={"queueName": "done", "jobId": api.ids["done:active"][0]},
                body={"terminate": True, "signal": sig},
            )
        ))
    if path.endswith("/search"):  # texts that match
        strategies.append(
            st.tuples(
                st.sampled_from(["src-1", "TESTS.", "boom", "ünï", "ingest", "add", "a"]),
                st.sampled_from([None, *STATUSES]),
            ).flatmap(lambda qs: operation.as_strategy(
                query={"q": qs[0], **({"status": qs[1]} if qs[1] else {})}
            ))
        )
    return st.one_of(strategies)


#: What the generated requests of each kind of operation must reach, at least.
def reachable(label: str) -> set[int]:
    method, path = label.split(" ", 1)
    if path.endswith("/jobs/queues"):
        return {200, 401, 403}
    if path.endswith("/jobs/queues/{queueName}") or path.endswith("/jobs/search"):
        return {200, 400, 401, 403, 404}
    if path.endswith("/jobs/audit"):
        return {200, 400, 401, 403}
    if method == "DELETE":
        return {200, 401, 403, 404, 409}
    if path.endswith("/retry"):
        return {202, 401, 403, 404, 409}
    if path.endswith("/cancel"):
        return {202, 400, 401, 403, 404, 409}
    if path.endswith(("/pause", "/resume")):
        return {202, 401, 403, 404}
    if path.endswith("/retry-failed"):
        return {202, 400, 401, 403, 404}
    if path.endswith("/purge"):
        return {200, 400, 401, 403, 404}
    return {200}


#: Every 503 answered while fuzzed, with its message.
UNAVAILABLE: list[tuple[str, str]] = []


@pytest.mark.parametrize("label", operations())
def test_generated_requests_never_fail_the_server(api: Api, schema: Any, label: str) -> None:
    """Generated requests, with every kind of credential: no 5xx but a documented 503, every
    answer as documented; and an action that succeeds was asked with `manage:all`."""
    path = label.split(" ", 1)[1]
    strategy = case_strategy(schema, label, api)
    documented = DOCUMENT["paths"][path][label.split(" ", 1)[0].lower()]["responses"]
    seen: dict[int, int] = {}
    calls: list[str] = []
    count = examples(label)

    # An action gets the admin key more often: then it runs, or is refused for its own reasons.
    credentials = st.one_of(st.just({"X-API-KEY": KEY}), CREDENTIALS) if is_action(label) \
        else CREDENTIALS

    @settings(FUZZ_SETTINGS, max_examples=count)
    @given(case=strategy, credentials=credentials)
    def run(case: Any, credentials: dict[str, str]) -> None:
        headers = {**(case.headers or {}), **credentials}
        response = case.call(headers=headers)
        calls.append(case.formatted_path)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        text = response.content.decode("utf-8", "replace")
        content_type = (response.headers.get("content-type") or [""])[0]
        unavailable = response.status_code == 503 and "503" in documented
        assert_sane(response.status_code, content_type, text, case.formatted_path,
                    allow_503=unavailable)
        if unavailable:
            UNAVAILABLE.append((label, json.loads(text)["message"]))
        checks = [status_code_conformance, content_type_conformance, response_schema_conformance]
        case.validate_response(
            response,
            checks=checks if unavailable else [not_a_server_error, *checks],
            headers=headers,
        )
        if is_action(label) and response.status_code < 300:
            presented = headers.get("X-API-KEY") or headers.get("Authorization", "")[7:]
            assert presented == KEY, (label, headers)

    run()
    print(label, "answers:", dict(sorted(seen.items())))  # shown with -s
    assert len(calls) >= count // 2, len(calls)
    # The generated requests reached every documented answer they can reach (a twin, with
    # fewer examples: a 401, and answers of the resource itself).
    if is_twin(label):
        assert 401 in seen and set(seen) - {401, 403}, (label, seen)
    else:
        assert reachable(label) <= set(seen), (label, seen)
    assert {str(code) for code in seen} <= set(documented), (label, seen)


def test_no_503_while_fuzzed_and_every_action_ran(api: Api) -> None:
    """503 is documented (broker unreachable, another process owns the refresher), but
    neither happens here: an action would have answered 503 only by failing while being
    carried out. And the fuzzing did carry out every action, not only refuse them."""
    assert UNAVAILABLE == [], UNAVAILABLE[:20]
    counts = api.runtime.actions.counts.snapshot()
    print("actions while fuzzed:", {k: v for k, v in sorted(counts.items()) if v})  # -s
    assert any(counts.values()), "no action was fuzzed: run this with the fuzz tests above"
    assert [a for a in ACTIONS if not counts[(a, "ok")]] == []


# -- hand-written: raw query strings -----------------------------------------------------------

VALID, INVALID, UNSURE = "valid", "invalid", "unsure"
ODD_NUMBERS = [
    "", " ", "0", "-1", "-0", "+0", "+5", " 7", "7 ", "007", "1.0", "1.5", "1e3", "0x10", "1_000",
    "١٢", "Ⅻ", "²", "NaN", "inf", "-inf", "null", "true", "[1]", "9" * 30, "-" + "9" * 30,
    "9" * 5000, str(10**9), str(10**9 + 1), "100", "101", "99", "1", "\u00a01", "1\u2003",
]
ODD_STATUSES = ["", " ", "FAILED", "failed ", " waiting", "wait", "null", "☃", "paused\x00",
                "completed,failed", "active;", *STATUSES]


def numbers() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(ODD_NUMBERS),
        st.integers(min_value=-(10**40), max_value=10**40).map(str),
        st.integers(min_value=1, max_value=150).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.text(alphabet=st.characters(codec="utf-8"), max_size=12),
    )


def statuses() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(ODD_STATUSES),
        st.text(alphabet=st.characters(codec="utf-8"), max_size=12),
    )


PAIRS = st.lists(
    st.one_of(
        st.tuples(st.just("status"), statuses()),
        st.tuples(st.just("page"), numbers()),
        st.tuples(st.just("limit"), numbers()),
        st.tuples(st.sampled_from(["other", "Page", "LIMIT", "status[]", ""]), numbers()),
    ),
    max_size=6,
)


def number_verdict(value: str, high: int) -> str:
    """Whether an integer parameter's value is surely valid, surely invalid, or debatable."""
    if value == "":
        return VALID
    if not any(ch.isdecimal() for ch in value):
        return INVALID
    if not value.isascii():
        return UNSURE
    match = re.fullmatch(r"\s*([+-]?)([0-9]+)\s*", value)
    if match is None:
        return INVALID
    if len(match.group(2)) > 4000:
        return UNSURE
    number = int(match.group(1) + match.group(2))
    if not 1 <= number <= high:
        return INVALID
    return VALID if value == match.group(2) else UNSURE


def verdict(name: str, value: str) -> str:
    if name == "status":
        return VALID if value in ("", *STATUSES) else INVALID
    return number_verdict(value, 10**9 if name == "page" else MAX_LIMIT)


@settings(FUZZ_SETTINGS, max_examples=3000)
@given(
    pairs=PAIRS,
    prefix=st.sampled_from(["/v1", "/api/v1"]),
    queue=st.sampled_from(QUEUES),
)
def test_raw_query_strings_get_200_or_a_400_naming_the_parameter(
    api: Api, pairs: list[tuple[str, str]], prefix: str, queue: str
) -> None:
    query = "&".join(
        f"{urllib.parse.quote(name, safe='')}={urllib.parse.quote(value, safe='')}"
        for name, value in pairs
    )
    path = f"{prefix}/jobs/queues/{queue}"
    result = api.client.simulate_get(path, query_string=query)
    body = assert_sane(result.status_code, result.headers.get("content-type"), result.text, path)
    assert result.status_code in (200, 400), (query, result.status_code, result.text[:300])
    verdicts: dict[str, set[str]] = {}
    for name, value in pairs:
        if name in ("status", "page", "limit"):
            verdicts.setdefault(name, set()).add(verdict(name, value))
    for name in verdicts:
        if sum(1 for given, _ in pairs if given == name) > 1:
            verdicts[name] = {INVALID}  # a parameter given twice is refused, whatever its values
    if all(v == {VALID} for v in verdicts.values()):
        assert result.status_code == 200, (query, result.text[:300])
    if any(v == {INVALID} for v in verdicts.values()):
        assert result.status_code == 400, (query, result.text[:300])
    if result.status_code == 400:
        match = re.match(r"invalid `(status|page|limit)`: .*expected ", body["message"], re.S)
        assert match, body["message"]
        named = match.group(1)
        assert verdicts.get(named, set()) - {VALID}, (query, body["message"])
        if named == "status":
            assert all(s in body["message"] for s in STATUSES)
        else:
            high = 10**9 if named == "page" else MAX_LIMIT
            assert f"from 1 to {high}" in body["message"]
    else:
        page = body["pagination"]
        assert 1 <= page["limit"] <= MAX_LIMIT and page["currentPage"] >= 1
        assert len(body["jobs"]) <= page["limit"]
        schema = DOCUMENT["components"]["schemas"]["QueueJobs"]
        jsonschema.Draft202012Validator(
            {**schema, "components": DOCUMENT["components"]}
        ).validate(body)


# -- hand-written: paths and credentials ---------------------------------------------------------

SEGMENTS = st.one_of(
    st.sampled_from(["v1", "api", "jobs", "queues", "fuzz", "done", "metrics", "healthz", "", ".",
                     "..", "%2F", "%2e%2e", "%00", "queues%2Ffuzz", "V1", "openapi.json"]),
    st.text(alphabet=st.characters(exclude_categories=("Cs", "Cc")), max_size=8)
    .map(lambda s: urllib.parse.quote(s, safe="")),
)


@settings(FUZZ_SETTINGS, max_examples=2000)
@given(
    segments=st.lists(SEGMENTS, min_size=1, max_size=6),
    credentials=CREDENTIALS,
)
def test_generated_paths_never_fail_the_server(
    api: Api, segments: list[str], credentials: dict[str, str]
) -> None:
    path = "/" + "/".join(segments)
    result = falcon.testing.simulate_get(api.app, path, headers=credentials)
    assert_sane(result.status_code, result.headers.get("content-type"), result.text, path)


@settings(FUZZ_SETTINGS, max_examples=200)
@given(
    slashes=st.integers(min_value=1, max_value=4),
    route=st.sampled_from(["v1/jobs/queues", "api/v1/jobs/queues", "v1/jobs/queues/fuzz",
                           "api/v1/jobs/queues/done", "v1/jobs/queues/done?status=completed"]),
    credentials=st.sampled_from([{}, {"X-API-KEY": READER_KEY}, {"X-API-KEY": "nope" * 5}]),
)
def test_without_manage_all_no_path_spelling_reaches_the_jobs(
    api: Api, slashes: int, route: str, credentials: dict[str, str]
) -> None:
    path, _, query = ("/" * slashes + route).partition("?")
    result = falcon.testing.simulate_get(api.app, path, query_string=query, headers=credentials)
    body = assert_sane(result.status_code, result.headers.get("content-type"), result.text, path)
    assert result.status_code in (401, 403, 404), (path, credentials, result.status_code)
    assert not (isinstance(body, dict) and {"queues", "jobs"} & set(body))


# -- hand-written: request bodies of the actions ------------------------------------------------

#: Each action once, on a queue and a job that do not exist: whatever the body, nothing runs.
NOWHERE = "/jobs/queues/no-such-queue"
BODY_ROUTES = [
    ("POST", f"{NOWHERE}/jobs/no-such-job/retry"),
    ("POST", f"{NOWHERE}/jobs/no-such-job/cancel"),
    ("DELETE", f"{NOWHERE}/jobs/no-such-job"),
    ("POST", f"{NOWHERE}/pause"),
    ("POST", f"{NOWHERE}/resume"),
    ("POST", f"{NOWHERE}/retry-failed"),
    ("POST", f"{NOWHERE}/purge"),
]
CONTENT_TYPES = st.one_of(
    st.sampled_from([
        None, "application/json", "application/json; charset=utf-8", "APPLICATION/JSON",
        " application/json ", "application/x-www-form-urlencoded", "multipart/form-data",
        "text/plain", "application/json-patch+json", "application/jsonx", "", "json",
    ]),
    header_values(),
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4),
    max_leaves=12,
)
BODIES = st.one_of(
    st.sampled_from([b"", b"  \n", b"{}", b"[]", b"null", b"{", b'{"limit": 5}',
                     b'{"terminate": true, "signal": "SIGKILL"}', b'{"confirm": "no-such-queue"}',
                     b"limit=5", b'{"limit": 1e400}', b'{"limit": ' + b"9" * 40 + b"}",
                     b"\xff\xfe", b'"\\ud800"', b"{" * 10_000,
                     b'{"a": "' + b"x" * MAX_BODY_BYTES + b'"}']),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(
        st.sampled_from(["terminate", "signal", "limit", "confirm", "x"]), JSON_VALUES, max_size=3,
    ).map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=40),
)


def body_verdict(raw: bytes, content_type: str | None) -> set[int]:
    """The statuses a body may get on a queue that does not exist."""
    if not raw.strip():
        return {400, 404}  # nothing to parse: a purge still lacks its confirmation
    media = (content_type or "").split(";")[0].strip().lower()
    if media != "application/json":
        return {415}
    if len(raw) > MAX_BODY_BYTES:
        return {413}
    try:
        value = json.loads(raw)
    except ValueError:
        return {400}
    if not isinstance(value, dict):
        return {400}
    return {400, 404}


@settings(FUZZ_SETTINGS, max_examples=400)
@given(
    route=st.sampled_from(BODY_ROUTES),
    prefix=st.sampled_from(["/v1", "/api/v1"]),
    raw=BODIES,
    content_type=CONTENT_TYPES,
)
def test_action_bodies_are_json_objects_or_refused(
    api: Api, route: tuple[str, str], prefix: str, raw: bytes, content_type: str | None
) -> None:
    method, path = route
    headers = {"X-API-KEY": KEY}
    if content_type is not None:
        headers["Content-Type"] = content_type
    result = api.client.simulate_request(method, prefix + path, body=raw, headers=headers)
    assert_sane(result.status_code, result.headers.get("content-type"), result.text, path)
    expected = body_verdict(raw, content_type)
    assert result.status_code in expected, (raw[:80], content_type, result.status_code,
                                            result.text[:200])
    if result.status_code == 404:
        assert "unknown queue" in result.json["message"], result.text[:200]


# -- without manage:all, no action changes anything -----------------------------------------------

GUARDED_QUEUES = ("work", "held", "empty")


@dataclass(frozen=True)
class Valid:
    """An action request that is carried out when sent with `manage:all`."""

    method: str
    template: str
    params: dict[str, str]
    body: dict[str, Any] | None = None

    @property
    def url(self) -> str:
        return self.template.format(**self.params)


@dataclass
class Guarded:
    """A world where every action would run, and nothing may have run."""

    app: AsgiApp
    read_only_app: AsgiApp
    runtime: Runtime
    redis: RedisServer
    valid: list[Valid]


@pytest.fixture(scope="module")
def guarded() -> Iterator[Guarded]:
    """Jobs in every status an action applies to, with exact arguments in the result backend."""
    with contextlib.ExitStack() as stack:
        redis = RedisServer()
        stack.callback(redis.cleanup)
        worker = CeleryWorker(
            redis.url, queues=("work",), concurrency=1, name="guarded",
            extra_env={"TEST_RESULT_BACKEND": redis.url},
        )
        stack.callback(worker.close)
        stack.callback(worker.kill)
        config = Settings(
            broker_url=redis.url, queues=GUARDED_QUEUES, refresh_interval=0.5,
            inspect_timeout=0.4, api_keys=tuple(fuzz_keys()), api_max_limit=MAX_LIMIT,
            result_backend_url=redis.url, history_prefix=HISTORY_PREFIX,
        )
        runtime = Runtime(config)
        runtime.start()
        stack.callback(runtime.stop)
        app = sidecar_app(runtime)
        celery = load_app(redis.url)
        held = [celery.send_task("tests.add", args=(i, 0), queue="held").id for i in range(3)]
        worker.wait_ready(60)
        completed = [celery.send_task("tests.add", args=(i, i), queue="work").id
                     for i in range(2)]
        failed = [celery.send_task("tests.fail", args=(f"boom {i}",), queue="work").id
                  for i in range(2)]
        delayed = celery.send_task("tests.add", args=(5, 6), queue="work", countdown=900).id
        active = celery.send_task("tests.sleep", args=(600,), queue="work").id
        client = falcon.testing.TestClient(app, headers={"X-API-KEY": KEY})
        expected = {"completed": 2, "failed": 2, "delayed": 1, "active": 1}

        def settled() -> bool:
            result = client.simulate_get("/v1/jobs/queues")
            if result.status_code != 200:
                return False
            listed = {q["name"]: q["counts"] for q in result.json["queues"]}
            work = listed.get("work", {})
            return all(work.get(s) == n for s, n in expected.items()) \
                and listed.get("held", {}).get("paused") == 3

        if not wait_until(settled, timeout=60, interval=0.2):
            raise AssertionError("the guarded world did not settle")
        job = "/v1/jobs/queues/{queueName}/jobs/{jobId}"
        queue = "/v1/jobs/queues/{queueName}"

        def on_job(name: str, task_id: str) -> dict[str, str]:
            return {"queueName": name, "jobId": task_id}

        valid = [  # in an order where each one runs
            Valid("POST", job + "/retry", on_job("work", failed[0])),
            Valid("POST", job + "/retry", on_job("work", completed[0]), {}),
            Valid("POST", job + "/cancel", on_job("work", delayed)),
            Valid("POST", job + "/cancel", on_job("held", held[0]), {}),
            Valid("DELETE", job, on_job("work", completed[1])),
            Valid("DELETE", job, on_job("held", held[1])),
            Valid("POST", queue + "/pause", {"queueName": "work"}),
            Valid("POST", queue + "/resume", {"queueName": "work"}, {}),
            Valid("POST", queue + "/retry-failed", {"queueName": "work"}, {"limit": 10}),
            Valid("POST", queue + "/purge", {"queueName": "held"}, {"confirm": "held"}),
            Valid("POST", job + "/cancel", on_job("work", active),
                  {"terminate": True, "signal": "SIGKILL"}),
        ]
        yield Guarded(app, sidecar_app(runtime, read_only=True), runtime, redis, valid)


def redis_state(client: redis_py.Redis) -> dict[bytes, bytes]:
    """Every key's DUMP (its type, value and encoding), but kombu's reply bindings and
    reply lists (the sidecar's refresh writes them, not an action)."""
    state = {}
    for key in client.scan_iter(count=1000):
        if key.startswith(KOMBU_REPLY_BINDINGS) or key.endswith(KOMBU_REPLY_QUEUE):
            continue
        dumped = client.dump(key)
        if dumped is not None:  # expired meanwhile
            state[key] = dumped
    return state


def quiet_state(client: redis_py.Redis) -> dict[bytes, bytes]:
    """The Redis state once two reads 0.5 s apart agree (nothing moves any more)."""
    last: dict[bytes, bytes] = {}

    def still() -> bool:
        nonlocal last
        now = redis_state(client)
        same, last = now == last, now
        return same

    if not wait_until(still, timeout=20, interval=0.5):
        raise AssertionError("Redis never stopped changing")
    return last


def changed_keys(before: dict[bytes, bytes], after: dict[bytes, bytes]) -> list[bytes]:
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def action_cases(schema: Any, guarded: Guarded) -> st.SearchStrategy[Any]:
    """Generated cases of every action route under both prefixes, and the requests that
    would really run (with `manage:all`)."""
    strategies = []
    for label in operations():
        if is_action(label):
            method, path = label.split(" ", 1)
            operation = schema[path][method]
            strategies.append(operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
            strategies.append(operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))
    for valid in guarded.valid:
        for prefix in ("", "/api"):
            operation = schema[prefix + valid.template][valid.method]
            body: dict[str, Any] = {} if valid.body is None else {"body": valid.body}
            strategies.append(operation.as_strategy(path_parameters=valid.params, **body))
    return st.one_of(strategies)


def refuse_every_action(
    app: AsgiApp, guarded: Guarded, credentials: st.SearchStrategy[dict[str, str]],
    examples: int, statuses: dict[int, int], *, read_only: bool,
) -> None:
    """Fuzz the action routes of `app` with `credentials`: each answer is a documented 401/403."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)

    @settings(FUZZ_SETTINGS, max_examples=examples)
    @given(call=action_cases(schema, guarded), headers=credentials)
    def run(call: Any, headers: dict[str, str]) -> None:
        response = call.call(headers={**(call.headers or {}), **headers})
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        text = response.content.decode("utf-8", "replace")
        content_type = (response.headers.get("content-type") or [""])[0]
        body = assert_sane(response.status_code, content_type, text, call.formatted_path)
        assert response.status_code in (401, 403), (call.formatted_path, headers,
                                                    response.status_code, text[:300])
        if read_only:
            assert "--read-only" in body["message"], body
        call.validate_response(
            response,
            checks=[not_a_server_error, status_code_conformance, content_type_conformance,
                    response_schema_conformance],
            headers=headers,
        )

    run()


def test_without_manage_all_no_action_changes_anything(guarded: Guarded) -> None:
    """No key, a `read:jobs` or `read:metrics` key, an unknown key, or `--read-only` with an
    admin key: every action route answers 401/403, no Redis key changes, no audit entry."""
    client = guarded.redis.client()
    before = quiet_state(client)
    assert not [k for k in before if k.startswith(HISTORY_PREFIX.encode() + b"audit:")]
    statuses: dict[int, int] = {}
    refuse_every_action(guarded.app, guarded, WITHOUT_MANAGE_ALL, 300, statuses,
                        read_only=False)
    refuse_every_action(guarded.read_only_app, guarded, st.just({"X-API-KEY": KEY}), 60,
                        statuses, read_only=True)
    print("without manage:all, answers:", dict(sorted(statuses.items())))  # shown with -s
    after = redis_state(client)
    assert changed_keys(before, after) == []
    audit = falcon.testing.simulate_get(guarded.app, "/v1/jobs/audit",
                                        headers={"X-API-KEY": KEY})
    assert audit.status_code == 200 and audit.json["entries"] == [], audit.text[:500]
    assert audit.json["pagination"]["totalJobs"] == 0
    assert not any(guarded.runtime.actions.counts.snapshot().values())
    assert {401, 403} <= set(statuses), statuses
    # The control: the same requests with `manage:all` do act, each recorded.
    for valid in guarded.valid:
        result = falcon.testing.simulate_request(
            guarded.app, valid.method, valid.url, json=valid.body, headers={"X-API-KEY": KEY},
        )
        assert result.status_code in (200, 202), (valid, result.status_code, result.text)
        answer = DOCUMENT["paths"][valid.template][valid.method.lower()]["responses"]
        schema = answer[str(result.status_code)]["content"]["application/json"]["schema"]
        jsonschema.Draft202012Validator(
            {**schema, "components": DOCUMENT["components"]}
        ).validate(result.json)
    assert changed_keys(after, redis_state(client))
    audit = falcon.testing.simulate_get(guarded.app, "/v1/jobs/audit",
                                        params={"limit": 100}, headers={"X-API-KEY": KEY})
    entries = audit.json["entries"]
    assert len(entries) == len(guarded.valid)
    assert {(e["key"], e["outcome"]) for e in entries} == {("flag-1", "ok")}
