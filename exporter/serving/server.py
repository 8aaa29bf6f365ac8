"""Gunicorn, embedded: one command starts the HTTP server and the sidecar core."""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import sys
import time
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.asgi.protocol import ASGIProtocol
from gunicorn.glogging import Logger as GunicornLogger
from gunicorn.workers import gasgi

from exporter.config.settings import Settings
from exporter.serving.sharing import build_provider

log = logging.getLogger(__name__)

#: Seconds a thread may hold the GIL while another waits for it (CPython's default: 5 ms).
#: The refresher re-renders the exposition in a thread of the worker that serves HTTP;
#: with 5 ms slices, each request arriving meanwhile waited up to 5 ms for the GIL, and
#: /metrics' p99 at 200 queues x 200 task names doubled when the process was not pinned
#: to a core (bench/scrape).
GIL_SWITCH_INTERVAL = 0.0005
#: Allocations between two collections of the youngest generation (CPython: 700). The
#: event stream allocates a few objects per event and almost none are cyclic garbage;
#: at 700, collections ran hundreds of times a second at 40,000 events/s (820 ms of CPU
#: in 10 s, pauses up to 147 ms) and /metrics' p99 at 30,000 events/s was 34-64 ms;
#: with this and the start-up heap frozen, 15-24 ms (bench/events). Cyclic garbage
#: waits for at most this many allocations.
GC_THRESHOLD = (100_000, 50, 100)


class SidecarApplication(BaseApplication):  # type: ignore[misc]
    """A gunicorn application whose workers serve the Falcon ASGI app (asgi workers)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.http_header_timeout = settings.http_header_timeout  # read by SidecarWorker
        super().__init__()

    def load_config(self) -> None:
        settings = self._settings
        host = f"[{settings.listen_host}]" if ":" in settings.listen_host else settings.listen_host
        options: dict[str, Any] = {
            "bind": f"{host}:{settings.listen_port}",
            "workers": settings.web_workers,
            "worker_class": SidecarWorker,  # gunicorn's asgi worker, see SidecarProtocol
            "worker_connections": settings.max_connections,
            "logger_class": SidecarLogger,
            "asgi_loop": "uvloop",
            "timeout": 30,
            "graceful_timeout": 10,
            "keepalive": 15,
            "accesslog": None,
            "errorlog": "-",
            "loglevel": settings.log_level,
            "proc_name": "celery-jobs-exporter",
            "worker_exit": _worker_exit,
        }
        if "control_socket_disable" in self.cfg.settings:
            options["control_socket_disable"] = True  # gunicorn ≥ 24: no admin socket
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        """Runs in each gunicorn worker after fork: build the provider, then the app."""
        from exporter.config.auth import KeyRing
        from exporter.web.app import create_app

        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        settings = self._settings
        provider = build_provider(settings)
        _PROVIDERS.append(provider)
        app = create_app(
            provider,
            stale_after=settings.stale_after,
            keys=KeyRing(settings.api_keys) if settings.auth else None,
            metrics_credentials=settings.metrics_credentials,
            jobs_backend=provider.jobs_backend,
            actions_backend=provider.actions_backend,
            read_only=settings.read_only,
            api_max_limit=settings.api_max_limit,
            jobs_threads=settings.web_threads,
        )
        served = provider.serve_jobs(app)
        # What exists now (modules, the app, the configuration) lives as long as the
        # process: frozen, no collection walks it again.
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLD)
        return served


_PROVIDERS: list[Any] = []

#: The Server header gunicorn adds to every response (`Server: gunicorn/asgi`).
_SERVER_HEADER = re.compile(rb"\r\nServer:[^\r\n]*(?=\r\n)", re.I)
#: What a connection beyond --max-connections is answered before it is closed.
_REFUSAL_BODY = b'{"message": "too many connections; try again"}'
_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Content-Length: " + str(len(_REFUSAL_BODY)).encode() + b"\r\n"
    b"Retry-After: 1\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
    b"Connection: close\r\n\r\n" + _REFUSAL_BODY
)
#: At most one warning about refused connections per this many seconds.
REFUSAL_LOG_INTERVAL = 60.0
#: Longest a refused connection stays open, for its client to read the 503.
REFUSAL_LINGER = 1.0


class SidecarProtocol(ASGIProtocol):  # type: ignore[misc]
    """gunicorn's HTTP/1 connection, plus what its asgi worker lacks (gunicorn 27).

    - A deadline for a request's headers (--http-header-timeout): gunicorn arms no
      timer until the first request's headers are complete, and afterwards only its
      keep-alive timer; a client sending partial headers held the connection forever.
      It runs from the connection's start, and on a kept-alive connection from the
      first byte of the next request; the connection is closed when it expires.
    - A cap on connections per worker (gunicorn's `worker_connections`, which the asgi
      worker counts but never enforces): one beyond it is answered 503 and closed.
    - No `Server` header.
    """

    _header_timer: asyncio.TimerHandle | None = None
    _refused = False
    _response_buffer: bytes  # set by gunicorn's _send_response_start

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        worker = self.worker
        if worker.nr_conns > worker.worker_connections:
            worker.connection_refused()
            self._refuse()
            return
        self._arm_header_timer()

    def _refuse(self) -> None:
        """Answer 503 and half-close; what the client sends meanwhile is discarded.

        Closing at once would reset a connection whose request already arrived (the
        client would see a reset, not the 503): the socket is closed when the client
        closes its side, or REFUSAL_LINGER seconds later.
        """
        self._refused = True
        self._safe_write(_REFUSAL)
        try:
            if self.transport.can_write_eof():
                self.transport.write_eof()
        except (OSError, RuntimeError):
            pass
        self.worker.loop.call_later(REFUSAL_LINGER, self._stop_reading_requests)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._header_timer is None and self._current_request is None and not self._closed:
            self._arm_header_timer()  # the first bytes of the next request
        super().data_received(data)

    def _on_headers_complete(self) -> Any:
        self._cancel_header_timer()
        return super()._on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _send_response_start(
        self, status: int, headers: Any, request: Any, close: bool = False
    ) -> None:
        super()._send_response_start(status, headers, request, close)
        self._response_buffer = _SERVER_HEADER.sub(b"", self._response_buffer, count=1)

    def _arm_header_timer(self) -> None:
        if self._callback_parser is None:  # not HTTP/1 (never the case as configured)
            return
        self._header_timer = self.worker.loop.call_later(
            self.worker.header_timeout, self._headers_too_slow
        )

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self._current_request is None and not self._closed:
            self._stop_reading_requests()

    def _stop_reading_requests(self) -> None:
        self._close_transport()
        if self._request_ready is not None:
            self._request_ready.set()  # the connection's task sees it closed and ends


class SidecarWorker(gasgi.ASGIWorker):  # type: ignore[misc]
    """gunicorn's asgi worker serving connections with SidecarProtocol."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = float(getattr(self.app, "http_header_timeout", 10.0))
        self._refused_unlogged = 0
        self._refused_logged_at = -REFUSAL_LOG_INTERVAL

    async def _serve(self) -> None:
        # ASGIWorker._serve builds each connection with `ASGIProtocol(self)`, looked up
        # in its module: point that name at the subclass, in this worker process only.
        gasgi.ASGIProtocol = SidecarProtocol
        await super()._serve()

    def connection_refused(self) -> None:
        """Count a connection refused beyond --max-connections; warn once a minute."""
        self._refused_unlogged += 1
        now = time.monotonic()
        if now - self._refused_logged_at >= REFUSAL_LOG_INTERVAL:
            log.warning(
                "refused %d connection(s): this worker process already had %d open "
                "(--max-connections)", self._refused_unlogged, self.worker_connections,
            )
            self._refused_unlogged, self._refused_logged_at = 0, now


class SidecarLogger(GunicornLogger):  # type: ignore[misc]
    """gunicorn's logger, writing through the root handler: one format, secrets redacted."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for handler in list(self.error_log.handlers):
            self.error_log.removeHandler(handler)
        self.error_log.propagate = True


def _worker_exit(server: Any, worker: Any) -> None:
    for provider in _PROVIDERS:
        provider.close()


def serve(settings: Settings) -> None:
    """Run the sidecar until interrupted."""
    if not settings.auth:
        log.warning("authentication is OFF (--no-auth): anyone can read the Jobs API")
    elif not settings.api_keys:
        log.warning("no API key configured: the Jobs API refuses every request "
                    "(use --api-key or --api-keys-file)")
    SidecarApplication(settings).run()
