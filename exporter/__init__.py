"""celery-jobs-exporter: Prometheus metrics and a Jobs API for Celery queues on Redis."""

__version__ = "0.1.0"
