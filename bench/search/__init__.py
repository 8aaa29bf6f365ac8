"""Search benchmark: job search latency over 60,000 retained jobs."""
