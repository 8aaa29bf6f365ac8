"""Prometheus alert rules of celery-jobs-exporter: thresholds and the rules generator."""
