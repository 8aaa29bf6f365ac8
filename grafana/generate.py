"""Generate the Grafana dashboards of celery-jobs-exporter from plain Python dicts.

    python grafana/generate.py           # (re)write grafana/dashboards/*.json
    python grafana/generate.py --check   # exit 1 if a committed dashboard is out of date

The dashboards are provisioning-ready: a stable `uid`, a `${datasource}` template
variable (no `__inputs`), `namespace`/`job`/`instance`/`queue` variables, `$__rate_interval` in
every rate, and a unit and a description on every panel.

Several exporters may watch one broker (one per worker pod in the Kubernetes sidecar
layout), so every queue, task and worker query first takes `max by (...)` across the
selected exporter instances (de-duplication) and only then sums or ratios.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: `python grafana/generate.py`
    sys.path.insert(0, str(ROOT))

from alerts.generate import duration_seconds, runbook_url  # noqa: E402
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
ACTIVE_TOO_LONG = ALERTS["CeleryTaskActiveTooLong"]
#: The stuck-job limit per queue: max(floor, factor x the quantile runtime over lookback).
ACTIVE_FLOOR = duration_seconds(ACTIVE_TOO_LONG["threshold"])
ACTIVE_FACTOR = ACTIVE_TOO_LONG["factor"]
ACTIVE_QUANTILE = ACTIVE_TOO_LONG["quantile"]
ACTIVE_LOOKBACK = ACTIVE_TOO_LONG["lookback"]
ACTIVE_RULE = (
    f"CeleryTaskActiveTooLong fires when it stays above max({ACTIVE_TOO_LONG['threshold']}, "
    f"{ACTIVE_FACTOR} x the queue's p{ACTIVE_QUANTILE * 100:g} runtime over {ACTIVE_LOOKBACK})"
    f" for {ACTIVE_TOO_LONG['for']}."
)
BACKLOG_TREND_WINDOW = "15m"
#: Fixed windows a query may use besides $__rate_interval/$__range (tests check the list).
FIXED_WINDOWS = (BACKLOG_TREND_WINDOW, ACTIVE_LOOKBACK)
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

#: Firing alerts of the selected job, as annotations (ALERTS carries no instance label for
#: queue alerts, which are de-duplicated across exporters).
ALERTS_ANNOTATION = 'ALERTS{alertstate="firing", namespace=~"$namespace", job="$job"}'

#: Selects the chosen exporter(s); every expression carries it.
TARGET = 'namespace=~"$namespace", job="$job", instance=~"$instance"'
#: The labels of one exporter target (what `up` is reported per).
TARGET_KEY = "namespace, job, instance"
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

#: "No data" in red: an instant stat without a sample means the exporter is not scraped.
NO_DATA_MAPPING = {
    "type": "special",
    "options": {"match": "null+nan", "result": {"text": "No data", "color": "red", "index": 9}},
}
EXPORTER_MAPPINGS = [
    {
        "type": "value",
        "options": {
            "0": {"text": "DOWN", "color": "red", "index": 0},
            "1": {"text": "BROKER DOWN", "color": "red", "index": 1},
            "2": {"text": "OK", "color": "green", "index": 2},
        },
    }
]
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
    """(failed + lost) / (succeeded + failed + lost): a lost execution failed too; no sample
    (rather than NaN) where nothing finished."""
    return (
        f"{outcome_rate(queue, 'failed|lost', by)}\n/\n"
        f"({outcome_rate(queue, 'succeeded|failed|lost', by)} > 0)"
    )


def scraped(expr: str) -> str:
    """`expr` only while a selected exporter answers its scrapes (`up == 1`).

    An instant stat then shows "No data" as soon as Prometheus fails a scrape, never a
    last value; `or vector(0)` defaults stay behind this gate."""
    return f"({expr})\nand on () (max(up{sel()}) == 1)"


def up_only(series: str) -> str:
    """A per-exporter series kept only for exporters whose last scrape succeeded."""
    return f"({series} and on ({TARGET_KEY}) (up{sel()} == 1))"


def top_over_range(expr: str, rank: str, key: str) -> str:
    """`expr` (a range panel's series, zeros dropped) for the at most 10 `key`s ranked first
    by `rank` at the end of the time range: the same 10 series over the whole range."""
    return f"({expr}) > 0\nand on ({key})\ntopk(10, {rank} > 0)"


def mean_runtime(queue: str, by: str) -> str:
    """Mean runtime (sum / count) by `by`, de-duplicated; no sample while nothing finished."""
    sum_, count = (
        f"sum by ({by}) (max by (queue, task) "
        f"(rate(celery_task_runtime_seconds_{part}{sel(queue)}{RATE})))"
        for part in ("sum", "count")
    )
    return f"{sum_}\n/\n({count} > 0)"


def active_limit(queue: str) -> str:
    """CeleryTaskActiveTooLong's limit per queue: max(floor, factor x quantile runtime)."""
    bucket = f"celery_task_runtime_seconds_bucket{sel(queue)}"
    quantile = (
        f"histogram_quantile({ACTIVE_QUANTILE}, sum by (queue, le) "
        f"(max by (queue, task, le) (rate({bucket}[{ACTIVE_LOOKBACK}]))))"
    )
    return (
        f"({ACTIVE_FACTOR} * {quantile} > {ACTIVE_FLOOR})\n"
        f"or on (queue)\n0 * {active_age(queue)} + {ACTIVE_FLOOR}"
    )


def stuck_queues(queue: str) -> str:
    """How many queues run a job past CeleryTaskActiveTooLong's limit or have a next job
    waiting past CeleryQueueStuck's threshold with consumers (0 when none)."""
    waiting_selector = sel(queue, 'status="waiting"')
    waiting = (
        "max by (queue) (celery_queue_oldest_job_age_seconds"
        f"{waiting_selector}) > {duration_seconds(STUCK_AFTER)}\n"
        f"  and on (queue) max by (queue) (celery_queue_consumers{sel(queue)}) > 0"
    )
    return (
        f"count(\n  {active_age(queue)}\n  > on (queue) ({active_limit(queue)})\n"
        f"  or on (queue)\n  {waiting}\n)\nor vector(0)"
    )


def active_age(queue: str) -> str:
    """How long the longest-running job of each queue has run (0 when none)."""
    return f"max by (queue) (celery_task_oldest_active_age_seconds{sel(queue)})"


def lost_recovered_rate(queue: str, by: str) -> str:
    """Lost executions whose real end arrived later, per second."""
    rate = f"rate(celery_tasks_lost_recovered_total{sel(queue)}{RATE})"
    return f"sum by ({by}) (max by (queue, task) ({rate}))"


def runtime_quantile(q: float, queue: str, by: str) -> str:
    """A quantile of celery_task_runtime_seconds by `by` (tasks summed after de-duplication)."""
    rate = f"rate(celery_task_runtime_seconds_bucket{sel(queue)}{RATE})"
    return (
        f"histogram_quantile({q}, sum by ({by}, le) (max by (queue, task, le) ({rate}))) >= 0"
    )


def wait_quantile(q: float, queue: str) -> str:
    """A quantile of celery_task_queue_wait_seconds by queue."""
    rate = f"rate(celery_task_queue_wait_seconds_bucket{sel(queue)}{RATE})"
    return f"histogram_quantile({q}, max by (queue, le) ({rate})) >= 0"


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
    gate: bool = True,
) -> dict[str, Any]:
    """A single-value panel of instant queries: the value now, never a last value.

    Each query is `scraped()` (no sample while the exporter is not scraped) unless `gate`
    is False (a query on `up` itself); no sample shows "No data" in red."""
    instant = [
        {**t, "expr": scraped(t["expr"]) if gate else t["expr"], "range": False,
         "instant": True}
        for t in targets
    ]
    field_config = _field_config(
        unit,
        thresholds=thresholds or [("green", None)],
        mappings=[*(mappings or []), NO_DATA_MAPPING],
        decimals=decimals,
    )
    field_config["defaults"]["noValue"] = "No data"
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": _with_refs(instant),
        "fieldConfig": field_config,
        "options": {
            "reduceOptions": {"calcs": ["last"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "none",
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


def alert_list() -> dict[str, Any]:
    """Grafana's alert list: the alerts firing or pending for the selected job."""
    return {
        "type": "alertlist",
        "title": "Firing alerts",
        "description": "Alerts firing or pending for the selected job (the Prometheus rules "
        "of alerts/celery-exporter.rules.yml as Grafana sees them), most recent first. The "
        "same firing alerts are annotations (red) on every time series panel; each alert's "
        "runbook_url opens its section of docs/runbook.md.",
        "datasource": DATASOURCE,
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {
            "viewMode": "list",
            "groupMode": "default",
            "groupBy": [],
            "maxItems": 20,
            "sortOrder": 1,
            "dashboardAlerts": False,
            "alertName": "",
            "alertInstanceLabelFilter": '{job="$job"}',
            "folder": "",
            "showInstances": True,
            "stateFilter": {
                "firing": True, "pending": True, "noData": False, "normal": False,
                "error": True,
            },
        },
    }


def with_runbook_links(panel: dict[str, Any]) -> dict[str, Any]:
    """`panel` with a link to the runbook section of every alert its description names."""
    named = [
        name for name in sorted(SETTINGS)
        if re.search(rf"\b{name}\b", panel.get("description", ""))
    ]
    if named:
        panel["links"] = [
            {"title": f"Runbook: {name}", "url": runbook_url(name), "targetBlank": True}
            for name in named
        ]
    return panel


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
            result.append({"id": number, **with_runbook_links(panel)})
        return result


# --------------------------------------------------------------------------- dashboard


def variables(*, multi_queue: bool) -> list[dict[str, Any]]:
    """datasource, namespace, job, instance and queue template variables."""

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
            variable["current"] = {"selected": True, "text": ["All"], "value": ["$__all"]}
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
            "namespace", "Namespace", "label_values(celery_exporter_build_info, namespace)",
            multi=True,
            description="Kubernetes namespace of the exporters (the rules group by namespace, "
            "job, queue); All matches exporters without the label (outside Kubernetes).",
        ),
        query_var(
            "job", "Job", 'label_values(celery_exporter_build_info{namespace=~"$namespace"}, job)',
            multi=False,
            description="The scrape job of the exporter (one Celery deployment).",
        ),
        query_var(
            "instance", "Exporter",
            'label_values(celery_exporter_build_info{namespace=~"$namespace", job="$job"}, '
            "instance)", multi=True,
            description="Exporter instances; several watching one broker are de-duplicated.",
        ),
        query_var(
            "queue", "Queue",
            f"label_values(celery_queue_jobs{{{TARGET}}}, queue)",
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
                },
                {
                    "datasource": DATASOURCE,
                    "enable": True,
                    "hide": False,
                    "iconColor": "red",
                    "name": "Firing alerts",
                    "expr": ALERTS_ANNOTATION,
                    "step": "1m",
                    "titleFormat": "{{alertname}}",
                    "textFormat": "{{severity}} {{queue}} {{instance}}",
                    "tagKeys": "alertname,severity,queue",
                    "useValueForTime": False,
                },
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
        f"/d/{QUEUE_UID}/celery-queue?${{datasource:queryparam}}&${{namespace:queryparam}}"
        "&var-job=${job}"
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
    ), 8, 8)
    layout.add(timeseries(
        "Oldest running job",
        f"How long the longest-running job of each queue has been running, for {scope} "
        "(celery_task_oldest_active_age_seconds; 0 when none runs), and, dashed, the queue's "
        f"stuck-job limit. {ACTIVE_RULE} Which job it is: the Jobs API, "
        "`GET /v1/jobs/queues/{queue}?status=active` (processedOn).",
        [
            target(active_age(queue), "{{queue}} running"),
            target(active_limit(queue), "{{queue}} limit"),
        ],
        SECONDS,
        thresholds=[("green", None), ("red", ACTIVE_FLOOR)],
        overrides=[{
            "matcher": {"id": "byRegexp", "options": ".* limit"},
            "properties": [
                {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
            ],
        }],
    ), 8, 8)
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
    ), 8, 8)


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
        "(celery_task_runtime_seconds), and the mean (sum / count), which does not depend "
        "on the buckets. Percentiles are interpolated inside the histogram buckets (0.01 s "
        "to 3600 s by default): beyond the last finite bucket they read as its bound. Empty "
        "while nothing finishes.",
        [
            *(
                target(runtime_quantile(q, queue, "queue"), f"{{{{queue}}}} p{int(q * 100)}")
                for q in (0.5, 0.95, 0.99)
            ),
            target(mean_runtime(queue, "queue"), "{{queue}} mean"),
        ],
        SECONDS,
    ), 12, 8)


def overview() -> dict[str, Any]:
    """celery-overview.json: every queue at a glance, workers and the exporter's health."""
    queue = 'queue=~"$queue"'
    layout = Layout()
    layout.row("Now")
    # First line: is the exporter scraped and the broker read? is anything stuck? is
    # anything failing? is the backlog growing? are workers down?
    layout.add(stat(
        "Exporter and broker",
        "OK: every selected exporter is scraped (up) and its last broker read succeeded "
        "(celery_exporter_up). DOWN: Prometheus cannot scrape an exporter "
        "(CeleryExporterDown); BROKER DOWN: its broker read fails (CeleryBrokerUnreachable); "
        "No data: no exporter target at all (CeleryExporterAbsent). While an exporter is "
        "DOWN the other stats of this row show No data, never its last values.",
        [target(
            f"min(\n  up{sel()} + on ({TARGET_KEY}) celery_exporter_up{sel()}\n"
            f"  or on ({TARGET_KEY}) up{sel()}\n)"
        )],
        COUNT, thresholds=[("red", None), ("green", 2)], mappings=EXPORTER_MAPPINGS,
        gate=False,
    ), 4, 4)
    layout.add(stat(
        "Stuck queues",
        "Queues with a job running longer than its limit, max("
        f"{ACTIVE_TOO_LONG['threshold']}, {ACTIVE_FACTOR} x the queue's "
        f"p{ACTIVE_QUANTILE * 100:g} runtime over {ACTIVE_LOOKBACK}) "
        "(celery_task_oldest_active_age_seconds; CeleryTaskActiveTooLong once it lasts "
        f"{ACTIVE_TOO_LONG['for']}), or whose next job has waited over {STUCK_AFTER} despite "
        "consumers (CeleryQueueStuck). See Oldest running job and Oldest job age.",
        [target(stuck_queues(queue))], COUNT, thresholds=[("green", None), ("red", 1)],
    ), 4, 4)
    layout.add(stat(
        "Failure ratio",
        "(failed + lost) / (succeeded + failed + lost) task executions over the rate "
        "interval, selected queues; a lost execution counts as a failure; 0 while nothing "
        f"finished. {FAILURE_RATIO_ALERT}",
        [target(f"{failure_ratio(queue, by='')}\nor vector(0)")], RATIO,
        thresholds=FAILURE_RATIO_STEPS,
    ), 4, 4)
    layout.add(stat(
        "Backlog", "Jobs waiting to start (waiting + paused) in the selected queues. "
        f"CeleryQueueBacklogHigh fires above {BACKLOG_HIGH} jobs in a queue.",
        [target(backlog(queue, by=""))], COUNT,
        thresholds=[("green", None), ("orange", BACKLOG_HIGH)],
    ), 4, 4)
    layout.add(stat(
        "Backlog trend",
        f"How fast the backlog grows, in jobs per hour (deriv over {BACKLOG_TREND_WINDOW}); "
        "above 0 the workers do not keep up (CeleryQueueBacklogGrowing alerts on the trend).",
        [target(f"3600 * {backlog(queue, by='', window=f'[{BACKLOG_TREND_WINDOW}]')}")],
        JOBS_PER_HOUR, thresholds=[("green", None), ("orange", 1), ("red", BACKLOG_HIGH)],
        decimals=0,
    ), 4, 4)
    layout.add(stat(
        "Workers down",
        "Known workers that went silent or shut down (reported for 1 h after last seen; "
        "CeleryWorkerDown).",
        [target("count(max by (worker) (celery_worker_up" + sel() + ") == 0)\nor vector(0)")],
        COUNT, thresholds=[("green", None), ("red", 1)],
    ), 4, 4)
    # Second line: what is there now.
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
        "Paused", "Jobs waiting in queues that no live worker consumes: they will not run "
        "(CeleryQueueNoConsumers).",
        [target(f"sum({jobs(queue, 'paused')})")], COUNT,
        thresholds=[("green", None), ("red", 1)],
    ), 4, 4)
    layout.add(stat(
        "Throughput", "Task executions that succeeded per second (celery_tasks_total); 0 "
        "while nothing succeeds.",
        [target(f"{outcome_rate(queue, 'succeeded', by='')}\nor vector(0)")], JOBS_PER_SECOND,
    ), 4, 4)
    layout.add(stat(
        "Workers up", "Workers that answered inspect or sent a recent heartbeat.",
        [target("sum(max by (worker) (celery_worker_up" + sel() + "))\nor vector(0)")], COUNT,
    ), 4, 4)
    layout.add(stat(
        "Snapshot age",
        "Seconds since the oldest selected exporter last read the broker successfully "
        "(time() - celery_exporter_last_successful_refresh_timestamp_seconds). "
        f"CeleryExporterSnapshotStale fires above {STALE_AFTER} s.",
        [target("max(time() - celery_exporter_last_successful_refresh_timestamp_seconds"
                + sel() + ")")],
        SECONDS, thresholds=[("green", None), ("orange", STALE_AFTER / 2), ("red", STALE_AFTER)],
    ), 4, 4)
    layout.add(_status_table(queue), 16, 8)
    layout.add(alert_list(), 8, 8)

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
        "Failed or lost executions per second of the 10 queue/task pairs that failed most "
        "over the dashboard's time range (the same 10 throughout; none listed at 0/s). "
        + JOBS_API_NOTE,
        [target(top_over_range(
            outcome_rate(queue, 'failed|lost', 'queue, task'),
            outcome_rate(queue, 'failed|lost', 'queue, task', 'increase',
                         '[$__range] @ end()'),
            "queue, task",
        ), "{{queue}} {{task}}")],
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
    ), 8, 8)
    layout.add(stat(
        "Folded task names",
        "Distinct task names reported as task=\"other\" because --max-task-names was reached "
        "(celery_exporter_folded_task_names). Above 0, raise the limit or expect 'other'.",
        [target("max(celery_exporter_folded_task_names" + sel() + ")")], COUNT,
        thresholds=[("green", None), ("orange", 1)],
    ), 4, 8)
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
    ), 24, 6)
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
        "Succeeded executions per second of the 10 tasks of the queue that succeeded most "
        "over the dashboard's time range (the same 10 throughout).",
        [target(top_over_range(
            outcome_rate(queue, 'succeeded', 'task'),
            outcome_rate(queue, 'succeeded', 'task', 'increase', '[$__range] @ end()'),
            "task",
        ), "{{task}}")],
        JOBS_PER_SECOND,
    ), 12, 8)
    layout.add(timeseries(
        "Top failing tasks",
        "Failed or lost executions per second of the 10 tasks of the queue that failed most "
        "over the dashboard's time range (the same 10 throughout; none listed at 0/s). "
        + JOBS_API_NOTE,
        [target(top_over_range(
            outcome_rate(queue, 'failed|lost', 'task'),
            outcome_rate(queue, 'failed|lost', 'task', 'increase', '[$__range] @ end()'),
            "task",
        ), "{{task}}")],
        JOBS_PER_SECOND,
    ), 12, 8)
    layout.add(table(
        "Top failing tasks over the time range",
        "Failed and lost executions per task over the dashboard's time range, most first, "
        "with how many of them were lost and the task's retries. " + LOST_NOTE + " "
        + JOBS_API_NOTE,
        [
            target("topk(10, "
                   f"{outcome_rate(queue, 'failed|lost', 'task', 'increase', '[$__range]')})"
                   " > 0",
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
        "95th percentile runtime of the 10 tasks of the queue slowest over the dashboard's "
        "time range (the same 10 throughout).",
        [target(top_over_range(
            runtime_quantile(0.95, queue, "task"),
            "histogram_quantile(0.95, sum by (task, le) (max by (queue, task, le) "
            f"(increase(celery_task_runtime_seconds_bucket{sel(queue)}[$__range] @ end()))))",
            "task",
        ), "{{task}}")],
        SECONDS,
    ), 12, 8)
    layout.add(timeseries(
        "Mean runtime by task",
        "Average runtime per task of the queue (runtime sum / count over the rate interval); "
        "no point while a task finishes nothing.",
        [target(mean_runtime(queue, "task"), "{{task}}")],
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
