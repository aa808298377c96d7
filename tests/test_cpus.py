"""The thread count comes from the CPUs the process may use and other work leaves free; OpenMP threads spin briefly."""

import os
import subprocess
import sys

from tunecraft.cpus import cgroup_cpu_limit, cpu_times, default_threads, free_cpus, usable_cpus


def test_cgroup_v2_and_v1_quotas(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(tmp_path) == 1.5
    affinity = len(os.sched_getaffinity(0))
    assert usable_cpus(tmp_path) == min(affinity, 2)  # 1.5 CPUs of quota: 2 threads, never more than affinity
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(tmp_path) is None and usable_cpus(tmp_path) == affinity
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(v1) == 0.5 and usable_cpus(v1) == 1  # half a CPU still gets one thread
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")  # v1's "no limit"
    assert cgroup_cpu_limit(v1) is None
    assert cgroup_cpu_limit(tmp_path / "absent") is None


def _env(code: str, **env) -> str:
    environment = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")} | env
    return subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_openmp_threads_spin_briefly_unless_the_user_chose():
    show = "import os; print(os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY'))"
    assert _env(f"import tunecraft; {show}") == "1000 None"
    assert _env(f"import tunecraft; {show}", GOMP_SPINCOUNT="50") == "50 None"
    assert _env(f"import tunecraft; {show}", OMP_WAIT_POLICY="active") == "None active"
    # torch imported first: its OpenMP runtime has already read the environment, so tunecraft says so
    assert _env(f"import torch, tunecraft; {show}; print(tunecraft.cpus.wait_briefly())") == "None None\nFalse"


def _stat(path, rows):
    """A /proc/stat with one line per CPU: (user, idle) jiffies."""
    lines = ["cpu  0 0 0 0 0 0 0 0 0 0"] + [f"cpu{i} {u} 0 0 {idle} 0 0 0 0 0 0" for i, (u, idle) in enumerate(rows)]
    path.write_text("\n".join(lines + ["intr 1 2 3", "ctxt 42"]) + "\n")


def test_cpu_times_read_only_the_cpus_asked_for(tmp_path):
    stat = tmp_path / "stat"
    _stat(stat, [(100, 300), (50, 50), (7, 7)])
    assert cpu_times({0, 1}, stat) == (150, 500)
    assert cpu_times({2}, stat) == (7, 14)
    assert cpu_times({5}, stat) is None and cpu_times({0}, tmp_path / "absent") is None


def test_free_cpus_is_the_idle_share_of_the_affinity_mask(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    cpus = sorted(os.sched_getaffinity(0))
    snapshots = iter([[(10, 10)] * (max(cpus) + 1),
                      # over the interval the first usable CPU was busy the whole time, the others idle
                      [(110, 10) if i == cpus[0] else (10, 110) for i in range(max(cpus) + 1)]])
    monkeypatch.setattr("tunecraft.cpus.time.sleep", lambda s: _stat(stat, next(snapshots)))
    _stat(stat, next(snapshots))
    assert free_cpus(0.0, stat) == len(cpus) - 1


def test_default_threads_leave_the_cores_that_other_work_holds(tmp_path):
    (tmp_path / "cpu.max").write_text("max 100000\n")
    usable = usable_cpus(tmp_path)
    assert default_threads(tmp_path, free=usable - 0.03) == usable  # a quiet machine: every usable CPU
    assert default_threads(tmp_path, free=usable - 1.0) == max(1, usable - 1)  # one busy neighbour
    assert default_threads(tmp_path, free=0.2) == 1  # never fewer than one
    assert default_threads(tmp_path, free=usable + 40) == usable  # idle CPUs beyond the quota do not count
    (tmp_path / "cpu.max").write_text("100000 100000\n")
    assert default_threads(tmp_path, free=30.0) == 1  # a 1-CPU quota on a big idle node: one thread


def test_a_run_uses_the_free_usable_cpus_unless_told(tmp_path, monkeypatch):
    import torch

    from tunecraft.config import build_config
    from tunecraft.train.session import prepare_process

    monkeypatch.setattr("tunecraft.cpus.free_cpus", lambda: float(usable_cpus()))
    before = torch.get_num_threads()
    try:
        prepare_process(build_config({"output_dir": str(tmp_path)}))
        assert torch.get_num_threads() == usable_cpus()
        monkeypatch.setattr("tunecraft.cpus.free_cpus", lambda: 0.4)  # the machine is busy: one thread
        prepare_process(build_config({"output_dir": str(tmp_path)}))
        assert torch.get_num_threads() == 1
        prepare_process(build_config({"output_dir": str(tmp_path), "train": {"num_threads": 1}}))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
