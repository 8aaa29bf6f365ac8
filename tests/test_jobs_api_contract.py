"""The Jobs API keeps its contract: the OpenAPI document, every route's live answers, auth.

Everything is real: a private redis-server, a Celery worker running real tasks, and the
`celery-jobs-exporter serve` process. Every answer is checked against the schemas of
`exporter/web/openapi.json` (jsonschema, with the document's components), for its status
code and its content type, under both the `/v1` and the `/api/v1` prefixes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import falcon.inspect
import httpx
import jsonschema
import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator, validate

from exporter.config.auth import KeyRing
from exporter.model.snapshot import Snapshot
from exporter.prometheus.render import RenderedMetrics
from exporter.web.app import OPENAPI_PATH, create_app
from testkit.celery_worker import CeleryWorker, load_app
from testkit.exposition import parse_metrics, queue_counts, total
from testkit.redis_server import RedisServer
from testkit.sidecar import Sidecar
from testkit.wait import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

KEY = "contract-flag-key-0123456789"
ADMIN_KEY = "file-admin-key-abcdefghijklmnop"
READER_KEY = "file-reader-key-abcdefghijklmnop"
HASHED_ADMIN_KEY = "hashed-admin-key-qrstuvwxyz012345"
HASHED_READER_KEY = "hashed-reader-key-qrstuvwxyz012345"
WRONG_KEY = "wrong-key-that-nobody-configured-xyz"
ALL_SECRETS = (KEY, ADMIN_KEY, READER_KEY, HASHED_ADMIN_KEY, HASHED_READER_KEY, WRONG_KEY)
METRICS_TOKEN = "metrics-bearer-token-0123456789"
METRICS_BASIC = ("prometheus", "s3cret-basic-password")

STATUSES = ("active", "completed", "failed", "delayed", "waiting", "paused")
PREFIXES = ("/v1", "/api/v1")
FAST = ("--refresh-interval", "0.5", "--inspect-timeout", "0.5")
JOB_KEYS = {
    "id", "name", "data", "state", "failedReason", "timestamp", "processedOn", "finishedOn",
    "attemptsMade", "stacktrace", "returnValue", "ingestionSourceId", "error",
}
DOCUMENT: dict[str, Any] = json.loads(OPENAPI_PATH.read_text())


# -- checking answers against the document ---------------------------------------------------


def strict_json(text: str) -> Any:
    """Parse JSON as RFC 8259 has it: NaN and Infinity are not JSON."""

    def refuse(constant: str) -> Any:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def conforms(response: httpx.Response, template: str, status: int) -> Any:
    """Check status, content type and body against the document's response; return the body."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    content_type = response.headers.get("content-type", "")
    assert content_type.split(";")[0].strip() == "application/json", content_type
    body = strict_json(response.text)
    responses = DOCUMENT["paths"][template]["get"]["responses"]
    assert str(status) in responses, f"{template} does not document {status}"
    schema = responses[str(status)]["content"]["application/json"]["schema"]
    jsonschema.Draft202012Validator(
        {**schema, "components": DOCUMENT["components"]},
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    ).validate(body)
    if status >= 400:
        assert set(body) == {"message"}, body
        assert "Traceback" not in body["message"] and "<html" not in body["message"].lower()
    return body


def queues_template(prefix: str) -> str:
    return f"{prefix}/jobs/queues"


def queue_template(prefix: str) -> str:
    return f"{prefix}/jobs/queues/{{queueName}}"


# -- the world: a worker, real jobs in every status, the sidecar ------------------------------


@dataclass
class World:
    """A sidecar watching real Celery jobs that no longer move (stable counts)."""

    redis: RedisServer
    sidecar: Sidecar
    keys_file: Path
    ids: dict[str, set[str]] = field(default_factory=dict)
    held_ids: set[str] = field(default_factory=set)

    def get(self, path: str, key: str | None = KEY, **kwargs: Any) -> httpx.Response:
        headers = {"X-API-KEY": key} if key is not None else {}
        headers.update(kwargs.pop("headers", {}))
        return self.sidecar.get(path, headers=headers, **kwargs)


def keys_file(directory: Path) -> Path:
    """An --api-keys-file: keys in clear and keys given only by their SHA-256."""
    path = directory / "keys.yaml"
    path.write_text(
        f"""\
- name: admin-ui
  key: "{ADMIN_KEY}"
  permissions: [manage:all]
- name: dashboard
  key: "{READER_KEY}"
  permissions: [read:metrics]
- name: hashed-admin
  sha256: "{hashlib.sha256(HASHED_ADMIN_KEY.encode()).hexdigest()}"
  permissions: [manage:all]
- name: hashed-dashboard
  sha256: "{hashlib.sha256(HASHED_READER_KEY.encode()).hexdigest()}"
  permissions: [read:metrics, read:jobs]
"""
    )
    return path


def wait_counts(
    get: Callable[[str], httpx.Response],
    expected: Mapping[str, Mapping[str, int]],
    timeout: float = 45.0,
) -> dict[str, dict[str, int]]:
    """Poll GET /v1/jobs/queues until the given queues have exactly these counts."""
    counts: dict[str, dict[str, int]] = {}

    def reached() -> bool:
        nonlocal counts
        response = get("/v1/jobs/queues")
        if response.status_code != 200:
            return False
        counts = {q["name"]: q["counts"] for q in response.json()["queues"]}
        return all(counts.get(q) == dict(c) for q, c in expected.items())

    if not wait_until(reached, timeout=timeout, interval=0.2):
        raise AssertionError(f"counts not reached in {timeout}s: {counts} (wanted {expected})")
    return counts


def zero(**counts: int) -> dict[str, int]:
    return {s: counts.get(s, 0) for s in STATUSES}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """One worker (concurrency 1) on `work`; `held` has no consumer; `empty` is configured."""
    with contextlib.ExitStack() as stack:
        redis = RedisServer()
        stack.callback(redis.cleanup)
        worker = CeleryWorker(redis.url, queues=("work",), concurrency=1, name="contract")
        stack.callback(worker.close)
        stack.callback(worker.kill)  # first: its task sleeps for 90 s, no warm shutdown
        path = keys_file(tmp_path_factory.mktemp("keys"))
        sidecar = stack.enter_context(Sidecar(
            redis.url, *FAST, "--log-level", "debug", "--api-key", KEY,
            "--api-keys-file", str(path), "--queue", "work", "--queue", "held",
            "--queue", "empty",
        ))
        world = World(redis, sidecar, path)
        worker.wait_ready(60)
        sidecar.wait_ready()
        app = load_app(redis.url)
        done = [
            app.send_task("tests.add", args=(1, 2), queue="work").id,
            app.send_task("tests.add", args=(3, 4), queue="work").id,
            app.send_task(
                "tests.ingest", kwargs={"ingestionSourceId": "src-1", "payload": {"rows": 3}},
                queue="work",
            ).id,
        ]
        failed = [app.send_task("tests.fail", args=("boom",), queue="work").id]
        wait_counts(world.get, {"work": zero(completed=3, failed=1)})
        delayed = [app.send_task("tests.add", args=(5, 6), queue="work", countdown=600).id]
        active = [app.send_task("tests.sleep", args=(90,), queue="work").id]
        wait_counts(world.get, {"work": zero(completed=3, failed=1, delayed=1, active=1)})
        # Behind the running task: one is prefetched by the worker, two stay in the list.
        waiting = [app.send_task("tests.add", args=(i, i), queue="work").id for i in range(3)]
        world.held_ids = {
            app.send_task("tests.add", args=(i, 0), queue="held", priority=i * 4).id
            for i in range(2)
        }
        wait_counts(world.get, {
            "work": zero(completed=3, failed=1, delayed=1, active=1, waiting=3),
            "held": zero(paused=2),
            "empty": zero(),
        })
        world.ids = {
            "completed": set(done), "failed": set(failed), "delayed": set(delayed),
            "active": set(active), "waiting": set(waiting), "paused": set(),
        }
        yield world


# -- the document ---------------------------------------------------------------------------------


class NoSnapshot:
    """A provider for an app that is only inspected, never asked."""

    @property
    def snapshot(self) -> Snapshot | None:
        return None

    @property
    def rendered(self) -> RenderedMetrics | None:
        return None


def test_document_is_valid_openapi_3_1_and_is_what_the_sidecar_serves(world: World) -> None:
    assert DOCUMENT["openapi"].startswith("3.1")
    validate(DOCUMENT, cls=OpenAPIV31SpecValidator)
    served = world.get("/openapi.json", key=None)
    assert served.status_code == 200
    assert served.headers["content-type"].split(";")[0] == "application/json"
    assert served.content == OPENAPI_PATH.read_bytes()
    assert strict_json(served.text) == DOCUMENT
    # Every /v1 operation has its /api/v1 twin, documented the same way.
    for path, item in DOCUMENT["paths"].items():
        if path.startswith("/v1/"):
            assert set(DOCUMENT["paths"]["/api" + path]) == set(item), path
            for method, ours in item.items():
                twin = DOCUMENT["paths"]["/api" + path][method]
                assert {k: v for k, v in twin.items() if k != "operationId"} == {
                    k: v for k, v in ours.items() if k != "operationId"
                }
    # The documented error codes are those of the contract.
    queue_responses = DOCUMENT["paths"]["/v1/jobs/queues/{queueName}"]["get"]["responses"]
    assert set(queue_responses) == {"200", "400", "401", "403", "404", "503"}
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            if method not in ("post", "delete"):
                continue
            # An action: a key (never open), JSON bodies only, every refusal documented.
            assert operation["security"] == [{"apiKey": []}, {"bearer": []}], path
            assert {"400", "401", "403", "404", "413", "415", "503"} <= set(
                operation["responses"]
            ), path
            assert "manage:all" in operation["description"], path
            if "requestBody" in operation:
                assert set(operation["requestBody"]["content"]) == {"application/json"}, path
            for status, answer in operation["responses"].items():
                schema = answer["content"]["application/json"]["schema"]
                if int(status) >= 400:
                    assert schema == {"$ref": "#/components/schemas/Error"}, (path, status)
                else:
                    assert status in ("200", "202"), (path, status)


def documented_operations() -> set[tuple[str, str]]:
    return {
        (method.upper(), path) for path, item in DOCUMENT["paths"].items() for method in item
    }


def served_operations() -> set[tuple[str, str]]:
    """Every (method, path) `create_app` routes, with the document's parameter names."""
    app = create_app(NoSnapshot(), stale_after=10.0, keys=KeyRing([]))
    names = {"{queue_name}": "{queueName}", "{job_id}": "{jobId}"}
    served = set()
    for route in falcon.inspect.inspect_app(app).routes:
        path = route.path
        for falcon_name, name in names.items():
            path = path.replace(falcon_name, name)
        served |= {(m.method, path) for m in route.methods if not m.internal}
    return served


def test_every_documented_operation_is_served_and_every_action_is_documented() -> None:
    served = served_operations()
    documented = documented_operations()
    assert documented - served == set()
    undocumented_actions = {
        (method, path) for method, path in served - documented if method not in ("GET", "HEAD")
    }
    assert undocumented_actions == set()
    api_reads = {
        (method, path) for method, path in served - documented
        if method == "GET" and path.startswith(PREFIXES)
    }
    assert api_reads == set()


# -- live answers of every route ------------------------------------------------------------------


def test_queue_list_conforms_under_both_prefixes(world: World) -> None:
    for prefix in PREFIXES:
        body = conforms(world.get(queues_template(prefix)), queues_template(prefix), 200)
        counts = {q["name"]: q["counts"] for q in body["queues"]}
        assert counts["work"] == zero(
            completed=3, failed=1, delayed=1, active=1, waiting=3
        )
        assert counts["held"] == zero(paused=2)
        assert counts["empty"] == zero()
        for queue_counts_ in counts.values():
            assert list(queue_counts_) and all(type(v) is int for v in queue_counts_.values())


def test_every_status_page_conforms_and_lists_the_real_jobs(world: World) -> None:
    for prefix in PREFIXES:
        template = queue_template(prefix)
        for status in STATUSES:
            response = world.get(
                f"{prefix}/jobs/queues/work", params={"status": status, "limit": 100}
            )
            body = conforms(response, template, 200)
            assert body["name"] == "work"
            assert body["counts"]["completed"] == 3
            assert {j["id"] for j in body["jobs"]} == world.ids[status], status
            total = len(world.ids[status])
            assert body["pagination"] == {
                "currentPage": 1, "totalPages": 1 if total else 0, "totalJobs": total,
                "limit": 100,
            }
            for job in body["jobs"]:
                assert set(job) == JOB_KEYS
                assert job["state"] == status
        paused = conforms(
            world.get(f"{prefix}/jobs/queues/held", params={"status": "paused"}), template, 200
        )
        assert {j["id"] for j in paused["jobs"]} == world.held_ids
        assert all(j["state"] == "paused" for j in paused["jobs"])
        # The default status is `failed`, the default page 1 and limit 10.
        default = conforms(world.get(f"{prefix}/jobs/queues/work"), template, 200)
        assert [j["state"] for j in default["jobs"]] == ["failed"]
        assert default["pagination"] == {
            "currentPage": 1, "totalPages": 1, "totalJobs": 1, "limit": 10,
        }
        for status in STATUSES:
            empty = conforms(
                world.get(f"{prefix}/jobs/queues/empty", params={"status": status}), template, 200
            )
            assert empty["jobs"] == []
            assert empty["pagination"]["totalPages"] == 0


@pytest.mark.parametrize("prefix", PREFIXES)
def test_error_answers_conform(world: World, prefix: str) -> None:
    template = queue_template(prefix)
    url = f"{prefix}/jobs/queues/work"
    bad = {
        "status": ["bogus", "FAILED", "failed "],
        "page": ["0", "-1", "x", "1.5", "1e3"],
        "limit": ["0", "101", "abc", "2.0"],
    }
    for name, values in bad.items():
        for value in values:
            body = conforms(world.get(url, params={name: value}), template, 400)
            assert f"`{name}`" in body["message"], body
            assert "expected" in body["message"], body
            if name == "status":
                assert all(s in body["message"] for s in STATUSES)
            elif name == "limit":
                assert "1 to 100" in body["message"]
    for path, path_template in ((url, template), (queues_template(prefix),
                                                   queues_template(prefix))):
        missing = world.get(path, key=None)
        body = conforms(missing, path_template, 401)
        assert missing.headers["www-authenticate"].lower().startswith("bearer")
        conforms(world.get(path, key=WRONG_KEY), path_template, 401)
        conforms(world.get(path, key=None, headers={"Authorization": f"Bearer {WRONG_KEY}"}),
                 path_template, 401)
        conforms(world.get(path, key=None, headers={"Authorization": "Basic Zm9vOmJhcg=="}),
                 path_template, 401)
        body = conforms(world.get(path, key=READER_KEY), path_template, 403)
        assert "manage:all" in body["message"]
    body = conforms(world.get(f"{prefix}/jobs/queues/nope"), template, 404)
    assert "nope" in body["message"]
    body = conforms(world.get(f"{prefix}/jobs/queues/nope", params={"status": "waiting"}),
                    template, 404)


@pytest.mark.parametrize("prefix", PREFIXES)
def test_audit_log_and_search_conform(world: World, prefix: str) -> None:
    """The GET routes the job actions added: documented answers, `read:jobs` opens them."""
    audit, search = f"{prefix}/jobs/audit", f"{prefix}/jobs/search"
    for key in (KEY, HASHED_READER_KEY):
        body = conforms(world.get(audit, key=key), audit, 200)
        assert body["entries"] == [] and body["pagination"]["totalJobs"] == 0
        body = conforms(world.get(search, key=key, params={"q": "TESTS.ADD"}), search, 200)
        # `tests.add`: 2 completed, the delayed one, the 3 waiting ones, the 2 paused ones.
        found = {job["id"]: job["state"] for job in body["jobs"]}
        for status in ("delayed", "waiting"):
            assert all(found.get(i) == status for i in world.ids[status]), (status, found)
        assert all(found.get(i) == "paused" for i in world.held_ids), found
        assert list(found.values()).count("completed") == 2, found
        assert body["pagination"]["totalJobs"] == len(body["jobs"]) == 8, body["pagination"]
        assert set(body["scanned"]["lists"]) == {"work", "held", "empty"}, body["scanned"]
    body = conforms(world.get(search, params={"q": "src-1", "status": "completed"}), search, 200)
    assert [job["state"] for job in body["jobs"]] == ["completed"]
    assert body["jobs"][0]["ingestionSourceId"] == "src-1"
    for params in ({}, {"q": ""}, {"q": "x" * 201}, {"q": "a", "status": "done"},
                   {"q": "a", "limit": "0"}):
        conforms(world.get(search, params=params), search, 400)
    conforms(world.get(audit, params={"page": "0"}), audit, 400)
    conforms(world.get(search, params={"q": "a", "queue": "nope"}), search, 404)
    for path in (audit, search):
        conforms(world.get(path, key=None, params={"q": "a"}), path, 401)
        conforms(world.get(path, key=READER_KEY, params={"q": "a"}), path, 403)


@pytest.mark.parametrize("prefix", PREFIXES)
def test_the_console_s_reads_conform_and_agree_with_metrics(world: World, prefix: str) -> None:
    workers, generation = f"{prefix}/jobs/workers", f"{prefix}/jobs/generation"
    body = conforms(world.get(workers, key=HASHED_READER_KEY), workers, 200)
    assert [w["hostname"].split("@")[0] for w in body["workers"] if w["up"]] == ["contract"]
    assert body["workers"][0]["concurrency"] == 1 and body["workers"][0]["queues"] == ["work"]
    assert body["consumers"] == {"work": 1, "held": 0, "empty": 0}
    samples = parse_metrics(world.sidecar.get("/metrics").text)
    for queue, totals in body["finished"].items():
        for outcome, count in totals.items():
            assert count == total(samples, "celery_tasks_total", queue=queue, outcome=outcome)
    assert body["finished"]["work"] == {"succeeded": 3, "failed": 1}
    now = conforms(world.get(generation, key=HASHED_READER_KEY), generation, 200)["generation"]
    assert now >= body["generation"]
    for path in (workers, generation):
        conforms(world.get(path, key=None), path, 401)
        conforms(world.get(path, key=WRONG_KEY), path, 401)
        conforms(world.get(path, key=READER_KEY), path, 403)  # a key without read:jobs


def test_unknown_routes_and_methods_answer_json(world: World) -> None:
    for path in ("/v2/jobs/queues", "/v1/jobs", "/v1/jobs/queues/work/extra", "/nothing"):
        response = world.get(path)
        assert response.status_code == 404, path
        assert response.headers["content-type"].split(";")[0] == "application/json"
        assert set(strict_json(response.text)) == {"message"}
    response = httpx.post(world.sidecar.base_url + "/v1/jobs/queues", headers={"X-API-KEY": KEY})
    assert response.status_code == 405
    assert set(strict_json(response.text)) == {"message"}


def test_queue_counts_are_those_of_the_metrics_of_the_same_snapshot(world: World) -> None:
    for _attempt in range(20):
        before = world.get("/readyz", key=None).json()["generation"]
        listed = conforms(world.get("/v1/jobs/queues"), "/v1/jobs/queues", 200)
        scraped = world.get("/metrics", key=None)
        after = world.get("/readyz", key=None).json()["generation"]
        if before == after:
            break
    else:
        raise AssertionError("the snapshot changed during every attempt")
    assert scraped.status_code == 200
    samples = parse_metrics(scraped.text)
    api = {q["name"]: q["counts"] for q in listed["queues"]}
    exposed = {
        dict(labels)["queue"]
        for name, labels in samples
        if name == "celery_queue_jobs"
    }
    assert set(api) == exposed
    for queue, counts in api.items():
        assert queue_counts(samples, queue) == counts, queue


# -- authentication ---------------------------------------------------------------------------


def test_keys_by_header_by_bearer_and_from_a_keys_file(world: World) -> None:
    for prefix in PREFIXES:
        for path, template in (
            (f"{prefix}/jobs/queues", queues_template(prefix)),
            (f"{prefix}/jobs/queues/work?status=completed", queue_template(prefix)),
        ):
            # read:jobs opens the GET routes, as manage:all does; read:metrics does not.
            for key in (KEY, ADMIN_KEY, HASHED_ADMIN_KEY, HASHED_READER_KEY):
                conforms(world.get(path, key=key), template, 200)
                conforms(
                    world.get(path, key=None, headers={"Authorization": f"Bearer {key}"}),
                    template, 200,
                )
            for key in (READER_KEY,):
                conforms(world.get(path, key=key), template, 403)
                conforms(
                    world.get(path, key=None, headers={"Authorization": f"Bearer {key}"}),
                    template, 403,
                )
            conforms(world.get(path, key=None), template, 401)
            conforms(world.get(path, key=WRONG_KEY), template, 401)
            conforms(world.get(path, key=KEY[:-1]), template, 401)
            conforms(world.get(path, key=HASHED_ADMIN_KEY.upper()), template, 401)
            # The hex digest is what the file holds; it is not a key.
            digest = hashlib.sha256(HASHED_ADMIN_KEY.encode()).hexdigest()
            conforms(world.get(path, key=digest), template, 401)
    # Whatever was presented, no key (right or wrong) reaches the log, at debug level.
    log = world.sidecar.log()
    assert "exporter" in log
    for secret in ALL_SECRETS:
        assert secret not in log, f"{secret[:8]}… appears in the sidecar log"
    assert "authentication is OFF" not in log


def test_no_auth_serves_without_a_key_and_warns(world: World) -> None:
    with Sidecar(world.redis.url, *FAST, "--no-auth", "--no-history", "--queue", "work") as open_:
        open_.wait_ready()
        for prefix in PREFIXES:
            conforms(open_.get(f"{prefix}/jobs/queues"), queues_template(prefix), 200)
            conforms(
                open_.get(f"{prefix}/jobs/queues/work", params={"status": "completed"}),
                queue_template(prefix), 200,
            )
            conforms(open_.get(f"{prefix}/jobs/queues/nope"), queue_template(prefix), 404)
        log = open_.log()
    assert "WARNING" in log and "authentication is OFF (--no-auth)" in log


def test_metrics_behind_a_bearer_token_or_basic_auth(world: World) -> None:
    basic = f"{METRICS_BASIC[0]}:{METRICS_BASIC[1]}"
    with Sidecar(
        world.redis.url, *FAST, "--no-history", "--api-key", KEY,
        "--metrics-bearer-token", METRICS_TOKEN,
    ) as bearer, Sidecar(
        world.redis.url, *FAST, "--no-history", "--api-key", KEY, "--metrics-basic-auth", basic,
    ) as basic_auth:
        bearer.wait_ready()
        basic_auth.wait_ready()

        def scrape(sidecar: Sidecar, **kwargs: Any) -> httpx.Response:
            return sidecar.get("/metrics", **kwargs)

        for sidecar in (bearer, basic_auth):
            refused = scrape(sidecar)
            conforms(refused, "/metrics", 401)
            assert "www-authenticate" in refused.headers
            conforms(scrape(sidecar, headers={"Authorization": "Bearer not-the-token-at-all"}),
                     "/metrics", 401)
            conforms(scrape(sidecar, auth=(METRICS_BASIC[0], "wrong-password")), "/metrics", 401)
            conforms(scrape(sidecar, auth=("someone-else", METRICS_BASIC[1])), "/metrics", 401)
            conforms(scrape(sidecar, headers={"Authorization": "Basic %%%"}), "/metrics", 401)
            # The Jobs API keeps its own keys.
            conforms(sidecar.get("/v1/jobs/queues", headers={"X-API-KEY": KEY}),
                     "/v1/jobs/queues", 200)
            conforms(sidecar.get("/v1/jobs/queues",
                                 headers={"Authorization": f"Bearer {METRICS_TOKEN}"}),
                     "/v1/jobs/queues", 401)
            assert sidecar.get("/healthz").status_code == 200
        ok = scrape(bearer, headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert ok.status_code == 200
        assert ok.headers["content-type"].startswith("text/plain")
        assert "celery_queue_jobs" in ok.text
        conforms(scrape(bearer, auth=METRICS_BASIC), "/metrics", 401)
        ok = scrape(basic_auth, auth=METRICS_BASIC)
        assert ok.status_code == 200 and "celery_queue_jobs" in ok.text
        conforms(scrape(basic_auth, headers={"Authorization": f"Bearer {METRICS_TOKEN}"}),
                 "/metrics", 401)
        for sidecar in (bearer, basic_auth):
            log = sidecar.log()
            assert METRICS_TOKEN not in log and METRICS_BASIC[1] not in log and KEY not in log


def test_no_spelling_of_a_protected_path_skips_authentication(world: World) -> None:
    """`//v1/jobs/queues` (or `/%2Fv1/...`) routes to the same resource: it must need a key too."""
    with Sidecar(
        world.redis.url, *FAST, "--no-history", "--api-key", KEY, "--queue", "work",
        "--metrics-bearer-token", METRICS_TOKEN,
    ) as sidecar:
        sidecar.wait_ready()
        answers = {}
        for path in (
            "//v1/jobs/queues",
            "///v1/jobs/queues",
            "//api/v1/jobs/queues",
            "//v1/jobs/queues/work?status=completed",
            "/%2Fv1/jobs/queues",
            "//metrics",
        ):
            response = httpx.get(sidecar.base_url + path, timeout=10.0)
            assert response.headers["content-type"].split(";")[0] in (
                "application/json", "text/plain",
            )
            answers[path] = response.status_code
        let_through = sorted(path for path, code in answers.items() if code not in (401, 404))
        assert not let_through, f"answered without credentials: {let_through} ({answers})"


# -- 503 before the first snapshot ------------------------------------------------------------


def wait_listening(sidecar: Sidecar, timeout: float = 30.0) -> None:
    """Wait until the sidecar answers HTTP at all (/healthz)."""
    if not wait_until(lambda: answers(sidecar, "/healthz"), timeout=timeout, interval=0.05):
        raise AssertionError(f"the sidecar does not answer:\n{sidecar.log()[-2000:]}")


def wait_metrics_answer(sidecar: Sidecar, timeout: float = 30.0) -> None:
    """Wait until the first refresh (with the broker failing) has built a snapshot."""
    if not wait_until(lambda: answers(sidecar, "/metrics"), timeout=timeout, interval=0.2):
        raise AssertionError(f"no snapshot after {timeout}s:\n{sidecar.log()[-2000:]}")


def answers(sidecar: Sidecar, path: str, **kwargs: Any) -> bool:
    """GET `path` answers 200 (False while the sidecar cannot be reached)."""
    try:
        return sidecar.get(path, **kwargs).status_code == 200
    except httpx.HTTPError:
        return False


def assert_unavailable(sidecar: Sidecar) -> None:
    for prefix in PREFIXES:
        for path, template in (
            (f"{prefix}/jobs/queues", queues_template(prefix)),
            (f"{prefix}/jobs/queues/jobs?status=waiting", queue_template(prefix)),
            (f"{prefix}/jobs/queues/jobs", queue_template(prefix)),
        ):
            response = sidecar.get(path, headers={"X-API-KEY": KEY})
            body = conforms(response, template, 503)
            assert "snapshot" in body["message"] or "broker" in body["message"]
        # Credentials are still checked first.
        conforms(sidecar.get(f"{prefix}/jobs/queues"), queues_template(prefix), 401)


@dataclass
class Unreachable:
    """A sidecar started while its redis-server is stopped."""

    redis: RedisServer
    sidecar: Sidecar


@pytest.fixture(scope="module")
def unreachable() -> Iterator[dict[str, Unreachable]]:
    """Two sidecars whose brokers are down from the start: plain, and with `--queue jobs`."""
    with contextlib.ExitStack() as stack:
        found: dict[str, Unreachable] = {}
        for name, extra in (("plain", ()), ("configured", ("--queue", "jobs"))):
            redis = RedisServer()
            stack.callback(redis.cleanup)
            redis.stop()
            sidecar = stack.enter_context(Sidecar(redis.url, *FAST, "--api-key", KEY, *extra))
            found[name] = Unreachable(redis, sidecar)

        def terminate_all() -> None:
            """Stop both at once (each waits for its refresher), not one after the other."""
            for each in found.values():
                if each.sidecar.process.poll() is None:
                    os.killpg(each.sidecar.process.pid, signal.SIGTERM)

        stack.callback(terminate_all)
        yield found


def test_503_until_the_broker_was_read_then_200(unreachable: dict[str, Unreachable]) -> None:
    redis, sidecar = unreachable["plain"].redis, unreachable["plain"].sidecar
    wait_listening(sidecar)
    # Before the first snapshot (or, once a refresh gave up on the dead broker, after it):
    # the refresh now ends within its deadline, so which one this sees is a race.
    assert_unavailable(sidecar)
    wait_metrics_answer(sidecar)
    assert_unavailable(sidecar)  # a snapshot, but the broker was never read
    assert sidecar.get("/readyz").status_code == 503
    redis.start()
    load_app(redis.url).send_task("tests.add", args=(1, 1), queue="jobs")
    wait_until(
        lambda: answers(sidecar, "/v1/jobs/queues", headers={"X-API-KEY": KEY}),
        timeout=30, interval=0.2,
    )
    response = sidecar.get("/v1/jobs/queues", headers={"X-API-KEY": KEY})
    conforms(response, "/v1/jobs/queues", 200)


def test_503_until_the_broker_was_read_even_with_configured_queues(
    unreachable: dict[str, Unreachable],
) -> None:
    """`--queue jobs` must not turn "never read the broker" into a page of zero counts."""
    sidecar = unreachable["configured"].sidecar
    wait_listening(sidecar)
    assert_unavailable(sidecar)
    wait_metrics_answer(sidecar)
    assert sidecar.get("/readyz").status_code == 503  # the sidecar knows the broker is unread
    assert_unavailable(sidecar)
