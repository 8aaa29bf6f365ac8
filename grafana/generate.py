"""Generate the Grafana dashboards of celery-jobs-exporter from plain Python dicts.

    python grafana/generate.py           # (re)write grafana/dashboards/*.json
    python grafana/generate.py --check   # exit 1 if a committed dashboard is out of date

The dashboards are provisioning-ready: a stable `uid`, a `${datasource}` template
variable (no `__inputs`), `job`/`instance`/`queue` variables, `$__rate_interval` in
every rate, and a unit and a description on every panel.

Several exporters may watch one broker (one per worker pod in the Kubernetes sidecar
layout), so every queue, task and worker query first takes `max by (...)` across the
selected exporter instances (de-duplication) and only then sums or ratios.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: `python grafana/generate.py`
    sys.path.insert(0, str(ROOT))

from alerts.generate import duration_seconds  # noqa: E402
from alerts.thresholds import SETTINGS  # noqa: E402

DASHBOARDS_DIR = Path(__file__).resolve().parent / "dashboards"
OVERVIEW_UID = "celery-exporter-overview"
QUEUE_UID = "celery-exporter-queue"
TAG = "celery-jobs-exporter"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GRID_WIDTH = 24



ALERTS = SETTINGS  # the alerts' thresholds, drawn on the dashboards
BACKLOG_HIGH = ALERTS["CeleryQueueBacklogHigh"]["threshold"]
FAILURE_RATIO_HIGH = ALERTS["CeleryTaskFailureRatioHigh"]["threshold"]
FAILURE_RATIO_MIN_JOBS = ALERTS["CeleryTaskFailureRatioHigh"]["min_jobs"]
FAILURE_RATIO_WINDOW = ALERTS["CeleryTaskFailureRatioHigh"]["window"]
WAIT_HIGH = ALERTS["CeleryQueueWaitTimeHigh"]["threshold"]
STALE_AFTER = ALERTS["CeleryExporterSnapshotStale"]["threshold"]
STUCK_AFTER = ALERTS["CeleryQueueStuck"]["threshold"]
STUCK_FOR = ALERTS["CeleryQueueStuck"]["for"]
SATURATED = ALERTS["CeleryWorkersSaturated"]["threshold"]
SATURATED_FOR = ALERTS["CeleryWorkersSaturated"]["for"]
NEW_EXCEPTION_LOOKBACK = ALERTS["CeleryNewExceptionType"]["lookback"]
FAILURE_RATIO_STEPS: list[tuple[str, float | None]] = [
    ("green", None), ("orange", FAILURE_RATIO_HIGH / 5), ("red", FAILURE_RATIO_HIGH),
]
FAILURE_RATIO_ALERT = (
    f"CeleryTaskFailureRatioHigh fires above {FAILURE_RATIO_HIGH:.0%} over "
    f"{FAILURE_RATIO_WINDOW} (with at least {FAILURE_RATIO_MIN_JOBS} jobs) on failed "
    "executions alone; CeleryTasksLost fires on any lost one."
)
LOST_WINDOW = ALERTS["CeleryTasksLost"]["window"]
#: A lost execution ran on a worker declared down and its message is gone: it never ends.
LOST_NOTE = (
    "lost: running on a worker declared down (e.g. OOM-killed) with its message gone from "
    "the broker; the Jobs API shows it failed with failedReason WorkerLost."
)

#: Selects the chosen exporter(s); every expression carries it.
TARGET = 'job="$job", instance=~"$instance"'
RATE = "[$__rate_interval]"

# Grafana unit ids (custom "suffix:" units where no built-in one says it better).
COUNT = "short"
SECONDS = "s"
RATIO = "percentunit"
JOBS_PER_SECOND = "suffix: jobs/s"
JOBS_PER_HOUR = "suffix: jobs/h"
EVENTS_PER_SECOND = "suffix: events/s"
PER_SECOND = "suffix: /s"
YES_NO = "bool_yes_no"

#: One fixed color per outcome of celery_tasks_total, the same on every panel: the
#: failures in reds (lost darker than failed), the rest apart from them.
OUTCOME_COLORS = {
    "succeeded": "green",
    "failed": "red",
    "lost": "dark-red",
    "retried": "yellow",
    "revoked": "blue",
    "rejected": "purple",
}

UP_MAPPINGS = [
    {
        "type": "value",
        "options": {
            "0": {"text": "DOWN", "color": "red", "index": 0},
            "1": {"text": "UP", "color": "green", "index": 1},
        },
    }
]
JOBS_API_NOTE = (
    "Failures are counted by exception class in celery_task_failures_total (Top failing "
    "exceptions); the exception message (`failedReason`) and traceback (`stacktrace`) of "
    "each failed job are in the exporter's Jobs API, "
    "`GET /v1/jobs/queues/{queue}?status=failed`."
)


# --------------------------------------------------------------------------- PromQL


def sel(*matchers: str) -> str:
    """A label selector: the exporter target plus `matchers`."""
    return "{" + ", ".join((TARGET, *matchers)) + "}"


def matches(label: str, regex: str) -> str:
    """A `label="value"` matcher, or `label=~"regex"` when `regex` is one."""
    operator = "=~" if any(char in regex for char in "|.+*") else "="
    return f'{label}{operator}"{regex}"'


def jobs(queue: str, statuses: str, by: str = "queue, status", window: str = "") -> str:
    """celery_queue_jobs de-duplicated across exporters, by `by`; `window` wraps it in deriv."""
    series = f"celery_queue_jobs{sel(queue, matches('status', statuses))}"
    if window:
        series = f"deriv({series}{window})"
    return f"max by ({by}) ({series})"


def backlog(queue: str, by: str = "queue", window: str = "") -> str:
    """Waiting + paused jobs, by `by` ("" for the total); with `window`, its slope per second."""
    inner = jobs(queue, "waiting|paused", window=window)
    return f"sum by ({by}) ({inner})" if by else f"sum({inner})"


def outcome_rate(queue: str, outcomes: str, by: str, fn: str = "rate", window: str = RATE) -> str:
    """Task executions that ended with `outcomes` per second (or `fn` over `window`)."""
    matchers = (queue, matches("outcome", outcomes)) if outcomes else (queue,)
    series = f"celery_tasks_total{sel(*matchers)}"
    dedup = f"max by (queue, task, outcome) ({fn}({series}{window}))"
    return f"sum by ({by}) ({dedup})" if by else f"sum({dedup})"


def failure_ratio(queue: str, by: str) -> str:
    """(failed + lost) / (succeeded + failed + lost): a lost execution failed too."""
    return (
        f"{outcome_rate(queue, 'failed|lost', by)}\n/\n"
        f"{outcome_rate(queue, 'succeeded|failed|lost', by)}"
    )


def lost_recovered_rate(queue: str, by: str) -> str:
    """Lost executions whose real end arrived later, per second."""
    rate = f"rate(celery_tasks_lost_recovered_total{sel(queue)}{RATE})"
    return f"sum by ({by}) (max by (queue, task) ({rate}))"


def runtime_quantile(q: float, queue: str, by: str) -> str:
    """A quantile of celery_task_runtime_seconds by `by` (tasks summed after de-duplication)."""
    rate = f"rate(celery_task_runtime_seconds_bucket{sel(queue)}{RATE})"
    return f"histogram_quantile({q}, sum by ({by}, le) (max by (queue, task, le) ({rate})))"


def wait_quantile(q: float, queue: str) -> str:
    """A quantile of celery_task_queue_wait_seconds by queue."""
    rate = f"rate(celery_task_queue_wait_seconds_bucket{sel(queue)}{RATE})"
    return f"histogram_quantile({q}, max by (queue, le) ({rate}))"


def utilisation(queue: str) -> str:
    """Active jobs / capacity per queue, de-duplicated; no sample where the capacity is 0."""
    return (
        f"{jobs(queue, 'active', by='queue')}\n/ on (queue)\n"
        f"(max by (queue) (celery_queue_capacity{sel(queue)}) > 0)"
    )


def failures_by_exception(queue: str, window: str = "[$__range]") -> str:
    """Failures per (queue, task, exception) over `window`, the top 10, zeros dropped.

    A failure series starts at 1 (its first failure), which increase() cannot see: a series
    absent `window` ago counts its whole value instead."""
    series = f"celery_task_failures_total{sel(queue)}"
    key = "queue, task, exception"
    offset = window.strip("[]")
    return (
        "topk(10,\n"
        f"  max by ({key}) ({series})\n"
        f"    unless max by ({key}) ({series} offset {offset})\n"
        "  or\n"
        f"  max by ({key}) (increase({series}{window}))\n"
        ") > 0"
    )


# --------------------------------------------------------------------------- panels


def target(
    expr: str, legend: str = "", *, instant: bool = False, table: bool = False
) -> dict[str, Any]:
    """A Prometheus query of a panel (refId is set when the panel is built)."""
    result: dict[str, Any] = {
        "datasource": DATASOURCE,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "instant": instant,
    }
    if table:
        result["format"] = "table"
    return result


def _field_config(
    unit: str,
    *,
    custom: dict[str, Any] | None = None,
    thresholds: list[tuple[str, float | None]] | None = None,
    mappings: list[dict[str, Any]] | None = None,
    min_value: float | None = None,
    max_value: float | None = None,
    decimals: int | None = None,
    overrides: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    steps = [
        {"color": color, "value": value}
        for color, value in (thresholds or [("green", None)])
    ]
    defaults: dict[str, Any] = {
        "unit": unit,
        "color": {"mode": "thresholds" if thresholds else "palette-classic"},
        "thresholds": {"mode": "absolute", "steps": steps},
        "mappings": mappings or [],
    }
    if custom is not None:
        defaults["custom"] = custom
    if min_value is not None:
        defaults["min"] = min_value
    if max_value is not None:
        defaults["max"] = max_value
    if decimals is not None:
        defaults["decimals"] = decimals
    return {"defaults": defaults, "overrides": overrides or []}


def _with_refs(targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**t, "refId": chr(ord("A") + i)} for i, t in enumerate(targets)]


def outcome_colors(*outcomes: str, suffix: bool = False) -> list[dict[str, Any]]:
    """Field overrides giving `outcomes` (default: all) their color: series named after the
    outcome, or (`suffix`) whose name ends with " <outcome>"."""
    return [
        {
            "matcher": (
                {"id": "byRegexp", "options": f".* {outcome}"}
                if suffix
                else {"id": "byName", "options": outcome}
            ),
            "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": color}}],
        }
        for outcome, color in OUTCOME_COLORS.items()
        if not outcomes or outcome in outcomes
    ]


def timeseries(
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    unit: str,
    *,
    stack: bool = False,
    min_value: float | None = 0,
    max_value: float | None = None,
    thresholds: list[tuple[str, float | None]] | None = None,
    legend_calcs: tuple[str, ...] = ("lastNotNull", "max"),
    overrides: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A time series panel (optionally stacked)."""
    custom: dict[str, Any] = {
        "drawStyle": "line",
        "lineWidth": 1,
        "fillOpacity": 25 if stack else 10,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
        "thresholdsStyle": {"mode": "dashed" if thresholds else "off"},
    }
    field_config = _field_config(
        unit, custom=custom, thresholds=thresholds, min_value=min_value, max_value=max_value,
        overrides=overrides,
    )
    field_config["defaults"]["color"] = {"mode": "palette-classic"}
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": _with_refs(targets),
        "fieldConfig": field_config,
        "options": {
            "legend": {
                "displayMode": "table",
                "placement": "bottom",
                "showLegend": True,
                "calcs": list(legend_calcs),
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
    }


def stat(
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    unit: str,
    *,
    thresholds: list[tuple[str, float | None]] | None = None,
    mappings: list[dict[str, Any]] | None = None,
    decimals: int | None = None,
    graph: bool = True,
) -> dict[str, Any]:
    """A single-value panel showing the last value."""
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": _with_refs(targets),
        "fieldConfig": _field_config(
            unit,
            thresholds=thresholds or [("green", None)],
            mappings=mappings,
            decimals=decimals,
        ),
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area" if graph else "none",
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": "auto",
        },
    }


def state_timeline(
    title: str, description: str, targets: list[dict[str, Any]]
) -> dict[str, Any]:
    """A state timeline of 0/1 health series (DOWN/UP)."""
    return {
        "type": "state-timeline",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": _with_refs(targets),
        "fieldConfig": _field_config(
            YES_NO,
            custom={"fillOpacity": 70, "lineWidth": 0},
            thresholds=[("red", None), ("green", 1)],
            mappings=UP_MAPPINGS,
        ),
        "options": {
            "showValue": "never",
            "mergeValues": True,
            "rowHeight": 0.9,
            "alignValue": "left",
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": False},
            "tooltip": {"mode": "single", "sort": "none"},
        },
    }


def table(
    title: str,
    description: str,
    targets: list[dict[str, Any]],
    unit: str,
    *,
    transformations: list[dict[str, Any]],
    overrides: list[dict[str, Any]] | None = None,
    sort_by: str | None = None,
) -> dict[str, Any]:
    """A table of instant query results."""
    options: dict[str, Any] = {"showHeader": True, "cellHeight": "sm"}
    if sort_by:
        options["sortBy"] = [{"displayName": sort_by, "desc": True}]
    return {
        "type": "table",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": _with_refs(targets),
        "fieldConfig": _field_config(
            unit, custom={"align": "auto", "filterable": False}, overrides=overrides
        ),
        "options": options,
        "transformations": transformations,
    }


@dataclass
class Layout:
    """Places panels left to right on Grafana's 24-column grid, rows full width."""

    panels: list[dict[str, Any]] = field(default_factory=list)
    x: int = 0
    y: int = 0
    line_height: int = 0

    def _newline(self) -> None:
        self.y += self.line_height
        self.x, self.line_height = 0, 0

    def row(self, title: str) -> None:
        """Start a (non-collapsed) row."""
        if self.x:
            self._newline()
        self.panels.append({
            "type": "row",
            "title": title,
            "collapsed": False,
            "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": self.y},
            "panels": [],
        })
        self.y += 1

    def add(self, panel: dict[str, Any], w: int, h: int) -> None:
        """Add a panel of `w` columns and `h` rows at the next free place."""
        if self.x + w > GRID_WIDTH:
            self._newline()
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.panels.append(panel)
        self.x += w
        self.line_height = max(self.line_height, h)

    def numbered(self) -> list[dict[str, Any]]:
        """The panels with ids 1..n, keys in a stable order."""
        result = []
        for number, panel in enumerate(self.panels, start=1):
            result.append({"id": number, **panel})
        return result


# --------------------------------------------------------------------------- dashboard


def variables(*, multi_queue: bool) -> list[dict[str, Any]]:
    """datasource, job, instance and queue template variables."""

    def query_var(
        name: str, label: str, query: str, *, multi: bool, description: str
    ) -> dict[str, Any]:
        variable: dict[str, Any] = {
            "name": name,
            "label": label,
            "description": description,
            "type": "query",
            "datasource": DATASOURCE,
            "query": query,
            "definition": query,
            "refresh": 2,
            "sort": 1,
            "regex": "",
            "hide": 0,
            "multi": multi,
            "includeAll": multi,
            "current": {},
            "options": [],
        }
        if multi:
            variable["allValue"] = ".*"
        return variable

    return [
        {
            "name": "datasource",
            "label": "Data source",
            "description": "The Prometheus that scrapes celery-jobs-exporter.",
            "type": "datasource",
            "query": "prometheus",
            "regex": "",
            "hide": 0,
            "multi": False,
            "includeAll": False,
            "refresh": 1,
            "current": {},
            "options": [],
        },
        query_var(
            "job", "Job", "label_values(celery_exporter_build_info, job)", multi=False,
            description="The scrape job of the exporter (one Celery deployment).",
        ),
        query_var(
            "instance", "Exporter",
            'label_values(celery_exporter_build_info{job="$job"}, instance)', multi=True,
            description="Exporter instances; several watching one broker are de-duplicated.",
        ),
        query_var(
            "queue", "Queue",
            'label_values(celery_queue_jobs{job="$job", instance=~"$instance"}, queue)',
            multi=multi_queue,
            description="Celery queues (Redis lists) the exporter reports.",
        ),
    ]


def dashboard(
    uid: str, title: str, description: str, layout: Layout, *, multi_queue: bool
) -> dict[str, Any]:
    """A complete dashboard model."""
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": [TAG, "celery", "redis"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "links": [
            {
                "title": "Celery dashboards",
                "type": "dashboards",
                "tags": [TAG],
                "asDropdown": False,
                "includeVars": True,
                "keepTime": True,
                "targetBlank": False,
                "icon": "external link",
                "tooltip": "",
                "url": "",
            }
        ],
        "templating": {"list": variables(multi_queue=multi_queue)},
        "panels": layout.numbered(),
    }


def _status_table(queue: str) -> dict[str, Any]:
    statuses = ["waiting", "active", "delayed", "paused", "completed", "failed"]
    drill_down = (
        f"/d/{QUEUE_UID}/celery-queue?${{datasource:queryparam}}&var-job=${{job}}"
        "&${instance:queryparam}&var-queue=${__value.raw}&${__url_time_range}"
    )
    return table(
        "Jobs per queue and status",
        "Every queue and status now (celery_queue_jobs). waiting: published, not started (incl. "
        "prefetched); paused: waiting in a queue no live worker consumes; delayed: ETA or "
        "countdown in the future; active: running; completed/failed: jobs the exporter "
        "retains (bounded by --completed-retention/--failed-retention), not totals. "
        "Click a queue to open its drill-down.",
        [target(jobs(queue, "|".join(statuses)), instant=True, table=True)],
        COUNT,
        transformations=[
            {
                "id": "groupingToMatrix",
                "options": {
                    "columnField": "status",
                    "rowField": "queue",
                    "valueField": "Value",
                    "emptyValue": "zero",
                },
            },
            {
                "id": "organize",
                "options": {
                    "excludeByName": {},
                    "indexByName": {"queue\\status": 0}
                    | {s: i + 1 for i, s in enumerate(statuses)},
                    "renameByName": {"queue\\status": "queue"},
                },
            },
        ],
        overrides=[
            {
                "matcher": {"id": "byName", "options": "queue"},
                "properties": [
                    {
                        "id": "links",
                        "value": [{"title": "Open queue ${__value.raw}", "url": drill_down}],
                    }
                ],
            },
            {
                "matcher": {"id": "byName", "options": "paused"},
                "properties": [
                    {"id": "custom.cellOptions", "value": {"type": "color-text"}},
                    {
                        "id": "thresholds",
                        "value": {
                            "mode": "absolute",
                            "steps": [
                                {"color": "green", "value": None},
                                {"color": "red", "value": 1},
                            ],
                        },
                    },
                ],
            },
        ],
    )


def _queue_status_rows(layout: Layout, queue: str, scope: str) -> None:
    layout.row("Jobs over time")
    layout.add(timeseries(
        "Jobs in flight by queue and status",
        f"Waiting, active, delayed and paused jobs of {scope}, stacked "
        "(celery_queue_jobs). Paused jobs will not run until a worker consumes the queue.",
        [target(jobs(queue, "waiting|active|delayed|paused"), "{{queue}} {{status}}")],
        COUNT, stack=True,
    ), 12, 9)
    layout.add(timeseries(
        "Retained finished jobs by queue",
        f"Completed and failed jobs the exporter retains for {scope} (celery_queue_jobs). "
        "These are bounded by retention, so they plateau: use the throughput panels for rates.",
        [target(jobs(queue, "completed|failed"), "{{queue}} {{status}}")],
        COUNT, stack=True,
    ), 12, 9)
    layout.add(timeseries(
        "Backlog (waiting + paused)",
        f"Jobs published and not yet started, per queue, for {scope}. The dashed line is the "
        f"CeleryQueueBacklogHigh threshold ({BACKLOG_HIGH}).",
        [target(backlog(queue), "{{queue}}")],
        COUNT, thresholds=[("green", None), ("red", BACKLOG_HIGH)],
    ), 12, 8)
    trend = backlog(queue, window="[15m]")
    layout.add(timeseries(
        "Backlog trend",
        "How fast the backlog changes: slope of waiting + paused over the last 15 minutes "
        "(deriv), in jobs per hour. Above 0 the workers do not keep up; "
        "CeleryQueueBacklogGrowing alerts on the same trend (predict_linear).",
        [target(f"3600 * {trend}", "{{queue}}")],
        JOBS_PER_HOUR, min_value=None,
    ), 12, 8)


def _saturation_panels(layout: Layout, queue: str, scope: str) -> None:
    layout.row("Saturation")
    layout.add(timeseries(
        "Oldest job age",
        f"How long the job workers take next from each queue has waited, for {scope} "
        "(celery_queue_oldest_job_age_seconds): under waiting while the queue has consumers, "
        "under paused while it has none; 0 when empty. The dashed line is the "
        f"CeleryQueueStuck threshold: it fires when the waiting age stays above {STUCK_AFTER} "
        f"for {STUCK_FOR} on a queue with consumers (a paused age is CeleryQueueNoConsumers' "
        "case). Where celery_queue_oldest_job_age_lower_bound is 1 (no task-sent events) the "
        "age counts from when the exporter first saw the job: the job is at least that old.",
        [target(
            "max by (queue, status) (celery_queue_oldest_job_age_seconds"
            f"{sel(queue, matches('status', 'waiting|paused'))})",
            "{{queue}} {{status}}",
        )],
        SECONDS, thresholds=[("green", None), ("red", duration_seconds(STUCK_AFTER))],
    ), 12, 8)
    layout.add(timeseries(
        "Worker utilisation",
        f"Active jobs / capacity per queue, for {scope}: the share of the worker slots "
        "consuming the queue that run its jobs (celery_queue_jobs{status=\"active\"} / "
        "celery_queue_capacity; the recording rule celery:queue_utilisation:ratio). "
        "Capacity (right axis) is the sum of the concurrency of its live consumers; no "
        "utilisation while it is 0. The dashed line is the CeleryWorkersSaturated "
        f"threshold ({SATURATED:.0%} for {SATURATED_FOR}).",
        [
            target(utilisation(queue), "{{queue}} utilisation"),
            target(f"max by (queue) (celery_queue_capacity{sel(queue)})", "{{queue}} capacity"),
        ],
        RATIO, thresholds=[("green", None), ("red", SATURATED)],
        overrides=[{
            "matcher": {"id": "byRegexp", "options": ".* capacity"},
            "properties": [
                {"id": "unit", "value": COUNT},
                {"id": "custom.axisPlacement", "value": "right"},
                {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
            ],
        }],
    ), 12, 8)


def exceptions_table(queue: str, scope: str) -> dict[str, Any]:
    """The top failing (queue, task, exception) triples over the time range."""
    return table(
        "Top failing exceptions",
        f"Failed executions of {scope} over the dashboard's time range by queue, task and "
        "exception class (celery_task_failures_total), most first, the top 10; none listed "
        "when nothing failed. A class that a task had not failed with "
        f"{NEW_EXCEPTION_LOOKBACK} earlier fires CeleryNewExceptionType. Classes past "
        "--max-exception-types are counted as other. The message and traceback of each "
        "failed job are in the Jobs API, `GET /v1/jobs/queues/{queue}?status=failed`.",
        [target(failures_by_exception(queue), instant=True, table=True)],
        COUNT,
        transformations=[{
            "id": "organize",
            "options": {
                "excludeByName": {"Time": True},
                "indexByName": {"queue": 0, "task": 1, "exception": 2, "Value": 3},
                "renameByName": {"Value": "failures"},
            },
        }],
        sort_by="failures",
    )


def _latency_panels(layout: Layout, queue: str, scope: str) -> None:
    layout.add(timeseries(
        "Queue wait p50 / p95 / p99",
        f"Time from when a job could run (published, or its ETA) to when it started, for {scope} "
        f"(celery_task_queue_wait_seconds). CeleryQueueWaitTimeHigh fires on p95 > {WAIT_HIGH} s.",
        [
            target(wait_quantile(q, queue), f"{{{{queue}}}} p{int(q * 100)}")
            for q in (0.5, 0.95, 0.99)
        ],
        SECONDS,
    ), 12, 8)
    layout.add(timeseries(
        "Runtime p50 / p95 / p99",
        f"How long task executions ran, all tasks of {scope} together "
        "(celery_task_runtime_seconds). Empty while nothing finishes.",
        [
            target(runtime_quantile(q, queue, "queue"), f"{{{{queue}}}} p{int(q * 100)}")
            for q in (0.5, 0.95, 0.99)
        ],
        SECONDS,
    ), 12, 8)


def overview() -> dict[str, Any]:
    """celery-overview.json: every queue at a glance, workers and the exporter's health."""
    queue = 'queue=~"$queue"'
    layout = Layout()
    layout.row("Now")
    layout.add(stat(
        "Backlog", "Jobs waiting to start (waiting + paused) in the selected queues.",
        [target(backlog(queue, by=""))], COUNT,
        thresholds=[("green", None), ("orange", BACKLOG_HIGH)],
    ), 4, 4)
    layout.add(stat(
        "Active", "Jobs running now in the selected queues.",
        [target(f"sum({jobs(queue, 'active')})")], COUNT,
    ), 4, 4)
    layout.add(stat(
        "Delayed",
        "Jobs with an ETA or countdown in the future (incl. retries waiting for theirs).",
        [target(f"sum({jobs(queue, 'delayed')})")], COUNT,
    ), 4, 4)
    layout.add(stat(
        "Paused", "Jobs waiting in queues that no live worker consumes: they will not run.",
        [target(f"sum({jobs(queue, 'paused')})")], COUNT,
        thresholds=[("green", None), ("red", 1)],
    ), 4, 4)
    layout.add(stat(
        "Throughput", "Task executions that succeeded per second (celery_tasks_total).",
        [target(outcome_rate(queue, "succeeded", by=""))], JOBS_PER_SECOND,
    ), 4, 4)
    layout.add(stat(
        "Failure ratio",
        "(failed + lost) / (succeeded + failed + lost) task executions over the rate "
        "interval, selected queues; a lost execution counts as a failure.",
        [target(failure_ratio(queue, by=""))], RATIO,
        thresholds=FAILURE_RATIO_STEPS,
    ), 4, 4)
    layout.add(_status_table(queue), 16, 8)
    layout.add(stat(
        "Workers up", "Workers that answered inspect or sent a recent heartbeat.",
        [target("sum(max by (worker) (celery_worker_up" + sel() + "))")], COUNT,
    ), 4, 4)
    layout.add(stat(
        "Workers down",
        "Known workers that went silent or shut down (reported for 1 h after last seen).",
        [target("count(max by (worker) (celery_worker_up" + sel() + ") == 0) or vector(0)")],
        COUNT, thresholds=[("green", None), ("red", 1)],
    ), 4, 4)
    layout.add(stat(
        "Broker read OK",
        "celery_exporter_up of the worst selected exporter: NO means its last broker read failed.",
        [target("min(celery_exporter_up" + sel() + ")")], YES_NO,
        thresholds=[("red", None), ("green", 1)], mappings=UP_MAPPINGS, graph=False,
    ), 4, 4)
    layout.add(stat(
        "Snapshot age",
        "Seconds since the oldest selected exporter last read the broker successfully "
        "(time() - celery_exporter_last_successful_refresh_timestamp_seconds).",
        [target("max(time() - celery_exporter_last_successful_refresh_timestamp_seconds"
                + sel() + ")")],
        SECONDS, thresholds=[("green", None), ("orange", STALE_AFTER / 2), ("red", STALE_AFTER)],
    ), 4, 4)

    _queue_status_rows(layout, queue, "the selected queues")
    _saturation_panels(layout, queue, "the selected queues")

    layout.row("Throughput and failures")
    layout.add(timeseries(
        "Throughput by queue",
        "Task executions per second that succeeded, that failed for good and that were lost, "
        "per queue (rate of celery_tasks_total). Retries are not failures; " + LOST_NOTE,
        [
            target(outcome_rate(queue, "succeeded", "queue"), "{{queue}} succeeded"),
            target(outcome_rate(queue, "failed", "queue"), "{{queue}} failed"),
            target(outcome_rate(queue, "lost", "queue"), "{{queue}} lost"),
        ],
        # Only lost gets its fixed color: the palette tells the queues apart.
        JOBS_PER_SECOND, overrides=outcome_colors("lost", suffix=True),
    ), 12, 8)
    layout.add(timeseries(
        "Failure ratio by queue",
        "(failed + lost) / (succeeded + failed + lost) per queue: a lost execution counts as "
        f"a failure. {FAILURE_RATIO_ALERT}",
        [target(failure_ratio(queue, "queue"), "{{queue}}")],
        RATIO, max_value=1, thresholds=[("green", None), ("red", FAILURE_RATIO_HIGH)],
    ), 12, 8)
    layout.add(timeseries(
        "Outcomes",
        "Every outcome per second in the selected queues, stacked: succeeded, failed, lost, "
        "retried, revoked, rejected (celery_tasks_total). " + LOST_NOTE,
        [target(outcome_rate(queue, "", "outcome"), "{{outcome}}")],
        JOBS_PER_SECOND, stack=True, overrides=outcome_colors(),
    ), 8, 8)
    layout.add(timeseries(
        "Top failing tasks",
        "The 10 queue/task pairs with the most failed or lost executions per second. "
        + JOBS_API_NOTE,
        [target(f"topk(10, {outcome_rate(queue, 'failed|lost', 'queue, task')})",
                "{{queue}} {{task}}")],
        JOBS_PER_SECOND,
    ), 8, 8)
    layout.add(timeseries(
        "Lost executions",
        "Per queue and second: executions lost with their worker (celery_tasks_total{outcome="
        "\"lost\"}) and those of them whose real end arrived later because the worker was "
        "only cut off (celery_tasks_lost_recovered_total). lost - recovered is what was really "
        f"lost: CeleryTasksLost fires when it is above 0 over {LOST_WINDOW}.",
        [
            target(outcome_rate(queue, "lost", "queue"), "{{queue}} lost"),
            target(lost_recovered_rate(queue, "queue"), "{{queue}} recovered"),
        ],
        JOBS_PER_SECOND,
    ), 8, 8)
    layout.add(exceptions_table(queue, "the selected queues"), 24, 8)

    layout.row("Latency")
    _latency_panels(layout, queue, "each selected queue")

    layout.row("Workers and consumers")
    layout.add(state_timeline(
        "Workers up",
        "Each known worker: UP while it answers inspect or heartbeats, DOWN once silent "
        "(or shut down) until forgotten 1 h later (celery_worker_up).",
        [target("max by (worker) (celery_worker_up" + sel() + ")", "{{worker}}")],
    ), 12, 8)
    layout.add(timeseries(
        "Consumers per queue",
        "Live workers consuming each queue (celery_queue_consumers); 0 means its waiting jobs "
        "are paused.",
        [target(f"max by (queue) (celery_queue_consumers{sel(queue)})", "{{queue}}")],
        COUNT,
    ), 12, 8)
    layout.add(timeseries(
        "Active tasks per worker",
        "Tasks each worker is running (celery_worker_active_tasks); compare with its "
        "concurrency.",
        [target("max by (worker) (celery_worker_active_tasks" + sel() + ")", "{{worker}}")],
        COUNT,
    ), 12, 8)
    layout.add(timeseries(
        "Prefetched jobs per queue",
        "Jobs reserved by a worker without an ETA (celery_queue_prefetched_jobs; counted in "
        "waiting). Many prefetched jobs with idle workers elsewhere suggests lowering "
        "worker_prefetch_multiplier.",
        [target(f"max by (queue) (celery_queue_prefetched_jobs{sel(queue)})", "{{queue}}")],
        COUNT,
    ), 12, 8)

    layout.row("Exporter health")
    layout.add(state_timeline(
        "Exporter up",
        "Per exporter instance: scrape = Prometheus reached /metrics (up); broker = the last "
        "broker read succeeded (celery_exporter_up).",
        [
            target("up" + sel(), "{{instance}} scrape"),
            target("celery_exporter_up" + sel(), "{{instance}} broker"),
        ],
    ), 12, 6)
    layout.add(state_timeline(
        "Source health",
        "Each source of the exporter's refresh: broker (Redis lists), workers (inspect), "
        "events (event stream) (celery_exporter_source_up). A failing source keeps serving "
        "its last good data.",
        [target("celery_exporter_source_up" + sel(), "{{instance}} {{source}}")],
    ), 12, 6)
    layout.add(timeseries(
        "Refresh age",
        "Seconds since the last successful broker read (time() - "
        "celery_exporter_last_successful_refresh_timestamp_seconds) and since each source's "
        f"last success. CeleryExporterSnapshotStale fires above {STALE_AFTER} s.",
        [
            target("time() - celery_exporter_last_successful_refresh_timestamp_seconds" + sel(),
                   "{{instance}} snapshot"),
            target("time() - celery_exporter_source_last_success_timestamp_seconds" + sel(),
                   "{{instance}} {{source}}"),
        ],
        SECONDS, thresholds=[("green", None), ("red", STALE_AFTER)],
    ), 12, 8)
    layout.add(timeseries(
        "Refresh duration",
        "How long building the last snapshot took (celery_exporter_refresh_duration_seconds); "
        "it includes the inspect broadcast (--inspect-timeout).",
        [target("celery_exporter_refresh_duration_seconds" + sel(), "{{instance}}")],
        SECONDS,
    ), 12, 8)
    layout.add(timeseries(
        "Event stream",
        "Celery events received per second (celery_exporter_events_received_total) and "
        "reconnects of the event subscription.",
        [
            target("rate(celery_exporter_events_received_total" + sel() + RATE + ")",
                   "{{instance}} received"),
            target("rate(celery_exporter_event_stream_reconnects_total" + sel() + RATE + ")",
                   "{{instance}} reconnects"),
        ],
        EVENTS_PER_SECOND,
    ), 12, 8)
    layout.add(timeseries(
        "Skipped and lost data",
        "Per second: undecodable events, malformed broker entries or worker replies (by "
        "source), task-started events known to be lost, and in-flight jobs evicted. Anything "
        "above 0 means task counts undercount (CeleryExporterDroppingData).",
        [
            target("rate(celery_exporter_events_undecodable_total" + sel() + RATE + ")",
                   "{{instance}} undecodable events"),
            target("rate(celery_exporter_malformed_messages_total" + sel() + RATE + ")",
                   "{{instance}} malformed {{source}}"),
            target("rate(celery_exporter_events_lost_total" + sel() + RATE + ")",
                   "{{instance}} lost events"),
            target("rate(celery_exporter_jobs_evicted_total" + sel() + RATE + ")",
                   "{{instance}} evicted jobs"),
        ],
        PER_SECOND,
    ), 12, 8)
    layout.add(timeseries(
        "Time without an event subscription",
        "Share of the time the exporter had lost its event subscription (Redis dropped it "
        "or went away) before subscribing again: events published then were not seen "
        "(CeleryExporterEventStreamInterrupted).",
        [target("rate(celery_exporter_event_stream_disconnected_seconds_total" + sel() + RATE
                + ")", "{{instance}}")],
        RATIO,
    ), 12, 8)
    layout.add(timeseries(
        "Broker round trips per refresh",
        "Redis round trips of the last broker read (celery_exporter_broker_round_trips): the "
        "exporter's load on Redis, per refresh interval.",
        [target("celery_exporter_broker_round_trips" + sel(), "{{instance}}")],
        COUNT,
    ), 8, 6)
    layout.add(stat(
        "Folded task names",
        "Distinct task names reported as task=\"other\" because --max-task-names was reached "
        "(celery_exporter_folded_task_names). Above 0, raise the limit or expect 'other'.",
        [target("max(celery_exporter_folded_task_names" + sel() + ")")], COUNT,
        thresholds=[("green", None), ("orange", 1)], graph=False,
    ), 4, 6)
    layout.add(table(
        "Exporter versions",
        "Version of each exporter and the Python and Celery it runs on "
        "(celery_exporter_build_info).",
        [target("celery_exporter_build_info" + sel(), instant=True, table=True)],
        COUNT,
        transformations=[{
            "id": "organize",
            "options": {
                "excludeByName": {"Time": True, "Value": True, "__name__": True, "job": True},
                "indexByName": {},
                "renameByName": {},
            },
        }],
    ), 12, 6)
    return dashboard(
        OVERVIEW_UID,
        "Celery / Overview",
        "Celery queues on Redis as seen by celery-jobs-exporter: jobs per queue and status, "
        "backlog, throughput, failures, latency, workers and the exporter's own health.",
        layout,
        multi_queue=True,
    )


def queue_drill_down() -> dict[str, Any]:
    """celery-queue.json: one queue in depth, with its top failing tasks."""
    queue = 'queue="$queue"'
    layout = Layout()
    layout.row("$queue now")
    for status, description in (
        ("waiting", "Jobs published and not started yet, incl. jobs prefetched by a worker."),
        ("active", "Jobs of the queue running now (started, not finished)."),
        ("delayed", "ETA or countdown in the future (incl. retries waiting for theirs)."),
        ("paused", "Waiting while no live worker consumes the queue: they will not run."),
        ("completed", "Succeeded jobs the exporter retains (bounded; not a total)."),
        ("failed", "Failed jobs the exporter retains (bounded; not a total). " + JOBS_API_NOTE),
    ):
        thresholds: list[tuple[str, float | None]] | None = (
            [("green", None), ("red", 1)] if status == "paused" else None
        )
        layout.add(stat(
            status.capitalize(), description,
            [target(f"sum({jobs(queue, status)})")], COUNT, thresholds=thresholds,
        ), 4, 4)
    layout.add(stat(
        "Consumers", "Live workers consuming the queue; 0 means its waiting jobs are paused.",
        [target(f"max(celery_queue_consumers{sel(queue)})")], COUNT,
        thresholds=[("red", None), ("green", 1)],
    ), 4, 4)
    layout.add(stat(
        "Prefetched", "Jobs reserved by workers without an ETA (counted in waiting).",
        [target(f"max(celery_queue_prefetched_jobs{sel(queue)})")], COUNT,
    ), 4, 4)
    layout.add(stat(
        "Throughput", "Task executions of the queue that succeeded per second.",
        [target(outcome_rate(queue, "succeeded", by=""))], JOBS_PER_SECOND,
    ), 4, 4)
    layout.add(stat(
        "Failure ratio",
        "(failed + lost) / (succeeded + failed + lost) over the rate interval; a lost "
        "execution counts as a failure.",
        [target(failure_ratio(queue, by=""))], RATIO,
        thresholds=FAILURE_RATIO_STEPS,
    ), 4, 4)
    layout.add(stat(
        "Queue wait p95", "95th percentile of the time jobs waited before they started.",
        [target(wait_quantile(0.95, queue))], SECONDS,
        thresholds=[("green", None), ("orange", WAIT_HIGH / 5), ("red", WAIT_HIGH)],
    ), 4, 4)
    layout.add(stat(
        "Runtime p95", "95th percentile of how long the queue's task executions ran.",
        [target(runtime_quantile(0.95, queue, "queue"))], SECONDS,
    ), 4, 4)

    _queue_status_rows(layout, queue, "queue $queue")
    _saturation_panels(layout, queue, "queue $queue")

    layout.row("Throughput and failures")
    layout.add(timeseries(
        "Outcomes",
        "Task executions of the queue per second by outcome, stacked: succeeded, failed, "
        "lost, retried, revoked, rejected (celery_tasks_total). " + LOST_NOTE,
        [target(outcome_rate(queue, "", "outcome"), "{{outcome}}")],
        JOBS_PER_SECOND, stack=True, overrides=outcome_colors(),
    ), 12, 8)
    layout.add(timeseries(
        "Failure ratio",
        "(failed + lost) / (succeeded + failed + lost): a lost execution counts as a "
        f"failure. {FAILURE_RATIO_ALERT}",
        [target(failure_ratio(queue, "queue"), "{{queue}}")],
        RATIO, max_value=1, thresholds=[("green", None), ("red", FAILURE_RATIO_HIGH)],
    ), 12, 8)
    layout.add(timeseries(
        "Throughput by task",
        "Succeeded executions per second of the 10 busiest tasks of the queue.",
        [target(f"topk(10, {outcome_rate(queue, 'succeeded', 'task')})", "{{task}}")],
        JOBS_PER_SECOND,
    ), 12, 8)
    layout.add(timeseries(
        "Top failing tasks",
        "Failed or lost executions per second of the 10 tasks of the queue that fail most. "
        + JOBS_API_NOTE,
        [target(f"topk(10, {outcome_rate(queue, 'failed|lost', 'task')})", "{{task}}")],
        JOBS_PER_SECOND,
    ), 12, 8)
    layout.add(table(
        "Top failing tasks over the time range",
        "Failed and lost executions per task over the dashboard's time range, most first, "
        "with how many of them were lost and the task's retries. " + LOST_NOTE + " "
        + JOBS_API_NOTE,
        [
            target("topk(10, "
                   f"{outcome_rate(queue, 'failed|lost', 'task', 'increase', '[$__range]')})",
                   instant=True, table=True),
            target(outcome_rate(queue, "lost", "task", "increase", "[$__range]"),
                   instant=True, table=True),
            target(outcome_rate(queue, "retried", "task", "increase", "[$__range]"),
                   instant=True, table=True),
        ],
        COUNT,
        transformations=[
            {"id": "merge", "options": {}},
            {
                "id": "organize",
                "options": {
                    "excludeByName": {"Time": True},
                    "indexByName": {"task": 0, "Value #A": 1, "Value #B": 2, "Value #C": 3},
                    "renameByName": {
                        "Value #A": "failed + lost", "Value #B": "lost", "Value #C": "retried",
                    },
                },
            },
            {"id": "filterByValue", "options": {
                "filters": [
                    {"fieldName": "failed + lost", "config": {"id": "isNull", "options": {}}},
                ],
                "type": "exclude", "match": "any",
            }},
        ],
        sort_by="failed + lost",
    ), 24, 8)
    layout.add(exceptions_table(queue, "queue $queue"), 24, 8)

    layout.row("Latency")
    _latency_panels(layout, queue, "queue $queue")
    layout.add(timeseries(
        "Runtime p95 by task",
        "95th percentile runtime of the 10 slowest tasks of the queue.",
        [target(f"topk(10, {runtime_quantile(0.95, queue, 'task')})", "{{task}}")],
        SECONDS,
    ), 12, 8)
    mean_sum, mean_count = (
        f"max by (task) (rate(celery_task_runtime_seconds_{part}{sel(queue)}{RATE}))"
        for part in ("sum", "count")
    )
    layout.add(timeseries(
        "Mean runtime by task",
        "Average runtime per task of the queue (runtime sum / count over the rate interval).",
        [target(f"{mean_sum}\n/\n{mean_count}", "{{task}}")],
        SECONDS,
    ), 12, 8)

    layout.row("Consumers")
    layout.add(timeseries(
        "Consumers",
        "Live workers consuming the queue over time; 0 means it is paused.",
        [target(f"max by (queue) (celery_queue_consumers{sel(queue)})", "{{queue}}")],
        COUNT,
    ), 12, 7)
    layout.add(timeseries(
        "Prefetched jobs",
        "Jobs reserved by workers without an ETA over time (counted in waiting).",
        [target(f"max by (queue) (celery_queue_prefetched_jobs{sel(queue)})", "{{queue}}")],
        COUNT,
    ), 12, 7)
    return dashboard(
        QUEUE_UID,
        "Celery / Queue",
        "One Celery queue in depth: jobs per status, backlog trend, outcomes, top failing "
        "tasks, queue wait and runtime, consumers.",
        layout,
        multi_queue=False,
    )


DASHBOARDS = {
    "celery-overview.json": overview,
    "celery-queue.json": queue_drill_down,
}


def render(name: str) -> str:
    """The JSON text of one dashboard file."""
    return json.dumps(DASHBOARDS[name](), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the dashboards, or with --check list those out of date and exit 1."""
    parser = argparse.ArgumentParser(description="Generate grafana/dashboards/*.json.")
    parser.add_argument("--check", action="store_true", help="only check, write nothing")
    args = parser.parse_args(argv)
    stale = []
    for name in DASHBOARDS:
        path = DASHBOARDS_DIR / name
        text = render(name)
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    for path in stale:
        print(f"{path.name}: {'out of date' if args.check else 'written'}", file=sys.stderr)
    if args.check and stale:
        print("run: python grafana/generate.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
