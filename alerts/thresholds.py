"""The alerts' thresholds, windows, `for:` durations and severities: the numbers to tune.

Both generators import this module: ``alerts/generate.py`` builds the rules from it, and
``grafana/generate.py`` draws the same thresholds on the dashboards, so the two never
disagree. Change a number here, then run both generators.
"""

from __future__ import annotations

from typing import Any

#: Per alert: `threshold` is the value the expression compares with; the other keys are
#: windows used inside the expression.
SETTINGS: dict[str, dict[str, Any]] = {
    "CeleryExporterDown": {"for": "5m", "severity": "critical"},
    "CeleryExporterAbsent": {"for": "10m", "severity": "critical"},
    "CeleryBrokerUnreachable": {"for": "2m", "severity": "critical"},
    "CeleryExporterSnapshotStale": {"threshold": 60, "for": "2m", "severity": "warning"},
    "CeleryExporterSourceDown": {"for": "5m", "severity": "warning"},
    "CeleryExporterDroppingData": {
        "threshold": 0, "window": "15m", "for": "5m", "severity": "info",
    },
    "CeleryExporterEventStreamInterrupted": {
        "threshold": 0, "window": "15m", "for": "0m", "severity": "info",
    },
    "CeleryQueueBacklogHigh": {"threshold": 1000, "for": "10m", "severity": "warning"},
    "CeleryQueueBacklogGrowing": {
        "threshold": 1000, "window": "30m", "horizon": "1h", "for": "15m", "severity": "warning",
    },
    "CeleryQueueNoConsumers": {"threshold": 0, "for": "5m", "severity": "critical"},
    "CeleryQueuePausedTooLong": {"lookback": "1d", "for": "30m", "severity": "warning"},
    "CeleryQueueStuck": {"threshold": "10m", "for": "5m", "severity": "warning"},
    "CeleryQueueWaitTimeHigh": {
        "threshold": 300, "quantile": 0.95, "window": "10m", "for": "15m", "severity": "warning",
    },
    "CeleryTaskFailureRateHigh": {
        "threshold": 0.1, "window": "5m", "for": "10m", "severity": "warning",
    },
    "CeleryTaskFailureRatioHigh": {
        "threshold": 0.05, "min_jobs": 20, "window": "15m", "for": "10m", "severity": "warning",
    },
    # A job runs longer than max(threshold, factor x the queue's `quantile` runtime over
    # `lookback`) (celery_task_oldest_active_age_seconds): `threshold` is the floor.
    "CeleryTaskActiveTooLong": {
        "threshold": "5m", "factor": 3, "quantile": 0.95, "lookback": "1d",
        "for": "10m", "severity": "warning",
    },
    "CeleryNewExceptionType": {
        "window": "10m", "lookback": "1h", "for": "0m", "severity": "warning",
    },
    "CeleryTasksLost": {"threshold": 0, "window": "10m", "for": "0m", "severity": "warning"},
    "CeleryWorkerDown": {"for": "5m", "severity": "warning"},
    "CeleryWorkersSaturated": {"threshold": 0.9, "for": "15m", "severity": "warning"},
}
