"""/metrics latency alone, then with N open consoles polling, against one real sidecar.

A console polls `/v1/jobs/generation` every 2 s and, when the generation changed,
fetches what its queues view shows (`/v1/jobs/queues` and `/v1/jobs/workers`), as
exporter/web/ui/console.js does. Meanwhile one client asks for /metrics back to back;
its latencies are compared with the same client alone, in the same run.
With `--web-workers N` above 1, consoles whose connection lands on a process that does
not run the refresher are answered through it (forwarded over its Unix socket); the
consoles' own latencies show that cost.
"""

from __future__ import annotations

import argparse
import threading
import time

import httpx

from testkit.celery_worker import CeleryWorker, load_app
from testkit.redis_server import RedisServer
from testkit.report import percentile, table
from testkit.sidecar import Sidecar

KEY = "bench-console-key-0123456789"
POLL_SECONDS = 2.0


def scrape_latencies(base: str, seconds: float) -> list[float]:
    """Milliseconds of each GET /metrics, one after another, for `seconds`."""
    latencies: list[float] = []
    with httpx.Client(base_url=base, timeout=10) as client:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            started = time.perf_counter()
            client.get("/metrics").raise_for_status()
            latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def console(base: str, stop: threading.Event, latencies: list[float]) -> None:
    """One open console: poll the generation, fetch the queues view when it changed."""
    headers = {"X-API-KEY": KEY}
    seen = None

    def get(path: str) -> httpx.Response:
        started = time.perf_counter()
        answer = client.get(path)
        answer.raise_for_status()
        latencies.append((time.perf_counter() - started) * 1000)
        return answer

    with httpx.Client(base_url=base, timeout=10, headers=headers) as client:
        while not stop.is_set():
            generation = get("/v1/jobs/generation").json()["generation"]
            if generation != seen:
                seen = generation
                get("/v1/jobs/queues")
                get("/v1/jobs/workers")
            stop.wait(POLL_SECONDS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--consoles", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--web-workers", type=int, default=1,
                        help="the sidecar's --web-workers (above 1, consoles are forwarded)")
    args = parser.parse_args()
    with RedisServer() as server, CeleryWorker(server.url, queues=["bench"]) as worker:
        worker.wait_ready()
        app = load_app(server.url)
        for index in range(50):
            app.send_task("tests.add", args=(index, 1), queue="bench")
        with Sidecar(server.url, "--api-key", KEY, "--queue", "bench", "--refresh-interval",
                     "1", "--web-workers", str(args.web_workers)) as sidecar:
            sidecar.wait_ready()
            sidecar.wait_refreshes(2)
            alone = scrape_latencies(sidecar.base_url, args.seconds)
            stop = threading.Event()
            console_latencies: list[float] = []
            threads = [
                threading.Thread(target=console,
                                 args=(sidecar.base_url, stop, console_latencies))
                for _ in range(args.consoles)
            ]
            for thread in threads:
                thread.start()
            time.sleep(POLL_SECONDS)
            polled = scrape_latencies(sidecar.base_url, args.seconds)
            stop.set()
            for thread in threads:
                thread.join()
    rows = []
    for name, values in (("alone", alone), (f"{args.consoles} consoles", polled)):
        rows.append([name, len(values), f"{percentile(values, 0.50):.2f}",
                     f"{percentile(values, 0.99):.2f}", f"{max(values):.2f}"])
    print(table(["/metrics", "requests", "p50 ms", "p99 ms", "max ms"], rows))
    print(f"console requests meanwhile ({args.web_workers} web worker process(es)): "
          f"{len(console_latencies)}, p50 {percentile(console_latencies, 0.50):.2f} ms, "
          f"p99 {percentile(console_latencies, 0.99):.2f} ms")
    ratio = percentile(polled, 0.99) / percentile(alone, 0.99)
    print(f"p99 with consoles / alone: {ratio:.2f}x")


if __name__ == "__main__":
    main()
