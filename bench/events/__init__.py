"""Event-stream throughput benchmark of the real exporter process."""
