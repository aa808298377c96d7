"""How many CPUs this process may really use, and how its OpenMP threads wait.

Torch sizes its thread pool from the machine, not from what a container or a taskset grants, and OpenMP
threads spin while they wait for each other. On a shared or quota-limited machine both make a run collapse:
on 2 cores with one other busy process, a MiniLM training step fell from 2,627 to 801 tokens/s with 2 spinning
threads (docs/benchmarks.md, "CPU contention"). Written by hand: neither torch nor accelerate reads the cgroup
quota or sets the wait policy."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

WAIT_POLICY = "OMP_WAIT_POLICY"
SPIN_COUNT = "GOMP_SPINCOUNT"
SHORT_SPIN = "1000"
"""How long (in spin iterations) an idle OpenMP thread of torch's runtime (GNU libgomp) spins before it sleeps:
its default, 300,000, lets a waiting thread take a core another process needs. Measured on 2 cores, one other busy
process (docs/benchmarks.md): a MiniLM training step 801 → 1,410 tokens/s; one-text serving 36 → 56 requests/s,
with quiet serving at 110 requests/s where a fully passive wait (no spin) fell from 122 to 87."""


def wait_briefly() -> bool:
    """Make OpenMP threads spin only briefly before they sleep while they wait (unless the user chose a wait
    policy or spin count). The runtime reads this once, when torch loads it: so it takes effect only if torch
    is not imported yet. Returns whether the short spin is in force for this process."""
    if "torch" not in sys.modules and WAIT_POLICY not in os.environ:
        os.environ.setdefault(SPIN_COUNT, SHORT_SPIN)
    return os.environ.get(SPIN_COUNT) == SHORT_SPIN and WAIT_POLICY not in os.environ


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (2.5 = 250 ms of CPU time per 100 ms), or None when
    there is none. cgroup v2 (`cpu.max`: "quota period" or "max period"), else v1 (`cpu.cfs_quota_us`)."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


def usable_cpus(root: Path = Path("/sys/fs/cgroup")) -> int:
    """The CPUs this process may run on (its affinity mask) capped by its cgroup quota (rounded up), at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit(root)
    if limit is not None:
        cpus = min(cpus, math.ceil(limit))
    return max(1, cpus)
