"""Scrape benchmark: wrk against the real exporter's /metrics at two sizes."""
