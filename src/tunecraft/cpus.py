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
import time
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


def cpu_times(cpus: set[int], stat: Path = Path("/proc/stat")) -> tuple[float, float] | None:
    """(busy, total) jiffies of the given CPUs since boot, from /proc/stat; None where it cannot be read."""
    busy = total = 0.0
    try:
        lines = stat.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
            continue
        values = [float(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
        total += sum(values)
        busy += sum(values) - values[3] - values[4]
    return (busy, total) if total else None


def free_cpus(seconds: float = 0.1, stat: Path = Path("/proc/stat")) -> float | None:
    """How many of this process's CPUs (its affinity mask) sat idle over the next `seconds`, while this thread
    sleeps: the room left by other work on the machine. None where /proc/stat cannot be read."""
    try:
        cpus = os.sched_getaffinity(0)
    except AttributeError:
        return None
    before = cpu_times(cpus, stat)
    time.sleep(seconds)
    after = cpu_times(cpus, stat)
    if before is None or after is None or after[1] <= before[1]:
        return None
    busy = (after[0] - before[0]) / (after[1] - before[1])
    return len(cpus) * (1 - busy)


def default_threads(root: Path = Path("/sys/fs/cgroup"), free: float | None = None) -> int:
    """torch's thread count when the user sets none: the usable CPUs, but no more than other work leaves idle
    (rounded, at least 1). A thread more than there are free cores waits at every parallel region for a core that
    another process holds: with one busy process on 2 cores, 2 threads trained at 1,410 tokens/s and 1 thread at
    1,476 (docs/benchmarks.md, "CPU contention"). `free` is measured when not given (0.1 s); the choice is made
    once, at start, and a run's summary records it ("threads")."""
    usable = usable_cpus(root)
    free = free_cpus() if free is None else free
    return usable if free is None else max(1, min(usable, round(free)))
