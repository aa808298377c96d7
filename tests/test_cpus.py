"""The thread count comes from the CPUs the process may use; OpenMP threads wait passively."""

import os
import subprocess
import sys

from tunecraft.cpus import cgroup_cpu_limit, usable_cpus


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


def test_a_run_uses_the_usable_cpus(tmp_path):
    import torch

    from tunecraft.config import build_config
    from tunecraft.train.session import prepare_process

    before = torch.get_num_threads()
    try:
        prepare_process(build_config({"output_dir": str(tmp_path)}))
        assert torch.get_num_threads() == usable_cpus()
        prepare_process(build_config({"output_dir": str(tmp_path), "train": {"num_threads": 1}}))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
