"""Gunicorn, embedded: one command starts the HTTP server and the sidecar core."""

from __future__ import annotations

import logging
import sys
from typing import Any

from gunicorn.app.base import BaseApplication

from exporter.settings import Settings
from exporter.sharing import build_provider

log = logging.getLogger(__name__)

#: Seconds a thread may hold the GIL while another waits for it (CPython's default: 5 ms).
#: The refresher re-renders the exposition in a thread of the worker that serves HTTP;
#: with 5 ms slices, each request arriving meanwhile waited up to 5 ms for the GIL, and
#: /metrics' p99 at 200 queues x 200 task names doubled when the process was not pinned
#: to a core (bench/scrape).
GIL_SWITCH_INTERVAL = 0.0005


class SidecarApplication(BaseApplication):  # type: ignore[misc]
    """A gunicorn application whose workers serve the Falcon ASGI app (asgi workers)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        super().__init__()

    def load_config(self) -> None:
        settings = self._settings
        host = f"[{settings.listen_host}]" if ":" in settings.listen_host else settings.listen_host
        options: dict[str, Any] = {
            "bind": f"{host}:{settings.listen_port}",
            "workers": settings.web_workers,
            "worker_class": "asgi",
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
        from exporter.auth import KeyRing
        from exporter.web.app import create_app

        sys.setswitchinterval(GIL_SWITCH_INTERVAL)
        settings = self._settings
        provider = build_provider(settings)
        _PROVIDERS.append(provider)
        return create_app(
            provider,
            stale_after=settings.stale_after,
            keys=KeyRing(settings.api_keys) if settings.auth else None,
            metrics_credentials=settings.metrics_credentials,
            jobs_backend=provider.jobs_backend,
            api_max_limit=settings.api_max_limit,
            jobs_threads=settings.web_threads,
        )


_PROVIDERS: list[Any] = []


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
