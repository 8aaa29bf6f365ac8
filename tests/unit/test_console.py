"""The web console's routes: its three files, their types and CSP, and the two reads it polls.

The app is the real Falcon app; the snapshot is the unit samples' one.
"""

from __future__ import annotations

import re
from pathlib import Path

import falcon.testing
import pytest

from exporter.config.auth import READ_JOBS, ApiKey, KeyRing, digest
from exporter.model.readings import WaitingMessage
from exporter.model.search import SearchQuery, SearchResult
from exporter.model.snapshot import Snapshot
from exporter.prometheus.render import RenderedMetrics, render
from exporter.protocol.cardinality import label_value
from exporter.web.app import create_app
from exporter.web.console import ASSETS, CONTENT_SECURITY_POLICY, UI_DIR
from testkit.exposition import parse_metrics, total
from tests.unit.samples import sample_snapshot

READER = "reader-key-0123456789"
METRICS_ONLY = "metrics-key-0123456789"
KEYS = KeyRing([
    ApiKey("dashboard", digest(READER), frozenset({READ_JOBS})),
    ApiKey("scraper", digest(METRICS_ONLY), frozenset({"read:metrics"})),
])
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


class Provider:
    def __init__(self, snapshot: Snapshot | None) -> None:
        self._snapshot = snapshot

    @property
    def snapshot(self) -> Snapshot | None:
        return self._snapshot

    @property
    def rendered(self) -> RenderedMetrics | None:
        return None


class Backend:
    def waiting_page(self, queue: str, offset: int, limit: int) -> list[WaitingMessage]:
        return []

    def search(self, query: SearchQuery) -> SearchResult:
        raise AssertionError("not used")


def client(snapshot: Snapshot | None = None) -> falcon.testing.TestClient:
    backend = Backend()
    app = create_app(
        Provider(snapshot or sample_snapshot()), stale_after=1e12, keys=KEYS,
        jobs_backend=lambda: backend,
    )
    return falcon.testing.TestClient(app)


@pytest.mark.parametrize(
    ("path", "name"),
    [("/ui/", "index.html"), ("/ui", "index.html"), ("/ui/index.html", "index.html"),
     ("/ui/console.js", "console.js"), ("/ui/console.css", "console.css")],
)
def test_each_file_is_served_with_its_type_and_the_strict_policy(path: str, name: str) -> None:
    answer = client().simulate_get(path)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == ASSETS[name]
    assert answer.content == (UI_DIR / name).read_bytes()
    assert answer.headers["content-security-policy"] == CSP == CONTENT_SECURITY_POLICY
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] == "no-referrer"
    assert client().simulate_head(path).status_code == 200


def test_the_console_needs_no_key_but_the_apis_it_reads_do() -> None:
    assert client().simulate_get("/ui/").status_code == 200
    for path in ("/v1/jobs/workers", "/v1/jobs/generation", "/api/v1/jobs/generation"):
        assert client().simulate_get(path).status_code == 401
        assert client().simulate_get(path, headers={"X-API-KEY": METRICS_ONLY}).status_code == 403


@pytest.mark.parametrize(
    "path",
    ["/ui/../app.py", "/ui/..%2Fapp.py", "/ui/%2e%2e/app.py", "/ui/console.py", "/ui/ui",
     "/ui/..", "/ui/.%2e", "/ui/index.html%00", "/ui/%2Fetc%2Fpasswd", "/ui/console.js/x",
     "/ui/CONSOLE.JS", "/ui/..\\app.py"],
)
def test_no_other_file_is_reachable(path: str) -> None:
    answer = client().simulate_get(path)
    assert answer.status_code == 404
    assert answer.headers["content-type"].startswith("application/json")
    assert "import" not in answer.text and "root:" not in answer.text


def test_the_page_has_no_inline_script_or_style() -> None:
    page = (UI_DIR / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)", page)
    assert "<style" not in page and " style=" not in page
    assert not re.search(r"\son[a-z]+=", page)  # no inline event handlers
    script = (UI_DIR / "console.js").read_text()
    assert "innerHTML" not in script.replace("never innerHTML", "")
    assert "eval(" not in script and "document.cookie" not in script
    assert "localStorage" not in script


def test_the_ui_assets_ship_in_the_package() -> None:
    pyproject = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    assert '"web/ui/*"' in pyproject
    assert {p.name for p in UI_DIR.iterdir()} == set(ASSETS)


def test_workers_lists_the_snapshot_s_workers_and_queue_consumers() -> None:
    snapshot = sample_snapshot()
    answer = client(snapshot).simulate_get("/v1/jobs/workers", headers={"X-API-KEY": READER})
    assert answer.status_code == 200
    body = answer.json
    assert [w["hostname"] for w in body["workers"]] == ["celery@a", "celery@b"]
    a = body["workers"][0]
    worker = snapshot.workers["celery@a"]
    assert a == {
        "hostname": "celery@a", "up": True, "queues": ["emails"], "active": 1,
        "concurrency": 4, "lastSeen": round((worker.last_seen or 0) * 1000),
    }
    assert body["workers"][1]["up"] is False and body["workers"][1]["concurrency"] is None
    assert body["consumers"] == {q.name: q.consumers for q in snapshot.queues.values()}


def test_workers_gives_each_queue_s_finished_totals_as_metrics_counts_them() -> None:
    """The console's rates come from these: the same sums as celery_tasks_total."""
    snapshot = sample_snapshot()
    body = client(snapshot).simulate_get(
        "/v1/jobs/workers", headers={"X-API-KEY": READER}
    ).json
    samples = parse_metrics(render(snapshot).text.decode())
    assert set(body["finished"]) == set(snapshot.queues)
    assert body["finished"]["emails"] == {"succeeded": 2, "failed": 1}
    for queue, totals in body["finished"].items():
        for outcome, count in totals.items():
            assert count == total(samples, "celery_tasks_total",
                                  queue=label_value(queue, 100), outcome=outcome)


def test_generation_answers_the_snapshot_s_generation() -> None:
    answer = client().simulate_get("/v1/jobs/generation", headers={"X-API-KEY": READER})
    assert answer.status_code == 200
    assert answer.json == {"generation": 42}


def test_generation_is_503_before_the_broker_was_read() -> None:
    backend = Backend()
    app = create_app(Provider(None), stale_after=1.0, keys=KEYS, jobs_backend=lambda: backend)
    answer = falcon.testing.TestClient(app).simulate_get(
        "/v1/jobs/generation", headers={"X-API-KEY": READER}
    )
    assert answer.status_code == 503


def test_the_landing_page_links_the_console() -> None:
    assert 'href="/ui/"' in client().simulate_get("/").text
