"""How both parts of bench/jobs call the Jobs API: the key, its header, the page size."""

KEY = "bench-jobs-api-key-0123456789abcdef"
HEADERS = {"X-API-KEY": KEY}
LIMIT = 100
