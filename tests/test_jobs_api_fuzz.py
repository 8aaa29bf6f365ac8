"""Property-based tests of the Jobs API: generated and malformed requests never break it.

The app is the real Falcon app (`create_app`) over a real `Runtime` (event stream,
refresher, broker pager) watching a private redis-server, where a real Celery worker
ran real tasks and a queue nobody consumes holds JSON, msgpack, YAML and pickle
messages and a garbage entry. Requests go through ASGI in-process: schemathesis
generates them from the OpenAPI document (positive and negative), and hand-written
Hypothesis strategies throw raw query strings and paths at it. Every run is bounded
and derandomized.
"""

from __future__ import annotations

import contextlib
import json
import re
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import falcon.testing
import jsonschema
import pytest
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

from exporter.config.auth import ApiKey, KeyRing, digest, keys_from_flags
from exporter.config.settings import Settings
from exporter.serving.runtime import Runtime
from exporter.serving.sharing import LocalProvider
from exporter.web.app import OPENAPI_PATH, AsgiApp, create_app
from testkit.celery_worker import CeleryWorker, load_app
from testkit.redis_server import RedisServer
from testkit.wait import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

KEY = "fuzz-admin-key-0123456789abcdef"
READER_KEY = "fuzz-reader-key-0123456789abcdef"
STATUSES = ("active", "completed", "failed", "delayed", "waiting", "paused")
QUEUES = ("fuzz", "done", "empty")
MAX_LIMIT = 100
DOCUMENT: dict[str, Any] = json.loads(OPENAPI_PATH.read_text())
OPEN_PATHS = ("/metrics", "/healthz", "/readyz", "/openapi.json", "/")

FUZZ_SETTINGS = settings(
    max_examples=500,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


@dataclass
class Api:
    """The in-process app and what it watches."""

    app: AsgiApp
    client: falcon.testing.TestClient
    runtime: Runtime


def strict_json(text: str) -> Any:
    """Parse JSON as RFC 8259 has it: NaN and Infinity are not JSON."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def assert_sane(status: int, content_type: str | None, text: str, path: str) -> Any:
    """No 5xx; errors are JSON `{"message": str}`, never HTML or a traceback."""
    assert status < 500, (status, path, text[:500])
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
        worker = CeleryWorker(redis.url, queues=("done",), concurrency=2, name="fuzz")
        stack.callback(worker.close)
        stack.callback(worker.kill)
        keys = [
            *keys_from_flags([KEY]),
            ApiKey("reader", digest(READER_KEY), frozenset({"read:metrics"})),
        ]
        config = Settings(
            broker_url=redis.url, queues=QUEUES, refresh_interval=0.5, inspect_timeout=0.4,
            api_keys=tuple(keys), api_max_limit=MAX_LIMIT,
        )
        runtime = Runtime(config)
        runtime.start()
        stack.callback(runtime.stop)
        provider = LocalProvider(runtime)
        app = create_app(
            provider, stale_after=config.stale_after, keys=KeyRing(config.api_keys),
            jobs_backend=provider.jobs_backend, api_max_limit=config.api_max_limit,
        )
        client = falcon.testing.TestClient(app, headers={"X-API-KEY": KEY})
        celery = load_app(redis.url)
        for i in range(12):
            celery.send_task(
                "tests.ingest", kwargs={"ingestionSourceId": f"src-{i}", "payload": [i] * i},
                queue="fuzz", priority=i % 10,
            )
        celery.send_task("tests.add", args=(1.5, 2), queue="fuzz", serializer="msgpack")
        celery.send_task("tests.add", args=("ünï", None), queue="fuzz", serializer="yaml")
        celery.send_task("tests.add", args=({"a": 1},), queue="fuzz", serializer="pickle")
        redis.client().lpush("fuzz", b"\xff\x00 not a message")
        worker.wait_ready(60)
        for i in range(6):
            celery.send_task("tests.add", args=(i, i), queue="done")
            celery.send_task("tests.fail", args=(f"boom {i}",), queue="done")
        celery.send_task("tests.add", args=(0, 0), queue="done", countdown=900)
        celery.send_task("tests.sleep", args=(120,), queue="done")
        counts: dict[str, int] = {}

        def settled() -> bool:
            nonlocal counts
            result = client.simulate_get("/v1/jobs/queues")
            if result.status_code != 200:
                return False
            listed = {q["name"]: q["counts"] for q in result.json["queues"]}
            counts = listed.get("done", {})
            return (counts.get("completed"), counts.get("failed"), counts.get("active"),
                    counts.get("delayed")) == (6, 6, 1, 1) and listed["fuzz"]["paused"] == 16

        if not wait_until(settled, timeout=60, interval=0.2):
            raise AssertionError(f"the jobs did not settle: {counts}")
        yield Api(app, client, runtime)


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
        {},
        {"Authorization": "Basic Zm9vOmJhcg=="},
    ]),
    header_values().map(lambda v: {"X-API-KEY": v}),
    header_values().map(lambda v: {"Authorization": v}),
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


def case_strategy(schema: Any, label: str) -> st.SearchStrategy[Any]:
    """Positive and negative cases of one operation; for a queue, often a queue that exists."""
    method, path = label.split(" ", 1)
    operation = schema[path][method]
    parameters = DOCUMENT["paths"][path][method.lower()].get("parameters", [])
    strategies = [operation.as_strategy(generation_mode=GenerationMode.POSITIVE)]
    if parameters:
        strategies.append(operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))
    if any(p["name"] == "queueName" for p in parameters):
        for queue in QUEUES:
            fixed = {"queueName": queue}
            strategies.append(operation.as_strategy(
                generation_mode=GenerationMode.POSITIVE, path_parameters=fixed,
            ))
            strategies.append(operation.as_strategy(
                generation_mode=GenerationMode.NEGATIVE, path_parameters=fixed,
            ))
    return st.one_of(strategies)


@pytest.mark.parametrize("label", operations())
def test_generated_requests_never_fail_the_server(api: Api, schema: Any, label: str) -> None:
    strategy = case_strategy(schema, label)
    seen: set[int] = set()
    calls: list[str] = []

    @FUZZ_SETTINGS
    @given(case=strategy, credentials=CREDENTIALS)
    def run(case: Any, credentials: dict[str, str]) -> None:
        headers = {**(case.headers or {}), **credentials}
        response = case.call(headers=headers)
        calls.append(case.formatted_path)
        seen.add(response.status_code)
        text = response.content.decode("utf-8", "replace")
        content_type = (response.headers.get("content-type") or [""])[0]
        assert_sane(response.status_code, content_type, text, case.formatted_path)
        case.validate_response(
            response,
            checks=[
                not_a_server_error, status_code_conformance, content_type_conformance,
                response_schema_conformance,
            ],
            headers=headers,
        )

    run()
    assert len(calls) >= FUZZ_SETTINGS.max_examples // 2, len(calls)
    # The generated requests reached every documented answer they can reach.
    if "{queueName}" in label:
        assert {200, 400, 401, 403, 404} <= seen, seen
    elif "jobs" in label:
        assert {200, 401, 403} <= seen, seen
    else:
        assert 200 in seen, seen


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
