"""Jobs API requests answered by the worker process that owns the refresher.

With `--web-workers` above 1, only the owner holds the tracker, the job history and
the actions. It listens on a private Unix socket in the state directory
(`OwnerChannel`); every other worker forwards each Jobs API request there whole
(method, path, query, headers, body) and relays the owner's response unchanged
(`ForwardToOwner`), so authentication, bodies and errors are the same whichever
process a client reached. When the owner cannot be reached (it died and another
worker is taking over), the local app answers, with its 503. When the owner got a
request but did not answer in time, a read falls back the same way, but an action
gets 504: it may have been done, so the client must not simply repeat it.

A frame on the socket is a 4-byte big-endian length and that many bytes; a request is
a JSON head then the body, a response likewise.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
#: An ASGI application (Falcon's App types its arguments more narrowly than ASGI does).
AsgiApp = Callable[[Any, Any, Any], Awaitable[None]]

#: The routes only the owner can answer: the Jobs API, its actions and the console's data.
FORWARDED_PREFIXES = ("/v1/jobs", "/api/v1/jobs")
#: Largest request body forwarded (actions' bodies are a few bytes; see docs/jobs-actions.md).
MAX_REQUEST_BYTES = 1 << 20
#: Largest response accepted from the owner (a page of 100 jobs with bounded fields).
MAX_RESPONSE_BYTES = 256 << 20
#: Longest a forwarded request may take, connect included (a page or an action's broadcast).
FORWARD_TIMEOUT = 60.0
#: Longest connecting to the owner may take before the local 503 answers instead.
CONNECT_TIMEOUT = 2.0
#: Methods that change nothing: one the owner did not answer can fall back to the local 503.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Why an action the owner received but did not answer gets 504, not a retryable 503.
UNANSWERED_ACTION = (
    f"the web worker that runs actions received this request but did not answer within "
    f"{FORWARD_TIMEOUT:.0f} s; it may still have done it: check GET /v1/jobs/audit "
    "before repeating it"
)
_LENGTH = struct.Struct(">I")


def is_forwarded(path: str) -> bool:
    """Whether `path` is answered by the refresher's owner."""
    return any(path == prefix or path.startswith(prefix + "/") for prefix in FORWARDED_PREFIXES)


async def _read_frame(reader: asyncio.StreamReader, limit: int) -> bytes:
    (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
    if length > limit:
        raise ValueError(f"frame of {length} bytes is over the {limit}-byte limit")
    return await reader.readexactly(length)


def _frame(data: bytes) -> bytes:
    return _LENGTH.pack(len(data)) + data


def _head_of(scope: Scope) -> bytes:
    """The parts of an ASGI HTTP scope the owner needs to rebuild it."""
    return orjson.dumps({
        "method": scope["method"],
        "scheme": scope.get("scheme", "http"),
        "path": scope["path"],
        "raw_path": (scope.get("raw_path") or scope["path"].encode()).decode("latin-1"),
        "query_string": scope.get("query_string", b"").decode("latin-1"),
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
        "http_version": scope.get("http_version", "1.1"),
        "client": list(scope["client"]) if scope.get("client") else None,
        "server": list(scope["server"]) if scope.get("server") else None,
    })


def _scope_of(head: dict[str, Any]) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": head["http_version"],
        "method": head["method"],
        "scheme": head["scheme"],
        "path": head["path"],
        "raw_path": head["raw_path"].encode("latin-1"),
        "query_string": head["query_string"].encode("latin-1"),
        "root_path": "",
        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in head["headers"]],
        "client": tuple(head["client"]) if head["client"] else None,
        "server": tuple(head["server"]) if head["server"] else None,
    }


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None past MAX_REQUEST_BYTES."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_REQUEST_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes) -> Receive:
    """A `receive` that gives `body` once, then waits like a client that stays."""
    sent = False
    never = asyncio.Event()

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await never.wait()
        return {"type": "http.disconnect"}

    return receive


async def _collect(app: AsgiApp, scope: Scope, body: bytes) -> tuple[dict[str, Any], bytes]:
    """Run `app` on one request; its response as a JSON-ready head and the body."""
    head: dict[str, Any] = {"status": 500, "headers": []}
    parts: list[bytes] = []

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            head["status"] = message["status"]
            head["headers"] = [
                [k.decode("latin-1"), v.decode("latin-1")] for k, v in message.get("headers", [])
            ]
        elif message["type"] == "http.response.body":
            parts.append(message.get("body", b""))

    await app(scope, _replay(body), send)
    return head, b"".join(parts)


class OwnerChannel:
    """The owner's side: a Unix socket server, in a thread, that runs `app` on each request."""

    def __init__(self, app: AsgiApp, path: Path) -> None:
        self._app = app
        self._path = path
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="owner-channel", daemon=True)

    def start(self) -> None:
        """Listen (replacing a socket a dead owner left) and wait until it does."""
        self._thread.start()
        self._ready.wait(10.0)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._path.unlink(missing_ok=True)
            self._server = loop.run_until_complete(
                asyncio.start_unix_server(self._serve, path=str(self._path))
            )
            # For this sidecar's processes only (the state directory is private too).
            os.chmod(self._path, 0o600)
            log.info("serving the Jobs API to the other worker processes on %s", self._path)
        except OSError as exc:
            log.error("cannot serve the Jobs API to the other worker processes (%s): "
                      "they answer it with 503", exc)
            self._ready.set()
            loop.close()
            return
        self._ready.set()
        loop.run_forever()
        loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = orjson.loads(await _read_frame(reader, MAX_REQUEST_BYTES))
            body = await _read_frame(reader, MAX_REQUEST_BYTES)
            response_head, response_body = await _collect(self._app, _scope_of(head), body)
            writer.write(_frame(orjson.dumps(response_head)) + _frame(response_body))
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, ValueError, KeyError, TypeError) as exc:
            log.warning("a forwarded Jobs API request failed: %s", exc)
        finally:
            writer.close()

    def stop(self) -> None:
        """Stop listening and remove the socket."""
        loop, server = self._loop, self._server
        if loop is not None and server is not None and not loop.is_closed():
            loop.call_soon_threadsafe(server.close)
            loop.call_soon_threadsafe(loop.stop)
        self._path.unlink(missing_ok=True)


class ForwardToOwner:
    """ASGI middleware of the other workers: Jobs API requests go to the owner's socket."""

    def __init__(self, app: AsgiApp, owns: Callable[[], bool], path: Path) -> None:
        self._app = app
        self._owns = owns
        self._path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_forwarded(scope["path"]) or self._owns():
            await self._app(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:
            await _too_large(send)
            return
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(str(self._path)), CONNECT_TIMEOUT
            )
        except (TimeoutError, OSError) as exc:
            log.debug("the refresher's owner is not listening for %s: %s", scope["path"], exc)
            await self._app(scope, _replay(body), send)  # its 503 says why
            return
        try:
            head, response = await asyncio.wait_for(
                _exchange(reader, writer, scope, body), FORWARD_TIMEOUT
            )
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            log.warning("the refresher's owner did not answer %s %s: %s",
                        scope["method"], scope["path"], exc)
            if scope["method"] in SAFE_METHODS:
                await self._app(scope, _replay(body), send)  # a read: its 503 says why
            else:  # the owner got the action and may have done it: say so, do not guess
                await _json_answer(send, 504, UNANSWERED_ACTION)
            return
        log.debug("answered %s %s through the refresher's owner", scope["method"], scope["path"])
        await send({
            "type": "http.response.start", "status": head["status"],
            "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in head["headers"]],
        })
        await send({"type": "http.response.body", "body": response})


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, scope: Scope, body: bytes
) -> tuple[dict[str, Any], bytes]:
    """Send one request to the owner and read its answer: its head, then its body."""
    try:
        writer.write(_frame(_head_of(scope)) + _frame(body))
        await writer.drain()
        head = orjson.loads(await _read_frame(reader, MAX_REQUEST_BYTES))
        return head, await _read_frame(reader, MAX_RESPONSE_BYTES)
    finally:
        writer.close()


async def _too_large(send: Send) -> None:
    await _json_answer(send, 413, f"request body over {MAX_REQUEST_BYTES} bytes")


async def _json_answer(send: Send, status: int, message: str) -> None:
    """An error answered by the middleware itself, shaped like the Jobs API's errors."""
    body = orjson.dumps({"message": message})
    await send({
        "type": "http.response.start", "status": status,
        "headers": [(b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-content-type-options", b"nosniff"), (b"cache-control", b"no-store")],
    })
    await send({"type": "http.response.body", "body": body})
