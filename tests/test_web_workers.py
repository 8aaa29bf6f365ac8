"""With --web-workers above 1, every worker process answers the Jobs API and its actions."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx

from testkit.actions import ADMIN, FAST, ActionsClient, write_keys_file
from testkit.exposition import queue_counts
from testkit.procs import children
from testkit.redis_server import RedisServer
from testkit.sidecar import Sidecar
from testkit.wait import wait_until

QUEUE = "shared"
FORWARDED = "through the refresher's owner"


def owner_of(sidecar: Sidecar) -> int:
    """The worker process holding the refresher's lock (from /proc/locks)."""
    workers = children(sidecar.pid)
    inodes = set()
    for worker in workers:
        for fd in Path(f"/proc/{worker}/fd").iterdir():
            target = os.readlink(fd)
            if target.endswith("/refresher.lock"):
                inodes.add(os.stat(fd).st_ino)
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()  # "1: FLOCK ADVISORY WRITE <pid> <maj>:<min>:<inode> 0 EOF"
        if fields[1] == "->":  # a process waiting for a lock, not holding it
            continue
        holder, inode = int(fields[4]), int(fields[5].rsplit(":", 1)[1])
        if fields[1] == "FLOCK" and inode in inodes and holder in workers:
            return holder
    raise AssertionError("no worker holds the refresher's lock")


def fresh(client: ActionsClient, path: str, **params: str) -> httpx.Response:
    """A GET on a new connection, so that any worker process may take it."""
    return client.get(path, **params)


def test_every_worker_process_answers_the_jobs_api_and_its_actions(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    keys = write_keys_file(tmp_path)
    with Sidecar(
        redis_server.url, *FAST, "--web-workers", "3", "--api-keys-file", str(keys),
        "--queue", QUEUE, "--log-level", "debug",
    ) as sidecar:
        sidecar.wait_ready()
        assert wait_until(lambda: len(children(sidecar.pid)) == 3, timeout=30)
        redis_server.client().lpush(QUEUE, b"{}", b"{}")
        sidecar.wait_for(lambda s: queue_counts(s, QUEUE)["paused"] == 2)
        client = ActionsClient(sidecar.base_url, ADMIN)

        pages = [fresh(client, f"/jobs/queues/{QUEUE}", status="paused") for _ in range(40)]
        assert {page.status_code for page in pages} == {200}
        assert {page.json()["counts"]["paused"] for page in pages} == {2}
        assert {len(page.json()["jobs"]) for page in pages} == {2}
        assert sidecar.log_count(FORWARDED) > 0, "no request reached a follower process"

        unauthorised = httpx.get(sidecar.base_url + "/v1/jobs/queues", timeout=10)
        assert unauthorised.status_code == 401  # the owner's authentication, relayed

        # Actions: each on a new connection; the audit log names the key every time.
        for _ in range(3):
            assert client.request("POST", f"/jobs/queues/{QUEUE}/pause").status_code == 202
            assert client.request("POST", f"/jobs/queues/{QUEUE}/resume").status_code == 202
        audit = client.get("/jobs/audit", limit=20).json()["entries"]
        assert [entry["action"] for entry in audit[:6]] == ["resume", "pause"] * 3
        assert {entry["key"] for entry in audit[:6]} == {ADMIN.name}


def test_a_worker_process_takes_over_the_jobs_api_when_the_owner_dies(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    keys = write_keys_file(tmp_path)
    with Sidecar(
        redis_server.url, *FAST, "--web-workers", "2", "--api-keys-file", str(keys),
        "--queue", QUEUE,
    ) as sidecar:
        sidecar.wait_ready()
        client = ActionsClient(sidecar.base_url, ADMIN)
        assert wait_until(lambda: len(children(sidecar.pid)) == 2, timeout=30)
        owner = owner_of(sidecar)
        os.kill(owner, signal.SIGKILL)

        answers: list[httpx.Response] = []

        def served_by_a_new_owner() -> bool:
            answers.append(fresh(client, "/jobs/queues"))
            return answers[-1].status_code == 200 and owner_of(sidecar) != owner

        assert wait_until(served_by_a_new_owner, timeout=30), answers[-1].text
        # Meanwhile: the old owner's socket is gone (FOLLOWER_MESSAGE, with Retry-After),
        # or the new owner has not read the broker yet; never a hang or a 500.
        for answer in answers:
            assert answer.status_code in (200, 503), answer.text
            message = answer.json().get("message", "")
            if answer.status_code == 503 and "runs the refresher" in message:
                assert answer.headers["retry-after"] == "2"
            elif answer.status_code == 503:
                assert message.startswith("no snapshot yet"), message
        assert {fresh(client, "/jobs/queues").status_code for _ in range(20)} == {200}
