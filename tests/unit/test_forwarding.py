"""Jobs API requests forwarded to the refresher's owner over its Unix socket."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import falcon
import falcon.asgi
import orjson
import pytest
from falcon.asgi import Request, Response

from exporter.serving import forwarding
from exporter.serving.forwarding import (
    MAX_REQUEST_BYTES,
    AsgiApp,
    ForwardToOwner,
    OwnerChannel,
    is_forwarded,
)


class Echo:
    """Answers with what it was asked, and which process (app) answered."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def on_get(self, req: Request, resp: Response, **params: str) -> None:
        resp.media = {"by": self.name, "path": req.path, "query": req.query_string,
                      "key": req.get_header("X-Api-Key"), "client": req.remote_addr}
        resp.set_header("X-Answered-By", self.name)

    async def on_post(self, req: Request, resp: Response, **params: str) -> None:
        body = await req.stream.read()
        resp.status = falcon.HTTP_202
        resp.media = {"by": self.name, "body": body.decode()}


def echo_app(name: str) -> AsgiApp:
    app = falcon.asgi.App()
    app.add_sink(Echo(name).on_get, prefix="/")  # type: ignore[arg-type]
    resource = Echo(name)
    app.add_route("/v1/jobs/queues/{queue}/pause", resource)
    app.add_route("/v1/jobs/queues", resource)
    app.add_route("/metrics", resource)
    return app


def call(app: AsgiApp, method: str, path: str, body: bytes = b"",
         query: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """One request through an ASGI app, as gunicorn's worker would make it."""
    sent: list[dict[str, Any]] = []
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": query,
        "root_path": "", "headers": [(b"x-api-key", b"secret-key"), (b"host", b"sidecar")],
        "client": ("10.1.2.3", 5555), "server": ("127.0.0.1", 9813),
    }
    chunks = [body[i:i + 65536] for i in range(0, len(body), 65536)] or [b""]

    async def receive() -> dict[str, Any]:
        chunk = chunks.pop(0) if chunks else b""
        return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    start = sent[0]
    headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, b"".join(m.get("body", b"") for m in sent[1:])


@pytest.fixture
def socket_path(tmp_path: Path) -> Path:
    return tmp_path / "jobs.sock"


@pytest.fixture
def owner(socket_path: Path) -> Iterator[OwnerChannel]:
    channel = OwnerChannel(echo_app("owner"), socket_path)
    channel.start()
    yield channel
    channel.stop()


def test_the_jobs_routes_are_forwarded_and_nothing_else() -> None:
    assert is_forwarded("/v1/jobs/queues") and is_forwarded("/api/v1/jobs/audit")
    assert is_forwarded("/v1/jobs")
    assert not is_forwarded("/metrics") and not is_forwarded("/ui/console.js")
    assert not is_forwarded("/v1/jobsx") and not is_forwarded("/readyz")


def test_a_follower_relays_the_owners_answer_unchanged(
    owner: OwnerChannel, socket_path: Path
) -> None:
    follower = ForwardToOwner(echo_app("follower"), lambda: False, socket_path)
    status, headers, body = call(follower, "GET", "/v1/jobs/queues", query=b"status=failed")
    assert status == 200 and headers["x-answered-by"] == "owner"
    assert orjson.loads(body) == {"by": "owner", "path": "/v1/jobs/queues",
                                  "query": "status=failed", "key": "secret-key",
                                  "client": "10.1.2.3"}


def test_a_forwarded_action_carries_its_body(owner: OwnerChannel, socket_path: Path) -> None:
    follower = ForwardToOwner(echo_app("follower"), lambda: False, socket_path)
    payload = b'{"confirm": "emails"}' + b" " * 200_000  # several receive() chunks
    status, _, body = call(follower, "POST", "/v1/jobs/queues/emails/pause", payload)
    assert status == 202
    assert orjson.loads(body) == {"by": "owner", "body": payload.decode()}


def test_other_routes_and_the_owner_itself_answer_locally(
    owner: OwnerChannel, socket_path: Path
) -> None:
    follower = ForwardToOwner(echo_app("follower"), lambda: False, socket_path)
    assert call(follower, "GET", "/metrics")[1]["x-answered-by"] == "follower"
    itself = ForwardToOwner(echo_app("itself"), lambda: True, socket_path)
    assert call(itself, "GET", "/v1/jobs/queues")[1]["x-answered-by"] == "itself"


def test_without_an_owner_the_local_app_answers_with_the_body_replayed(
    socket_path: Path,
) -> None:
    follower = ForwardToOwner(echo_app("follower"), lambda: False, socket_path)
    status, _, body = call(follower, "POST", "/v1/jobs/queues/emails/pause", b'{"a": 1}')
    assert status == 202
    assert orjson.loads(body) == {"by": "follower", "body": '{"a": 1}'}


def test_a_body_over_the_limit_is_refused_before_forwarding(
    owner: OwnerChannel, socket_path: Path
) -> None:
    follower = ForwardToOwner(echo_app("follower"), lambda: False, socket_path)
    status, headers, body = call(
        follower, "POST", "/v1/jobs/queues/emails/pause", b"x" * (MAX_REQUEST_BYTES + 1)
    )
    assert status == 413 and headers["content-type"] == "application/json"
    assert "over 1048576 bytes" in orjson.loads(body)["message"]


@pytest.fixture
def silent_owner(socket_path: Path) -> Iterator[list[bytes]]:
    """An owner that takes each request and never answers; what it received."""
    received: list[bytes] = []
    done = threading.Event()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(socket_path))
    listener.listen()
    listener.settimeout(0.1)

    def serve() -> None:
        held: list[socket.socket] = []
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            received.append(conn.recv(65536))
            held.append(conn)  # kept open, unanswered
        for conn in held:
            conn.close()

    thread = threading.Thread(target=serve)
    thread.start()
    yield received
    done.set()
    thread.join()
    listener.close()


def test_an_action_the_owner_took_but_did_not_answer_gets_504_not_a_retry(
    silent_owner: list[bytes], socket_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The owner may have done it: 504 naming the audit log, never the follower's 503 that
    invites a repeat. A read it did not answer falls back to the local answer."""
    monkeypatch.setattr(forwarding, "FORWARD_TIMEOUT", 0.3)
    follower = ForwardToOwner(echo_app("follower"), lambda: False, socket_path)
    status, headers, body = call(follower, "POST", "/v1/jobs/queues/emails/pause", b"{}")
    assert b"/v1/jobs/queues/emails/pause" in silent_owner[0]
    assert status == 504 and headers["content-type"] == "application/json"
    assert "may still have done it" in orjson.loads(body)["message"]
    assert "/v1/jobs/audit" in orjson.loads(body)["message"]
    status, headers, _ = call(follower, "GET", "/v1/jobs/queues")
    assert status == 200 and headers["x-answered-by"] == "follower"
    assert len(silent_owner) == 2


def test_a_new_owner_replaces_the_socket_a_dead_one_left(socket_path: Path) -> None:
    socket_path.write_bytes(b"stale")
    channel = OwnerChannel(echo_app("new owner"), socket_path)
    channel.start()
    try:
        assert socket_path.stat().st_mode & 0o077 == 0  # this user's processes only
        follower = ForwardToOwner(echo_app("follower"), lambda: False, socket_path)
        assert call(follower, "GET", "/v1/jobs/queues")[1]["x-answered-by"] == "new owner"
    finally:
        channel.stop()
    assert not socket_path.exists()
