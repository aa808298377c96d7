"""A `tunecraft serve` process on a free loopback port for the load benchmarks (serve_load.py, generate_load.py),
and the percentile they report."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: str, *options: str, cpus: set[int] | None = None) -> tuple[subprocess.Popen, str]:
    """`tunecraft serve RUN OPTIONS` (pinned to `cpus` when given) once /health answers 200 (up to 2 minutes),
    and its URL."""
    port = free_port()
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    proc = subprocess.Popen([sys.executable, "-m", "tunecraft", "serve", run, "--host", "127.0.0.1", "--port",
                             str(port), *options], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=pin)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    sys.exit(f"tunecraft serve {run} did not start within 2 minutes")


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM: the server drains what it is decoding, then exits."""
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile (nan for no values)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
