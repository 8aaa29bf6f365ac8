"""Jobs API benchmark: paging latency and Redis work, memory per retained job."""
