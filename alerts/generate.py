"""Generate the Prometheus alert rules of celery-jobs-exporter.

The thresholds, `for:` durations and severities live in ``alerts/thresholds.py``:
change them there and run ``python alerts/generate.py``. That rewrites

- ``alerts/celery-exporter.rules.yml`` (the rule file Prometheus loads),
- ``deploy/kubernetes/prometheusrule.yaml`` (the same groups as a PrometheusRule),
- the alert tables in ``alerts/README.md`` and ``docs/monitoring.md`` (between the
  ``BEGIN/END GENERATED ALERT TABLE`` markers).

``grafana/generate.py`` imports the same thresholds (threshold lines and descriptions
of the dashboards): run it after a change as well.

``python alerts/generate.py --check`` exits 1 when a committed file is out of date
(the test suite runs it). Plain Python and PyYAML (already a dependency), nothing else.

Aggregation: several exporters may watch the same broker (one per worker pod in the
Kubernetes sidecar layout), and each then reports the same queues. Queue and task
expressions therefore take ``max by (namespace, job, <key>)`` across exporter
instances (de-duplication), never ``sum``. ``namespace`` is simply absent outside
Kubernetes, which PromQL treats as an empty label.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: `python alerts/generate.py`
    sys.path.insert(0, str(ROOT))

from alerts.thresholds import SETTINGS  # noqa: E402

RULES_PATH = ROOT / "alerts" / "celery-exporter.rules.yml"
PROMETHEUS_RULE_PATH = ROOT / "deploy" / "kubernetes" / "prometheusrule.yaml"
TABLE_DOCS = (ROOT / "alerts" / "README.md", ROOT / "docs" / "monitoring.md")
TABLE_BEGIN = "<!-- BEGIN GENERATED ALERT TABLE (alerts/generate.py) -->"
TABLE_END = "<!-- END GENERATED ALERT TABLE -->"

#: Where the runbook is published; every alert links to its section (#alertname in lower case).
RUNBOOK_BASE = "https://github.com/celery-jobs-exporter/celery-jobs-exporter/blob/main/docs/runbook.md"

#: Which scrape jobs are this exporter (for `up` / `absent`). The default matches the job
#: names used in deploy/: `celery-jobs-exporter` (static config, ServiceMonitor) and
#: `<namespace>/celery-jobs-exporter` (PodMonitor).
EXPORTER_JOB_REGEX = ".*celery-jobs-exporter.*"

#: The labels that identify one queue across exporter instances.
QUEUE_KEY = "namespace, job, queue"

#: How long the longest-running active job of each queue has run, de-duplicated.
STUCK_AGE = "max by (%(queue_key)s) (celery_task_oldest_active_age_seconds)"

#: The labels that identify one failure series (queue, task, exception class).
FAILURE_KEY = "namespace, job, queue, task, exception"

#: Share of a queue's worker slots that run its jobs: active jobs over capacity (the sum
#: of the concurrency of its live consumers), de-duplicated across exporters; no sample
#: where the capacity is 0 (no consumer, or no worker answered `stats`).
UTILISATION = """\
max by (%(queue_key)s) (celery_queue_jobs{status="active"})
/ on (%(queue_key)s)
(max by (%(queue_key)s) (celery_queue_capacity) > 0)"""


# Per alert: group, expression, summary, description, and the README's "fires when" and
# threshold cells. `%(name)s` placeholders take the alert's SETTINGS plus the globals above.
ALERTS: list[dict[str, str]] = [
    {
        "alert": "CeleryExporterDown",
        "group": "celery-exporter",
        "expr": 'up{job=~"%(job_regex)s"} == 0',
        "summary": "Prometheus cannot scrape the Celery exporter {{ $labels.instance }}.",
        "description": (
            "Target {{ $labels.instance }} of job {{ $labels.job }} has been down for "
            "%(for)s (up = {{ $value }}): its queue metrics are missing and the queue "
            "alerts are blind for it."
        ),
        "when": "a scrape target of the exporter job fails (`up == 0`)",
        "threshold": "`up == 0`",
    },
    {
        "alert": "CeleryExporterAbsent",
        "group": "celery-exporter",
        "expr": 'absent(up{job=~"%(job_regex)s"})',
        "summary": "No Celery exporter target is known to Prometheus.",
        "description": (
            "No scrape target of a job matching \"%(job_regex)s\" has existed for %(for)s: "
            "service discovery lost the exporter (or it was never deployed) and every Celery "
            "alert is blind."
        ),
        "when": "no `up` series of the exporter job exists at all",
        "threshold": "series absent",
    },
    {
        "alert": "CeleryBrokerUnreachable",
        "group": "celery-exporter",
        "expr": "celery_exporter_up == 0",
        "summary": "Exporter {{ $labels.instance }} cannot read the Celery broker.",
        "description": (
            "The last broker (Redis) read of exporter {{ $labels.instance }} failed and it has "
            "been failing for %(for)s (celery_exporter_up = {{ $value }}). Queue numbers are "
            "frozen at their last good values; workers may be unable to fetch jobs too."
        ),
        "when": "the exporter's last broker read failed",
        "threshold": "`celery_exporter_up == 0`",
    },
    {
        "alert": "CeleryExporterSnapshotStale",
        "group": "celery-exporter",
        "expr": (
            "time() - celery_exporter_last_successful_refresh_timestamp_seconds > %(threshold)s"
        ),
        "summary": "The metrics of exporter {{ $labels.instance }} are stale.",
        "description": (
            "Exporter {{ $labels.instance }} last read the broker successfully "
            "{{ $value | humanizeDuration }} ago (more than %(threshold)ss for %(for)s): "
            "every queue number it serves is that old."
        ),
        "when": "the last successful refresh is older than the threshold",
        "threshold": "%(threshold)s s",
    },
    {
        "alert": "CeleryExporterSourceDown",
        "group": "celery-exporter",
        "expr": 'celery_exporter_source_up{source!="broker"} == 0',
        "summary": (
            "The {{ $labels.source }} source of exporter {{ $labels.instance }} is failing."
        ),
        "description": (
            "Reading {{ $labels.source }} has failed on exporter {{ $labels.instance }} for "
            "%(for)s (source_up = {{ $value }}). workers: consumers, paused and worker_up come "
            "from the last good inspect; events: task counters, histograms and the failure "
            "alerts see nothing new."
        ),
        "when": "the `workers` (inspect) or `events` source is failing",
        "threshold": "`source_up == 0`",
    },
    {
        "alert": "CeleryExporterDroppingData",
        "group": "celery-exporter",
        "expr": """\
(
    sum by (namespace, job, instance) (increase(celery_exporter_events_lost_total[%(window)s]))
  + sum by (namespace, job, instance) (
      increase(celery_exporter_events_undecodable_total[%(window)s])
    )
  + sum by (namespace, job, instance) (
      increase(celery_exporter_malformed_messages_total[%(window)s])
    )
) > %(threshold)s""",
        "summary": "Exporter {{ $labels.instance }} is skipping events or broker messages.",
        "description": (
            "Exporter {{ $labels.instance }} lost, or could not decode, "
            "{{ $value | humanize }} events or messages in the last %(window)s: task counts "
            "and failure alerts undercount."
        ),
        "when": "events were lost or undecodable, or broker entries malformed",
        "threshold": "> %(threshold)s in %(window)s",
    },
    {
        "alert": "CeleryExporterEventStreamInterrupted",
        "group": "celery-exporter",
        "expr": """\
sum by (namespace, job, instance) (
  increase(celery_exporter_event_stream_disconnected_seconds_total[%(window)s])
) > %(threshold)s""",
        "summary": "Exporter {{ $labels.instance }} lost its Celery event subscription.",
        "description": (
            "Exporter {{ $labels.instance }} was without an event subscription for "
            "{{ $value | humanize }}s in the last %(window)s (Redis dropped it or went away): "
            "events published meanwhile were not seen, so task counters, histograms and "
            "failure alerts undercount."
        ),
        "when": "the event subscription was lost for a while (seconds without it)",
        "threshold": "> %(threshold)ss in %(window)s",
    },
    {
        "alert": "CeleryQueueBacklogHigh",
        "group": "celery-queues",
        "expr": """\
max by (%(queue_key)s) (
  sum without (status) (celery_queue_jobs{status=~"waiting|paused"})
) > %(threshold)s""",
        "summary": "Queue {{ $labels.queue }} has a large backlog.",
        "description": (
            "{{ $value | humanize }} jobs are waiting (waiting + paused) in queue "
            "{{ $labels.queue }}, above %(threshold)s for %(for)s."
        ),
        "when": "waiting + paused jobs of a queue exceed the threshold",
        "threshold": "> %(threshold)s jobs",
    },
    {
        "alert": "CeleryQueueBacklogGrowing",
        "group": "celery-queues",
        "expr": """\
max by (%(queue_key)s) (
  sum without (status) (
    predict_linear(celery_queue_jobs{status=~"waiting|paused"}[%(window)s], %(horizon_seconds)s)
  )
) > %(threshold)s
and on (%(queue_key)s)
max by (%(queue_key)s) (
  sum without (status) (deriv(celery_queue_jobs{status=~"waiting|paused"}[%(window)s]))
) > 0""",
        "summary": "The backlog of queue {{ $labels.queue }} keeps growing.",
        "description": (
            "At its %(window)s trend the backlog of queue {{ $labels.queue }} will reach "
            "{{ $value | humanize }} jobs within %(horizon)s (threshold %(threshold)s): "
            "workers do not keep up."
        ),
        "when": "the linear trend (predict_linear) of the backlog crosses the threshold "
        "within the horizon, and the backlog is growing",
        "threshold": "> %(threshold)s jobs within %(horizon)s (trend over %(window)s)",
    },
    {
        "alert": "CeleryQueueNoConsumers",
        "group": "celery-queues",
        "expr": """\
max by (%(queue_key)s) (
  sum without (status) (celery_queue_jobs{status=~"waiting|paused"})
) > %(threshold)s
and on (%(queue_key)s)
max by (%(queue_key)s) (celery_queue_consumers) == 0""",
        "summary": "Jobs wait in queue {{ $labels.queue }} and no worker consumes it.",
        "description": (
            "{{ $value | humanize }} jobs are waiting in queue {{ $labels.queue }} and no live "
            "worker has consumed it for %(for)s: they will not run until a consumer appears."
        ),
        "when": "a queue has waiting/paused jobs and 0 consumers",
        "threshold": "> %(threshold)s jobs, 0 consumers",
    },
    {
        "alert": "CeleryQueuePausedTooLong",
        "group": "celery-queues",
        "expr": """\
max by (%(queue_key)s) (celery_queue_consumers) == 0
and on (%(queue_key)s)
max by (%(queue_key)s) (max_over_time(celery_queue_consumers[%(lookback)s])) > 0""",
        "summary": "Queue {{ $labels.queue }} has been paused (no consumer) for long.",
        "description": (
            "Queue {{ $labels.queue }} has had {{ $value }} consumers for %(for)s although "
            "workers consumed it within the last %(lookback)s (a cancelled consumer or all of "
            "its workers gone): jobs sent to it will not run."
        ),
        "when": "a queue that had consumers in the lookback window has none",
        "threshold": "0 consumers (had some in the last %(lookback)s)",
    },
    {
        "alert": "CeleryQueueStuck",
        "group": "celery-queues",
        "expr": """\
max by (%(queue_key)s) (celery_queue_oldest_job_age_seconds{status="waiting"})
  > %(threshold_seconds)s
and on (%(queue_key)s)
max by (%(queue_key)s) (celery_queue_consumers) > 0""",
        "summary": "The next job of queue {{ $labels.queue }} has waited long despite consumers.",
        "description": (
            "The job workers take next from queue {{ $labels.queue }} has waited "
            "{{ $value | humanizeDuration }} (over %(threshold)s for %(for)s) although the "
            "queue has live consumers: they take no job from it, or far too few."
        ),
        "when": "the oldest waiting job of a queue with consumers is older than the threshold",
        "threshold": "oldest waiting job > %(threshold)s, consumers > 0",
    },
    {
        "alert": "CeleryQueueWaitTimeHigh",
        "group": "celery-queues",
        "expr": """\
histogram_quantile(%(quantile)s,
  max by (%(queue_key)s, le) (rate(celery_task_queue_wait_seconds_bucket[%(window)s]))
) > %(threshold)s""",
        "summary": "Jobs of queue {{ $labels.queue }} wait long before they start.",
        "description": (
            "The p%(quantile_pct)s time jobs of queue {{ $labels.queue }} waited before starting "
            "was {{ $value | humanizeDuration }} over the last %(window)s (threshold "
            "%(threshold)ss)."
        ),
        "when": "the queue-wait quantile exceeds the threshold",
        "threshold": "p%(quantile_pct)s > %(threshold)s s over %(window)s",
    },
    {
        "alert": "CeleryTaskFailureRateHigh",
        "group": "celery-tasks",
        "expr": """\
max by (%(queue_key)s) (
  sum without (task, outcome) (rate(celery_tasks_total{outcome="failed"}[%(window)s]))
) > %(threshold)s""",
        "summary": "Tasks of queue {{ $labels.queue }} fail often.",
        "description": (
            "Tasks of queue {{ $labels.queue }} failed {{ printf \"%%.2f\" $value }} times per "
            "second over the last %(window)s (threshold %(threshold)s/s)."
        ),
        "when": "failures per second of a queue exceed the threshold",
        "threshold": "> %(threshold)s /s over %(window)s",
    },
    {
        "alert": "CeleryTaskFailureRatioHigh",
        "group": "celery-tasks",
        "expr": """\
(
    max by (%(queue_key)s) (
      sum without (task, outcome) (rate(celery_tasks_total{outcome="failed"}[%(window)s]))
    )
  /
    max by (%(queue_key)s) (
      sum without (task, outcome) (
        rate(celery_tasks_total{outcome=~"succeeded|failed"}[%(window)s])
      )
    )
) > %(threshold)s
and on (%(queue_key)s)
max by (%(queue_key)s) (
  sum without (task, outcome) (
    increase(celery_tasks_total{outcome=~"succeeded|failed"}[%(window)s])
  )
) >= %(min_jobs)s""",
        "summary": "A large share of the tasks of queue {{ $labels.queue }} fail.",
        "description": (
            "{{ $value | humanizePercentage }} of the tasks of queue {{ $labels.queue }} that "
            "finished in the last %(window)s failed (threshold %(threshold_pct)s%%)."
        ),
        "when": "failed / (succeeded + failed) exceeds the threshold, with at least "
        "`min_jobs` finished",
        "threshold": "> %(threshold_pct)s%% over %(window)s, >= %(min_jobs)s jobs",
    },
    {
        "alert": "CeleryTaskActiveTooLong",
        "group": "celery-tasks",
        # The limit is max(floor, factor x p95 runtime): `> floor` drops the NaN of a queue
        # that finished nothing in the lookback (and a limit under the floor), and `or`
        # puts the floor there.
        "expr": STUCK_AGE + """
> on (%(queue_key)s)
(
    (
      %(factor)s * histogram_quantile(%(quantile)s,
        max by (%(queue_key)s, le) (
          sum without (task) (rate(celery_task_runtime_seconds_bucket[%(lookback)s]))
        )
      ) > %(threshold_seconds)s
    )
  or on (%(queue_key)s)
    0 * """ + STUCK_AGE + """ + %(threshold_seconds)s
)""",
        "summary": "A job of queue {{ $labels.queue }} has been running far longer than normal.",
        "description": (
            "The longest-running job of queue {{ $labels.queue }} has been running for "
            "{{ $value | humanizeDuration }}, more than %(factor)s x the queue's "
            "p%(quantile_pct)s runtime over %(lookback)s (at least %(threshold)s), for "
            "%(for)s: it is probably stuck."
        ),
        "when": "the oldest active job of a queue (celery_task_oldest_active_age_seconds) "
        "runs longer than `factor` x the queue's `quantile` runtime over `lookback`, and at least "
        "the floor",
        "threshold": "> max(%(threshold)s, %(factor)s x p%(quantile_pct)s runtime over "
        "%(lookback)s)",
    },
    {
        "alert": "CeleryTasksLost",
        "group": "celery-tasks",
        # Per exporter: lost minus recovered (`or` keeps the lost count where the
        # recovered counter does not exist, e.g. an exporter older than it); then the
        # de-duplication across exporters.
        "expr": """\
max by (%(queue_key)s) (
    (
        sum without (task, outcome) (increase(celery_tasks_total{outcome="lost"}[%(window)s]))
      -
        sum without (task) (increase(celery_tasks_lost_recovered_total[%(window)s]))
    )
  or
    sum without (task, outcome) (increase(celery_tasks_total{outcome="lost"}[%(window)s]))
) > %(threshold)s""",
        "summary": "Task executions of queue {{ $labels.queue }} were lost with their worker.",
        "description": (
            "About {{ printf \"%%.0f\" $value }} task execution(s) of queue {{ $labels.queue }} "
            "were lost in the last %(window)s: they were running on a worker that was declared "
            "down (killed, e.g. by the OOM killer) and their message is gone from the broker, "
            "so they will never finish. The Jobs API shows them as failed with failedReason "
            "WorkerLost."
        ),
        "when": "executions were running on a worker declared down and their message is gone "
        "from the broker (`outcome=\"lost\"`), minus those whose real end arrived later",
        "threshold": "> %(threshold)s lost in %(window)s",
    },
    {
        "alert": "CeleryNewExceptionType",
        "group": "celery-tasks",
        # A failure series starts at 1 (its first failure), which increase() cannot see:
        # the second branch catches a series that appeared within the window.
        "expr": """\
(
    max by (%(failure_key)s) (increase(celery_task_failures_total[%(window)s])) > 0
  or
    (
        max by (%(failure_key)s) (celery_task_failures_total)
      unless
        max by (%(failure_key)s) (celery_task_failures_total offset %(window)s)
    )
)
unless on (%(failure_key)s)
max by (%(failure_key)s) (celery_task_failures_total offset %(lookback)s) > 0""",
        "summary": (
            "Task {{ $labels.task }} of queue {{ $labels.queue }} fails with a new exception "
            "{{ $labels.exception }}."
        ),
        "description": (
            "Task {{ $labels.task }} of queue {{ $labels.queue }} failed "
            "{{ $value | humanize }} time(s) with {{ $labels.exception }} in the last "
            "%(window)s, an exception it had not failed with %(lookback)s ago (as counted "
            "since the exporter started): a new failure mode, often of a deploy."
        ),
        "when": "a (queue, task, exception) failure series that was absent or 0 an hour ago "
        "increases (or appears)",
        "threshold": "> 0 in %(window)s, none %(lookback)s ago",
    },
    {
        "alert": "CeleryWorkerDown",
        "group": "celery-workers",
        "expr": "max by (namespace, job, worker) (celery_worker_up) == 0",
        "summary": "Celery worker {{ $labels.worker }} is down.",
        "description": (
            "Worker {{ $labels.worker }} has neither answered inspect nor sent a heartbeat for "
            "%(for)s (celery_worker_up = {{ $value }}). The exporter reports a worker for 1h "
            "after it was last seen, a clean shutdown included."
        ),
        "when": "a known worker stopped answering inspect and sending heartbeats",
        "threshold": "`celery_worker_up == 0`",
    },
    {
        "alert": "CeleryWorkersSaturated",
        "group": "celery-workers",
        "expr": UTILISATION + " >= %(threshold)s",
        "summary": "The workers of queue {{ $labels.queue }} are saturated.",
        "description": (
            "{{ $value | humanizePercentage }} of the worker slots consuming queue "
            "{{ $labels.queue }} run its jobs (active / capacity, at least %(threshold_pct)s%% "
            "for %(for)s): new jobs of it wait for a free slot."
        ),
        "when": "active jobs / capacity (concurrency of the queue's live consumers) of a "
        "queue reach the threshold",
        "threshold": ">= %(threshold_pct)s%% of capacity (capacity > 0)",
    },
]

#: Recording rules (own group, after the alerts): name, expression and what it holds.
RECORDS: list[dict[str, str]] = [
    {
        "record": "celery:queue_utilisation:ratio",
        "group": "celery-recording",
        "expr": UTILISATION,
        "help": "active jobs / capacity per queue (normally 0 to 1), "
        "de-duplicated across exporters; no sample while the capacity is 0",
    },
]

GROUPS = ("celery-exporter", "celery-queues", "celery-tasks", "celery-workers")
RECORDING_GROUPS = ("celery-recording",)

HEADER = """\
# Prometheus alert rules for celery-jobs-exporter.
#
# GENERATED by alerts/generate.py: change thresholds, `for:` and severities in
# alerts/thresholds.py and run `python alerts/generate.py` (this file, the Kubernetes
# PrometheusRule and the tables in alerts/README.md and docs/monitoring.md follow).
# Thresholds are documented in alerts/README.md, each alert in docs/runbook.md.
#
# Queue expressions take `max by (namespace, job, queue)` across exporter instances:
# several exporters watching one broker report the same numbers (de-duplication).
# The last group holds recording rules (celery:queue_utilisation:ratio).
"""


def _params(alert: dict[str, str]) -> dict[str, Any]:
    settings = SETTINGS[alert["alert"]]
    params: dict[str, Any] = {
        "job_regex": EXPORTER_JOB_REGEX, "queue_key": QUEUE_KEY, "failure_key": FAILURE_KEY,
    }
    params.update(settings)
    if "threshold" in settings and isinstance(settings["threshold"], float):
        params["threshold_pct"] = f"{settings['threshold'] * 100:g}"
    if isinstance(settings.get("threshold"), str):
        params["threshold_seconds"] = duration_seconds(settings["threshold"])
    if "horizon" in settings:
        params["horizon_seconds"] = duration_seconds(settings["horizon"])
    if "quantile" in settings:
        params["quantile_pct"] = f"{settings['quantile'] * 100:g}"
    return params


def duration_seconds(text: str) -> int:
    """Seconds in a Prometheus duration such as `30m`, `1h30m` or `2d`."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    total, number = 0, ""
    for char in text:
        if char.isdigit():
            number += char
        elif char in units and number:
            total, number = total + int(number) * units[char], ""
        else:
            raise ValueError(f"not a duration: {text!r}")
    if number:
        raise ValueError(f"not a duration (missing unit): {text!r}")
    return total


def runbook_url(name: str) -> str:
    """The runbook section of an alert (GitHub's anchor of `## Name`)."""
    return f"{RUNBOOK_BASE}#{name.lower()}"


def rule(alert: dict[str, str]) -> dict[str, Any]:
    """One alerting rule as Prometheus reads it."""
    params = _params(alert)
    settings = SETTINGS[alert["alert"]]
    return {
        "alert": alert["alert"],
        "expr": alert["expr"] % params,
        "for": settings["for"],
        "labels": {"severity": settings["severity"]},
        "annotations": {
            "summary": alert["summary"] % params,
            "description": alert["description"] % params,
            "runbook_url": runbook_url(alert["alert"]),
        },
    }


def record(entry: dict[str, str]) -> dict[str, Any]:
    """One recording rule as Prometheus reads it."""
    params = {"queue_key": QUEUE_KEY, "failure_key": FAILURE_KEY}
    return {"record": entry["record"], "expr": entry["expr"] % params}


def rule_groups() -> list[dict[str, Any]]:
    """Every rule group, in file order: the alerts, then the recording rules."""
    return [
        {"name": group, "rules": [rule(a) for a in ALERTS if a["group"] == group]}
        for group in GROUPS
    ] + [
        {"name": group, "rules": [record(r) for r in RECORDS if r["group"] == group]}
        for group in RECORDING_GROUPS
    ]


class _Dumper(yaml.SafeDumper):
    """Indents block sequences and writes multi-line strings as literal blocks."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(data: Any) -> str:
    """YAML text of `data`, keys in insertion order."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, width=4096, allow_unicode=True)


def rules_file() -> str:
    """The text of alerts/celery-exporter.rules.yml."""
    return HEADER + "\n" + dump({"groups": rule_groups()})


def prometheus_rule() -> str:
    """The text of deploy/kubernetes/prometheusrule.yaml."""
    resource = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "celery-jobs-exporter",
            "labels": {
                "app.kubernetes.io/name": "celery-jobs-exporter",
                "app.kubernetes.io/component": "alerting",
                # kube-prometheus-stack selects rules by this label by default.
                "release": "prometheus",
            },
        },
        "spec": {"groups": rule_groups()},
    }
    header = (
        "# GENERATED by alerts/generate.py from the same table as "
        "alerts/celery-exporter.rules.yml.\n"
    )
    return header + dump(resource)


def alert_table() -> str:
    """The Markdown table of alerts, thresholds and `for:`."""
    lines = [
        "| Alert | Severity | Fires when | Threshold | `for` | Runbook |",
        "|---|---|---|---|---|---|",
    ]
    for alert in ALERTS:
        params = _params(alert)
        settings = SETTINGS[alert["alert"]]
        name = alert["alert"]
        lines.append(
            f"| `{name}` | {settings['severity']} | {alert['when'] % params} "
            f"| {alert['threshold'] % params} | {settings['for']} "
            f"| [runbook](../docs/runbook.md#{name.lower()}) |"
        )
    lines += ["", "| Recording rule | Holds |", "|---|---|"]
    lines += [f"| `{r['record']}` | {r['help']} |" for r in RECORDS]
    return "\n".join(lines) + "\n"


def with_table(text: str, table: str, *, runbook_prefix: str) -> str:
    """`text` with the part between the table markers replaced by `table`."""
    head, begin, rest = text.partition(TABLE_BEGIN)
    _, end, tail = rest.partition(TABLE_END)
    if not begin or not end:
        raise ValueError(f"table markers {TABLE_BEGIN!r} / {TABLE_END!r} not found")
    table = table.replace("(../docs/runbook.md#", f"({runbook_prefix}#")
    return f"{head}{TABLE_BEGIN}\n{table}{TABLE_END}{tail}"


def outputs() -> dict[Path, str]:
    """Every generated file and its expected text."""
    files = {RULES_PATH: rules_file(), PROMETHEUS_RULE_PATH: prometheus_rule()}
    table = alert_table()
    for doc in TABLE_DOCS:
        prefix = "../docs/runbook.md" if doc.parent.name == "alerts" else "runbook.md"
        files[doc] = with_table(doc.read_text(encoding="utf-8"), table, runbook_prefix=prefix)
    return files


def main(argv: list[str] | None = None) -> int:
    """Write the generated files, or with --check report those out of date."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check, write nothing")
    args = parser.parse_args(argv)
    stale = []
    for path, text in outputs().items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    for path in stale:
        verb = "out of date" if args.check else "written"
        print(f"{path.relative_to(ROOT)}: {verb}", file=sys.stderr)
    if args.check and stale:
        print("run: python alerts/generate.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
