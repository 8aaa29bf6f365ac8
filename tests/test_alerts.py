"""The shipped alert rules: promtool-valid, unit-tested both ways, documented, generated."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
RULES = REPO / "alerts" / "celery-exporter.rules.yml"
RULE_TESTS = sorted((REPO / "alerts" / "tests").glob("*.yml"))
RUNBOOK = REPO / "docs" / "runbook.md"
ALERTS_README = REPO / "alerts" / "README.md"
MONITORING = REPO / "docs" / "monitoring.md"
PROMETHEUS_RULE = REPO / "deploy" / "kubernetes" / "prometheusrule.yaml"
SEVERITIES = {"critical", "warning", "info"}

#: The alerts the product promises (the brief's list, by name).
REQUIRED = {
    "CeleryExporterDown",
    "CeleryExporterAbsent",
    "CeleryBrokerUnreachable",
    "CeleryExporterSnapshotStale",
    "CeleryQueueBacklogHigh",
    "CeleryQueueBacklogGrowing",
    "CeleryQueueNoConsumers",
    "CeleryQueuePausedTooLong",
    "CeleryTaskFailureRateHigh",
    "CeleryTaskFailureRatioHigh",
    "CeleryTaskActiveTooLong",
    "CeleryTasksLost",
    "CeleryWorkerDown",
    "CeleryQueueStuck",
    "CeleryWorkersSaturated",
    "CeleryNewExceptionType",
}
#: The recording rules shipped next to the alerts.
RECORDS = {"celery:queue_utilisation:ratio"}


def promtool() -> str:
    """promtool's path; CI installs Debian's prometheus package, so missing is a failure."""
    path = shutil.which("promtool")
    assert path, "promtool not found: apt-get install prometheus"
    return path


def all_rules() -> list[dict[str, Any]]:
    """Every rule of the shipped file, alerting and recording."""
    data = yaml.safe_load(RULES.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def rules() -> list[dict[str, Any]]:
    """Every alerting rule of the shipped file."""
    return [rule for rule in all_rules() if "alert" in rule]


def records() -> list[dict[str, Any]]:
    """Every recording rule of the shipped file."""
    return [rule for rule in all_rules() if "record" in rule]


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run a command from the repo root, capturing its output."""
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)


def test_promtool_check_rules() -> None:
    """`promtool check rules` accepts the rule file."""
    result = run(promtool(), "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(all_rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    """`promtool test rules alerts/tests/*.yml` passes."""
    assert RULE_TESTS
    result = run(promtool(), "test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_files_are_up_to_date() -> None:
    """The rule file, the PrometheusRule and the alert tables match alerts/generate.py."""
    result = run(sys.executable, "alerts/generate.py", "--check")
    assert result.returncode == 0, result.stderr


def test_required_alerts_exist() -> None:
    """Every promised alert is shipped, each name once."""
    names = [rule["alert"] for rule in rules()]
    assert len(names) == len(set(names))
    assert set(names) >= REQUIRED, REQUIRED - set(names)


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r["alert"])
def test_alert_metadata(rule: dict[str, Any]) -> None:
    """severity, summary, description with the value (and queue), runbook_url to a section."""
    assert rule["labels"]["severity"] in SEVERITIES
    assert re.fullmatch(r"\d+[smh]", rule["for"])
    annotations = rule["annotations"]
    assert set(annotations) == {"summary", "description", "runbook_url"}
    assert annotations["summary"].strip()
    description = annotations["description"]
    if rule["alert"] != "CeleryExporterAbsent":  # absent() has no value worth showing
        assert "$value" in description
    if "queue" in rule["expr"] and "by (namespace, job, queue" in rule["expr"]:
        assert "{{ $labels.queue }}" in description
        assert "{{ $labels.queue }}" in annotations["summary"]
    url = annotations["runbook_url"]
    assert url.split("#")[0].endswith("docs/runbook.md")
    assert url.split("#")[1] == rule["alert"].lower()


def test_runbook_has_a_section_per_alert() -> None:
    """docs/runbook.md has `## <AlertName>` with meaning, investigation and fix."""
    text = RUNBOOK.read_text()
    sections = dict(re.findall(r"^## (\w+)\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S))
    for rule in rules():
        body = sections.get(rule["alert"])
        assert body, f"no runbook section for {rule['alert']}"
        for heading in ("Meaning", "Investigate", "Fix"):
            assert f"**{heading}**" in body, f"{rule['alert']}: no **{heading}**"


def test_alert_tables_list_every_alert() -> None:
    """alerts/README.md and docs/monitoring.md table every alert with its `for`."""
    for doc in (ALERTS_README, MONITORING):
        text = doc.read_text()
        for rule in rules():
            row = next(
                (line for line in text.splitlines() if line.startswith(f"| `{rule['alert']}` |")),
                "",
            )
            assert row, f"{doc.name}: no table row for {rule['alert']}"
            assert f"| {rule['for']} |" in row


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    """Each alert has a promtool case that expects it and one that expects nothing."""
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        suite = yaml.safe_load(path.read_text())
        assert suite["rule_files"] == ["../celery-exporter.rules.yml"]
        for case in suite["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in rules()}
    assert names - firing == set(), "never tested firing"
    assert names - quiet == set(), "never tested not firing"


def test_lost_alert_subtracts_recovered_and_works_without_it() -> None:
    """CeleryTasksLost counts lost minus recovered executions, keeps the lost count where
    the recovered counter does not exist (an older exporter), de-duplicates with `max`, and
    its promtool cases cover a loss, a recovery, that older exporter and a quiet queue."""
    (rule,) = [r for r in rules() if r["alert"] == "CeleryTasksLost"]
    expr = rule["expr"]
    assert expr.startswith("max by (namespace, job, queue) (")
    assert expr.count('increase(celery_tasks_total{outcome="lost"}[') == 2
    assert "increase(celery_tasks_lost_recovered_total[" in expr
    assert re.search(r"\)\s+or\s+sum without \(task, outcome\)", expr), expr
    suite = yaml.safe_load((REPO / "alerts" / "tests" / "tasks.yml").read_text())
    (case,) = [c for c in suite["tests"] if any(
        check["alertname"] == "CeleryTasksLost" for check in c["alert_rule_test"]
    )]
    series = "\n".join(s["series"] for s in case["input_series"])
    for queue in ("oom", "cutoff", "legacy", "quiet"):
        assert f'queue="{queue}"' in series, queue
    assert 'celery_tasks_lost_recovered_total{job="celery-jobs-exporter", instance="a:9813", ' \
        'queue="legacy"' not in series
    fired = {
        alert["exp_labels"]["queue"]
        for check in case["alert_rule_test"]
        for alert in check["exp_alerts"]
    }
    assert fired == {"oom", "cutoff", "legacy"}


def test_prometheus_rule_wraps_the_same_groups() -> None:
    """The Kubernetes PrometheusRule carries exactly the shipped groups."""
    resource = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert resource["apiVersion"] == "monitoring.coreos.com/v1"
    assert resource["kind"] == "PrometheusRule"
    assert resource["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


def test_recording_rules_are_shipped_named_and_unit_tested() -> None:
    """The recording rules follow level:metric:operations, sit in their own group after
    the alerts, de-duplicate by queue and have a promtool promql_expr_test."""
    data = yaml.safe_load(RULES.read_text())
    names = {r["record"] for r in records()}
    assert names == RECORDS
    last = data["groups"][-1]
    assert all("record" in r for r in last["rules"]), "recording rules come last"
    for rule in records():
        assert re.fullmatch(r"[a-z_]+:[a-z_]+:[a-z_]+", rule["record"])
        assert "by (namespace, job, queue)" in rule["expr"]
    tested = {
        check["expr"]
        for path in RULE_TESTS
        for case in yaml.safe_load(path.read_text())["tests"]
        for check in case.get("promql_expr_test", [])
    }
    assert tested >= RECORDS


def test_new_alerts_keep_queue_grouping_and_guards() -> None:
    """CeleryQueueStuck needs consumers, CeleryWorkersSaturated a capacity above 0, and
    CeleryNewExceptionType compares with an hour ago; all group by (namespace, job, queue)."""
    by_name = {r["alert"]: r["expr"] for r in rules()}
    stuck = by_name["CeleryQueueStuck"]
    assert 'celery_queue_oldest_job_age_seconds{status="waiting"}' in stuck
    assert "max by (namespace, job, queue) (celery_queue_consumers) > 0" in stuck
    saturated = by_name["CeleryWorkersSaturated"]
    assert "(max by (namespace, job, queue) (celery_queue_capacity) > 0)" in saturated
    assert saturated.endswith(">= 0.9")
    new = by_name["CeleryNewExceptionType"]
    assert "by (namespace, job, queue, task, exception)" in new
    assert "increase(celery_task_failures_total[" in new
    assert "celery_task_failures_total offset 1h) > 0" in new
    (recorded,) = records()
    assert saturated.startswith(recorded["expr"])


def test_stuck_job_alert_is_relative_to_the_usual_runtime() -> None:
    """CeleryTaskActiveTooLong compares each queue's oldest active job
    (celery_task_oldest_active_age_seconds) with max(floor, factor x its p95 runtime over the
    lookback), per (namespace, job, queue), with the numbers of alerts/thresholds.py; its
    promtool tests make it fire and stay silent."""
    from alerts.generate import duration_seconds
    from alerts.thresholds import SETTINGS

    settings = SETTINGS["CeleryTaskActiveTooLong"]
    (rule,) = [r for r in rules() if r["alert"] == "CeleryTaskActiveTooLong"]
    expr = rule["expr"]
    assert expr.startswith(
        "max by (namespace, job, queue) (celery_task_oldest_active_age_seconds)\n> on "
        "(namespace, job, queue)"
    )
    assert f"{settings['factor']} * histogram_quantile({settings['quantile']}," in expr
    assert f"[{settings['lookback']}]" in expr
    assert expr.count(f"+ {duration_seconds(settings['threshold'])}") == 1
    assert rule["for"] == settings["for"]
    tests = (REPO / "alerts" / "tests" / "tasks.yml").read_text()
    cases = [
        case
        for group in yaml.safe_load(tests)["tests"]
        for case in group.get("alert_rule_test", [])
        if case["alertname"] == "CeleryTaskActiveTooLong"
    ]
    assert any(c["exp_alerts"] == [] for c in cases)
    assert any(c["exp_alerts"] for c in cases)
