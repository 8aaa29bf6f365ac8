"""Processes as Linux's /proc shows them: children, CPU, memory, liveness, busy cores."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable
from pathlib import Path

PROC = Path("/proc")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after `comm` (which may hold spaces and parentheses).

    Index 0 is the state, 1 the parent pid, 2 the process group, 11 and 12 the user and
    system CPU ticks. Raises OSError when the process is gone.
    """
    return (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()


def children(pid: int) -> list[int]:
    """Pids whose parent is `pid` (for `serve`: its gunicorn worker)."""
    found = []
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int(_stat_fields(int(entry.name))[1]) == pid:
                    found.append(int(entry.name))
    return found


def descendants(pid: int) -> list[int]:
    """Every process below `pid`: its children, theirs, and so on."""
    found: list[int] = []
    for child in children(pid):
        found += [child, *descendants(child)]
    return found


def pid_alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie."""
    try:
        return _stat_fields(pid)[0] != "Z"
    except (OSError, IndexError):
        return False


def process_group_gone(pgid: int) -> bool:
    """True once no live (non-zombie) process is left in process group ``pgid``."""
    for stat in PROC.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended while we looked
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return False
    return True


def process_cpu(pids: Iterable[int]) -> tuple[float, float]:
    """User and system CPU seconds used so far by these processes (gone ones count 0)."""
    user = system = 0
    for pid in pids:
        try:
            fields = _stat_fields(pid)
        except OSError:
            continue
        user, system = user + int(fields[11]), system + int(fields[12])
    return user / CLK_TCK, system / CLK_TCK


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of a process (all its threads)."""
    return sum(process_cpu([pid]))


def _status_kib(pid: int) -> dict[str, int]:
    """The kB figures of /proc/PID/status (VmRSS, VmHWM, ...)."""
    values = {}
    for line in (PROC / str(pid) / "status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if rest.endswith(" kB"):
            values[key] = int(rest.split()[0])
    return values


def memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MB (MiB)."""
    values = _status_kib(pid)
    return values["VmRSS"] / 1024, values["VmHWM"] / 1024


def rss_kib(pid: int) -> int:
    """VmRSS of a process and all its descendants together, in KiB (gone ones count 0)."""
    total = 0
    for member in [pid, *descendants(pid)]:
        with contextlib.suppress(OSError, KeyError):
            total += _status_kib(member)["VmRSS"]
    return total


def core_busy_seconds(cpus: set[int]) -> float:
    """Busy (non-idle) seconds of the given cores since boot, from /proc/stat."""
    busy = 0
    for line in (PROC / "stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            ticks = [int(v) for v in values[:8]]
            busy += sum(ticks) - ticks[3] - ticks[4]
    return busy / CLK_TCK


def wait_quiet(cpus: set[int], *, limit: float = 0.15, timeout: float = 30.0) -> float:
    """Wait (at most `timeout` s) until other processes leave `cpus` mostly idle.

    Returns the busy share of the last 0.5 s window; the machine may be shared.
    """
    deadline = time.monotonic() + timeout
    while True:
        before = core_busy_seconds(cpus)
        time.sleep(0.5)
        busy = (core_busy_seconds(cpus) - before) / (0.5 * max(len(cpus), 1))
        if busy <= limit or time.monotonic() >= deadline:
            return busy


def cpu_split() -> tuple[set[int], set[int]]:
    """(exporter cpus, everything else): the exporter gets the first allowed core alone."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        return set(allowed), set(allowed)
    return {allowed[0]}, set(allowed[1:])
