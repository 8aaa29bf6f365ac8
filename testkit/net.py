"""The one free-port helper: every process the kit starts listens on loopback."""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def find_free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])
