"""/metrics latency with and without open consoles polling the sidecar."""
