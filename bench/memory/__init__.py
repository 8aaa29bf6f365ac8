"""Memory benchmark of the real exporter process (RSS versus retained jobs)."""
