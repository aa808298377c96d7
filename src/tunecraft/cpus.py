"""How many CPUs this process may really use, and how its OpenMP threads wait.

Torch sizes its thread pool from the machine, not from what a container or a taskset grants, and OpenMP
threads spin while they wait for each other. On a shared or quota-limited machine both make a run collapse:
on 2 cores with one other busy process, a MiniLM training step fell from ~1,500 to 166 tokens/s with 2 spinning
threads (docs/benchmarks.md, "CPU contention"). Written by hand: neither torch nor accelerate reads the cgroup
quota or sets the wait policy."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

WAIT_POLICY = "OMP_WAIT_POLICY"


def wait_passively() -> bool:
    """Make OpenMP threads sleep instead of spinning while they wait (unless the user chose a policy). The
    runtime reads this once, when torch loads it: so it takes effect only if torch is not imported yet.
    Returns whether the passive policy is in force for this process."""
    if "torch" not in sys.modules:
        os.environ.setdefault(WAIT_POLICY, "PASSIVE")
    return os.environ.get(WAIT_POLICY, "").upper() == "PASSIVE"


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
