"""The shipped Grafana dashboards: generated, provisioning-ready, every panel explained."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
GRAFANA = REPO / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
#: uids are part of the product: links and bookmarks use them, never change them.
UIDS = {
    "celery-overview.json": "celery-exporter-overview",
    "celery-queue.json": "celery-exporter-queue",
}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def load_generator() -> ModuleType:
    """grafana/generate.py as a module (grafana/ is not a package)."""
    spec = importlib.util.spec_from_file_location("grafana_generate", GRAFANA / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while decorating
    spec.loader.exec_module(module)
    return module


def dashboard(name: str) -> dict[str, Any]:
    """A committed dashboard."""
    data: dict[str, Any] = json.loads((DASHBOARDS / name).read_text())
    return data


def panels(name: str) -> list[dict[str, Any]]:
    """Every query panel of a dashboard (not row headers nor the alert list)."""
    return [p for p in dashboard(name)["panels"] if p["type"] not in ("row", "alertlist")]


def first_row(name: str) -> list[dict[str, Any]]:
    """The stat panels of the dashboard's first grid line, left to right."""
    top = [p for p in dashboard(name)["panels"] if p["type"] != "row"]
    first_y = min(p["gridPos"]["y"] for p in top)
    return sorted(
        (p for p in top if p["gridPos"]["y"] == first_y), key=lambda p: p["gridPos"]["x"]
    )


def test_committed_json_matches_the_generator() -> None:
    """grafana/dashboards/*.json is exactly what grafana/generate.py writes."""
    generator = load_generator()
    assert set(generator.DASHBOARDS) == set(UIDS)
    for name in UIDS:
        committed = (DASHBOARDS / name).read_text()
        assert committed == generator.render(name), (
            f"{name} is out of date: run python grafana/generate.py"
        )
    assert generator.main(["--check"]) == 0


@pytest.mark.parametrize("name", sorted(UIDS))
def test_stable_uid_and_provisioning_ready(name: str) -> None:
    """Fixed uid, no __inputs, no numeric id, a datasource variable used everywhere."""
    data = dashboard(name)
    assert data["uid"] == UIDS[name]
    assert "__inputs" not in data and "__requires" not in data
    assert data.get("id") is None
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for var in ("namespace", "job", "instance", "queue"):
        assert variables[var]["type"] == "query"
        assert variables[var]["datasource"] == DATASOURCE
        assert variables[var]["query"].startswith("label_values(")
    assert variables["queue"]["multi"] is (name == "celery-overview.json")
    # The rules group by (namespace, job, queue); outside Kubernetes there is no namespace
    # label, which All (.*) matches.
    assert variables["namespace"]["includeAll"] and variables["namespace"]["allValue"] == ".*"
    assert [v["name"] for v in data["templating"]["list"]][:3] == [
        "datasource", "namespace", "job",
    ]


@pytest.mark.parametrize("name", sorted(UIDS))
def test_every_panel_has_unit_description_and_datasource(name: str) -> None:
    """Each panel: a description, a unit, the ${datasource} variable, queries with refIds."""
    for panel in panels(name):
        title = panel["title"]
        assert len(panel.get("description", "")) > 20, f"{title}: no description"
        assert panel["fieldConfig"]["defaults"].get("unit"), f"{title}: no unit"
        assert panel["datasource"] == DATASOURCE, title
        assert panel["targets"], title
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), title
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, title
            assert target["expr"].strip(), title


@pytest.mark.parametrize("name", sorted(UIDS))
def test_queries_use_the_variables(name: str) -> None:
    """Every query selects the chosen namespace/job/instance; rates use $__rate_interval (or
    $__range, or a fixed window named in the generator: an alert's lookback)."""
    fixed = load_generator().FIXED_WINDOWS
    for panel in panels(name):
        for target in panel["targets"]:
            expr = target["expr"]
            for selector in re.findall(r"\{[^}]*\}", expr):
                assert 'namespace=~"$namespace"' in selector, (panel["title"], selector)
                assert 'job="$job"' in selector and 'instance=~"$instance"' in selector, (
                    panel["title"], selector,
                )
            windows = re.findall(r"\b(rate|increase|irate|deriv)\([^\[]*\[([^\]]+)\]", expr)
            for fn, window in windows:
                if fn == "deriv":
                    continue  # a trend over a fixed window, described in the panel
                assert window in ("$__rate_interval", "$__range", *fixed), (panel["title"], expr)
            if "celery_queue" in expr or "celery_task" in expr:
                assert "$queue" in expr, (panel["title"], expr)


@pytest.mark.parametrize("name", sorted(UIDS))
def test_layout_fits_the_grid(name: str) -> None:
    """Unique panel ids; panels inside 24 columns, never overlapping, no empty area."""
    data = dashboard(name)
    ids = [p["id"] for p in data["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in data["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps at {(x, y)}"
                cells.add((x, y))
    bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in data["panels"])
    gaps = sorted({y for x in range(24) for y in range(bottom) if (x, y) not in cells})
    assert not gaps, f"empty grid rows {gaps}"


@pytest.mark.parametrize("name", sorted(UIDS))
def test_stats_are_instant_and_go_blank_when_the_exporter_is_down(name: str) -> None:
    """Every stat: instant queries (no last-non-null over a range), gated on `up == 1` (or a
    query on `up` itself), "No data" mapped to red, no ungated `or vector(0)`."""
    stats = [p for p in panels(name) if p["type"] == "stat"]
    assert stats
    for panel in stats:
        title = panel["title"]
        assert panel["options"]["reduceOptions"]["calcs"] == ["last"], title
        assert panel["options"]["graphMode"] == "none", title
        defaults = panel["fieldConfig"]["defaults"]
        assert defaults["noValue"] == "No data", title
        no_data = [m for m in defaults["mappings"] if m["type"] == "special"]
        assert no_data and no_data[0]["options"]["result"]["color"] == "red", title
        for target in panel["targets"]:
            assert target["instant"] is True and target["range"] is False, title
            expr = target["expr"]
            gated = expr.endswith('and on () (max(up{namespace=~"$namespace", job="$job", '
                                  'instance=~"$instance"}) == 1)')
            assert gated or expr.startswith("min(\n  up{"), (title, expr)
            if "or vector(0)" in expr:
                assert gated, (title, expr)


def test_overview_first_row_answers_the_questions() -> None:
    """Exporter and broker, stuck, failing, backlog (and its growth), workers down."""
    titles = [p["title"] for p in first_row("celery-overview.json")]
    assert titles == [
        "Exporter and broker", "Stuck queues", "Failure ratio", "Backlog", "Backlog trend",
        "Workers down",
    ]
    status = first_row("celery-overview.json")[0]
    texts = {
        value: option["text"]
        for mapping in status["fieldConfig"]["defaults"]["mappings"] if mapping["type"] == "value"
        for value, option in mapping["options"].items()
    }
    assert texts == {"0": "DOWN", "1": "BROKER DOWN", "2": "OK"}
    stuck = first_row("celery-overview.json")[1]["targets"][0]["expr"]
    assert "celery_task_oldest_active_age_seconds" in stuck
    assert "celery_task_runtime_seconds_bucket" in stuck and "celery_queue_oldest_job_age" in stuck


def test_alert_list_annotations_and_runbook_links() -> None:
    """An alert list panel, firing ALERTS as annotations, and a runbook link on every panel
    whose description names an alert (the alerts' own runbook_url)."""
    from alerts.generate import runbook_url
    from alerts.thresholds import SETTINGS

    overview = dashboard("celery-overview.json")
    assert [p for p in overview["panels"] if p["type"] == "alertlist"]
    for name in sorted(UIDS):
        data = dashboard(name)
        (alerts,) = [a for a in data["annotations"]["list"] if "expr" in a]
        assert alerts["datasource"] == DATASOURCE
        assert alerts["expr"].startswith("ALERTS{") and 'alertstate="firing"' in alerts["expr"]
        linked = 0
        for panel in data["panels"]:
            named = [n for n in SETTINGS if re.search(rf"\b{n}\b", panel.get("description", ""))]
            urls = [link["url"] for link in panel.get("links", [])]
            assert sorted(urls) == sorted(runbook_url(n) for n in named), panel["title"]
            linked += bool(named)
        assert linked >= 5, name


@pytest.mark.parametrize("name", sorted(UIDS))
def test_no_nan_and_no_zero_rows(name: str) -> None:
    """Ratios divide by `(x > 0)`, quantiles drop NaN (`>= 0`), topk drops 0 rows and range
    panels rank their topk once (at the end of the range) so at most 10 series show."""
    for panel in panels(name):
        for target in panel["targets"]:
            expr = target["expr"]
            for part in expr.split("\n/\n")[1:]:
                assert part.startswith("(") and ") > 0)" in part, (panel["title"], expr)
            if "histogram_quantile" in expr and "@ end()" not in expr:
                assert ">= 0" in expr or "> " in expr, (panel["title"], expr)
            if "topk(" in expr:
                assert "> 0" in expr, (panel["title"], expr)
                if not target["instant"]:
                    assert "@ end()" in expr, (panel["title"], expr)


def test_overview_covers_the_brief() -> None:
    """Queue x status table and stacked series, backlog and trend, throughput, failure ratio,
    latency quantiles, workers and consumers, exporter health."""
    titles = {p["title"]: p for p in panels("celery-overview.json")}
    exprs = "\n".join(t["expr"] for p in titles.values() for t in p["targets"])
    table = titles["Jobs per queue and status"]
    assert table["type"] == "table"
    assert table["targets"][0]["instant"] is True
    link = table["fieldConfig"]["overrides"][0]["properties"][0]["value"][0]["url"]
    assert link.startswith(f"/d/{UIDS['celery-queue.json']}/")
    stacked = titles["Jobs in flight by queue and status"]
    assert stacked["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] == "normal"
    for needle in (
        'status=~"waiting|paused"',
        "deriv(",
        'outcome="succeeded"',
        'outcome="failed"',
        "histogram_quantile(0.5,",
        "histogram_quantile(0.95,",
        "histogram_quantile(0.99,",
        "celery_task_queue_wait_seconds_bucket",
        "celery_task_runtime_seconds_bucket",
        "celery_worker_up",
        "celery_queue_consumers",
        "celery_exporter_up",
        "time() - celery_exporter_last_successful_refresh_timestamp_seconds",
        "celery_exporter_source_up",
        "celery_exporter_events_undecodable_total",
        "celery_exporter_malformed_messages_total",
        "celery_exporter_events_lost_total",
        'outcome="lost"',
        'outcome=~"failed|lost"',
        "celery_tasks_lost_recovered_total",
    ):
        assert needle in exprs, needle
    assert titles["Failure ratio by queue"]["fieldConfig"]["defaults"]["unit"] == "percentunit"


def test_queue_dashboard_has_top_failing_tasks() -> None:
    """The drill-down ranks failing tasks and points to the Jobs API for exceptions."""
    titles = {p["title"]: p for p in panels("celery-queue.json")}
    top = titles["Top failing tasks"]
    assert top["targets"][0]["expr"].startswith("(sum by (task)")
    assert "topk(10, sum by (task)" in top["targets"][0]["expr"]
    assert "Jobs API" in top["description"]
    assert "exception" in top["description"]
    assert 'queue="$queue"' in top["targets"][0]["expr"]


def test_every_outcome_has_its_color() -> None:
    """Every outcome the exporter counts, lost included, has a fixed color on the outcome
    panels; lost has its own (a failure color, not failed's)."""
    from exporter.core.tracker import OUTCOMES

    generator = load_generator()
    colors = generator.OUTCOME_COLORS
    assert set(colors) == set(OUTCOMES)
    assert "lost" in colors
    assert colors["lost"] not in {c for o, c in colors.items() if o != "lost"}
    assert "red" in colors["lost"]
    for name in sorted(UIDS):
        outcomes = [p for p in panels(name) if p["title"] == "Outcomes"]
        assert outcomes, name
        for panel in outcomes:
            assert panel["targets"][0]["legendFormat"] == "{{outcome}}"
            fixed = {
                o["matcher"]["options"]: o["properties"][0]["value"]["fixedColor"]
                for o in panel["fieldConfig"]["overrides"]
            }
            assert fixed == colors, (name, fixed)
            assert "lost" in panel["description"]


@pytest.mark.parametrize("name", sorted(UIDS))
def test_failure_ratios_count_lost_executions(name: str) -> None:
    """Failure ratios and top failing tasks count a lost execution as a failure; the
    per-queue throughput shows lost next to succeeded and failed."""
    for panel in panels(name):
        for target in panel["targets"]:
            expr = target["expr"]
            if panel["title"].startswith("Failure ratio"):
                numerator, denominator = expr.split("\n/\n")
                assert 'outcome=~"failed|lost"' in numerator, (panel["title"], expr)
                assert 'outcome=~"succeeded|failed|lost"' in denominator, (panel["title"], expr)
            if panel["title"] == "Top failing tasks" or (
                panel["title"] == "Top failing tasks over the time range"
                and target["refId"] == "A"
            ):
                assert 'outcome=~"failed|lost"' in expr, (panel["title"], expr)
            assert 'outcome="failed"}' not in expr or panel["title"] == "Throughput by queue", (
                panel["title"], expr,
            )
    if name == "celery-overview.json":
        titles = {p["title"]: p for p in panels(name)}
        legends = [t["legendFormat"] for t in titles["Throughput by queue"]["targets"]]
        assert "{{queue}} lost" in legends
        lost = titles["Lost executions"]
        assert [t["legendFormat"] for t in lost["targets"]] == [
            "{{queue}} lost", "{{queue}} recovered",
        ]
        assert "CeleryTasksLost" in lost["description"]
    else:
        table = {p["title"]: p for p in panels(name)}["Top failing tasks over the time range"]
        rename = table["transformations"][1]["options"]["renameByName"]
        assert set(rename.values()) == {"failed + lost", "lost", "retried"}


def test_provisioning_files() -> None:
    """The datasource and dashboard providers parse and point at the right things."""
    datasources = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    )
    assert datasources["apiVersion"] == 1
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus" and source["url"].startswith("http")
    providers = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "celery.yaml").read_text()
    )
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/")


@pytest.mark.parametrize("name", sorted(UIDS))
def test_saturation_panels(name: str) -> None:
    """Oldest job age (waiting and paused) with the CeleryQueueStuck threshold, and
    utilisation per queue (active / capacity > 0) with the capacity on its own axis and the
    CeleryWorkersSaturated threshold, both de-duplicated by queue."""
    from alerts.generate import duration_seconds
    from alerts.thresholds import SETTINGS

    titles = {p["title"]: p for p in panels(name)}
    age = titles["Oldest job age"]
    (age_target,) = age["targets"]
    assert age_target["expr"].startswith(
        "max by (queue, status) (celery_queue_oldest_job_age_seconds{"
    )
    assert 'status=~"waiting|paused"' in age_target["expr"]
    assert age_target["legendFormat"] == "{{queue}} {{status}}"
    assert age["fieldConfig"]["defaults"]["unit"] == "s"
    steps = age["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[-1]["value"] == duration_seconds(SETTINGS["CeleryQueueStuck"]["threshold"])
    assert "CeleryQueueStuck" in age["description"]
    assert "lower_bound" in age["description"]

    utilisation = titles["Worker utilisation"]
    ratio, capacity = (t["expr"] for t in utilisation["targets"])
    numerator, denominator = ratio.split("\n/ on (queue)\n")
    assert numerator.startswith("max by (queue) (celery_queue_jobs{")
    assert 'status="active"' in numerator
    assert denominator.startswith("(max by (queue) (celery_queue_capacity{")
    assert denominator.endswith(") > 0)")
    assert capacity.startswith("max by (queue) (celery_queue_capacity{")
    assert utilisation["fieldConfig"]["defaults"]["unit"] == "percentunit"
    steps = utilisation["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[-1]["value"] == SETTINGS["CeleryWorkersSaturated"]["threshold"]
    (override,) = utilisation["fieldConfig"]["overrides"]
    assert override["matcher"]["options"] == ".* capacity"
    props = {p["id"]: p["value"] for p in override["properties"]}
    assert props["unit"] == "short" and props["custom.axisPlacement"] == "right"
    assert "CeleryWorkersSaturated" in utilisation["description"]


@pytest.mark.parametrize("name", sorted(UIDS))
def test_top_failing_exceptions_table(name: str) -> None:
    """Top 10 (queue, task, exception) by failures over the time range, zero rows filtered,
    a series' first failure counted (it appears at 1, which increase() misses)."""
    titles = {p["title"]: p for p in panels(name)}
    top = titles["Top failing exceptions"]
    assert top["type"] == "table"
    (query,) = top["targets"]
    assert query["instant"] is True and query["format"] == "table"
    expr = query["expr"]
    assert expr.startswith("topk(10,") and expr.endswith(") > 0")
    assert "max by (queue, task, exception) (increase(celery_task_failures_total{" in expr
    assert "[$__range]" in expr and "offset $__range" in expr
    assert expr.count("unless") == 1 and expr.count("\n  or\n") == 1
    rename = top["transformations"][0]["options"]["renameByName"]
    assert rename == {"Value": "failures"}
    assert top["options"]["sortBy"] == [{"displayName": "failures", "desc": True}]
    assert "CeleryNewExceptionType" in top["description"]
    assert "Jobs API" in top["description"]
