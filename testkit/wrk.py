"""The report of `wrk --latency`, parsed."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class WrkReport:
    """The numbers of one `wrk --latency` report."""

    requests_per_second: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    requests: int
    transfer: str
    errors: str  # wrk's error lines, or "none"
    failed: int  # non-2xx/3xx responses plus socket errors


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def wrk_ms(text: str) -> float:
    """A wrk duration (`812.00us`, `1.20ms`, `2.00s`, `1.00m`) in milliseconds."""
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


def parse_wrk(output: str) -> WrkReport:
    """Parse the report of `wrk --latency`."""
    percentiles = dict(re.findall(r"^\s+(\d+)%\s+(\S+)$", output, re.M))
    latency = re.search(r"^\s+Latency\s+\S+\s+\S+\s+(\S+)", output, re.M)
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.M)
    requests = re.search(r"^\s+(\d+) requests in", output, re.M)
    transfer = re.search(r"^Transfer/sec:\s+(\S+)", output, re.M)
    if not ({"50", "90", "99"} <= percentiles.keys() and latency and rps and requests and transfer):
        raise ValueError(f"cannot parse wrk output:\n{output}")
    error_lines = [
        line.strip() for line in output.splitlines()
        if "Socket errors" in line or "Non-2xx" in line
    ]
    failed = sum(int(n) for line in error_lines for n in re.findall(r"\d+", line.split(":", 1)[1]))
    return WrkReport(
        requests_per_second=float(rps.group(1)),
        p50_ms=wrk_ms(percentiles["50"]),
        p90_ms=wrk_ms(percentiles["90"]),
        p99_ms=wrk_ms(percentiles["99"]),
        max_ms=wrk_ms(latency.group(1)),
        requests=int(requests.group(1)),
        transfer=transfer.group(1) + "/s",
        errors="; ".join(error_lines) or "none",
        failed=failed,
    )
