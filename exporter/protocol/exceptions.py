"""The class name of the exception a task failed with, from what its task-failed event says.

Celery's `task-failed` event carries `exception`, the exception's repr
(`ValueError('boom')`), and `traceback`. An error raised in the pool's parent (a
killed child's `WorkerLostError`) arrives as `ExceptionWithTraceback()`: the last
line of the traceback names the real one then.
"""

from __future__ import annotations

import re

UNKNOWN = "unknown"
#: Distinct exception classes with series of their own (--max-exception-types).
DEFAULT_MAX_EXCEPTION_TYPES = 100
WRAPPER = "ExceptionWithTraceback"
_REPR = re.compile(r"^\s*(?:[A-Za-z_]\w*\.)*(?P<type>[A-Za-z_]\w*)\s*\(", re.S)
_RAISED = re.compile(r"^(?:[A-Za-z_]\w*\.)*(?P<type>[A-Za-z_]\w*)(?::|$)")


def exception_type(exception_repr: str | None, traceback: str | None = None) -> str:
    """`ValueError` for `ValueError('boom')`; the real class behind Celery's wrapper."""
    if exception_repr and exception_repr.lstrip().startswith(WRAPPER) and traceback:
        lines = [line for line in traceback.strip().splitlines() if line.strip()]
        if lines and not lines[-1].startswith(" "):
            raised = _RAISED.match(lines[-1].strip())
            if raised is not None:
                return raised.group("type")
    if not exception_repr:
        return UNKNOWN
    found = _REPR.match(exception_repr)
    return found.group("type") if found is not None else UNKNOWN
