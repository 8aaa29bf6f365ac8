"""The shared kit of the tests (tests/) and the benchmarks (bench/).

Both start the same real processes and read the same things, so they share one copy of
each helper:

* processes: `redis_server.RedisServer` (a private redis-server on a free loopback
  port), `celery_app` (the Celery app and test tasks, `-A testkit.celery_app`),
  `celery_worker.CeleryWorker`, `sidecar.Sidecar` (`celery-jobs-exporter serve`);
* `net.find_free_port`, `wait.wait_until`;
* `procs`: CPU, memory and children of a pid, read from /proc;
* `exposition`: /metrics text parsed into samples;
* `payloads`: the Celery event payloads captured from a real worker (`data/`);
* for the benchmarks: `republish` (new event messages from the captured envelopes, as
  raw PUBLISH commands), `messages.task_message` (a protocol-2 task message), `report`
  (tables, counts such as `1.5M`, nearest-rank percentiles, the revision under test),
  `wrk` (its report, parsed).

Nothing here imports `tests` or `bench`.
"""

from __future__ import annotations

from pathlib import Path

#: The repository's root (the working directory of every process the kit starts).
REPO_ROOT = Path(__file__).resolve().parents[1]
